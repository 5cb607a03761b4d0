"""The quantization schemes a bundle can be converted to: one table, the single source of their defaults.

A scheme says which manifest precision it produces, which file-name suffix its graphs take (the ONNX community's:
``_int8``, ``_int8_qdq``, ``_q4``, ``_fp16``) and which graph roles it rewrites. Roles it leaves alone are copied
unchanged and keep their fp32 file. Why these roles:

- ``int8`` (dynamic) and ``int4`` (weight-only): the decoder and the vision encoder hold the MatMul weights that
  make a drafter step slow and a bundle big; ``embed_tokens`` is one Gather over the vocabulary, often the largest
  single table of a small drafter, so it is stored int8 (Gather + DequantizeLinear) or int4 (GatherBlockQuantized):
  a lookup gains no speed, but the file shrinks 4x / 8x.
- ``int8_qdq`` (static, what TensorRT consumes): the decoder and the vision encoder with calibrated activations;
  ``embed_tokens`` stays fp32 because a lookup has no activation to calibrate and TensorRT runs it as a plain Gather.
- ``fp16``: every graph, since halving every weight is free of calibration and fp32 inputs/outputs keep the engine's
  contract unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("vision_encoder", "embed_tokens", "decoder")
PRECISIONS = ("int8", "int4", "fp16")  # what a user asks for; static int8 is "int8" with calibration


@dataclass(frozen=True)
class Scheme:
    """One way to rewrite a bundle's graphs."""

    name: str  # manifest "precision"
    suffix: str  # appended to a graph file's stem
    roles: tuple[str, ...]  # graph roles rewritten; the others are copied as they are
    weight_only: bool
    block_size: int | None = None
    symmetric: bool = True
    calibrated: bool = False
    description: str = ""

    def file_name(self, fp32_name: str) -> str:
        """``decoder_model_merged.onnx`` -> ``decoder_model_merged_q4.onnx``."""
        stem = fp32_name[: -len(".onnx")] if fp32_name.endswith(".onnx") else fp32_name
        return f"{stem}{self.suffix}.onnx"


SCHEMES: dict[str, Scheme] = {
    "int8": Scheme(
        "int8",
        "_int8",
        ("vision_encoder", "embed_tokens", "decoder"),
        weight_only=False,
        description="dynamic int8: int8 weights per tensor (MatMul/Gemm -> MatMulInteger, activations quantized at "
        "run time by DynamicQuantizeLinear); embeddings int8 (Gather + DequantizeLinear)",
    ),
    "int8_qdq": Scheme(
        "int8_qdq",
        "_int8_qdq",
        ("vision_encoder", "decoder"),
        weight_only=False,
        calibrated=True,
        description="static int8 in QDQ form: per-channel symmetric int8 weights, symmetric int8 activations "
        "calibrated (MinMax) on recorded engine inputs; QuantizeLinear/DequantizeLinear pairs TensorRT consumes",
    ),
    "int4": Scheme(
        "int4",
        "_q4",
        ("vision_encoder", "embed_tokens", "decoder"),
        weight_only=True,
        block_size=32,
        description="weight-only int4: MatMul -> MatMulNBits (block 32, symmetric), embeddings -> "
        "GatherBlockQuantized (block 32 along the hidden axis)",
    ),
    "fp16": Scheme(
        "fp16",
        "_fp16",
        ROLES,
        weight_only=True,
        symmetric=False,
        description="fp16 weights and arithmetic, fp32 graph inputs and outputs (Cast at the edges)",
    ),
}


def scheme_for(precision: str, *, static: bool = False) -> Scheme:
    """The scheme for a user's ``precision`` (``int8`` + ``static`` -> ``int8_qdq``; ``int8_qdq`` itself, as a
    device preset names it, is accepted too)."""
    if precision == "int8_qdq":
        return SCHEMES["int8_qdq"]
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if static and precision != "int8":
        raise ValueError(f"static (calibrated) quantization exists for int8 only, not {precision}")
    return SCHEMES["int8_qdq" if static else precision]


__all__ = ["PRECISIONS", "ROLES", "SCHEMES", "Scheme", "scheme_for"]
