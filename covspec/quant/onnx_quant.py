"""Per-file quantizers over ``onnxruntime.quantization``: one ONNX graph in, one quantized graph out.

They know nothing of bundles (``covspec.quant.bundle`` decides which graph gets which scheme). Graphs over 2 GB
(protobuf's limit) are written with their weights in a ``<file>_data`` external-data file beside them.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EXTERNAL_DATA_BYTES = 1_800_000_000  # above this a graph's weights go to an external-data file
WEIGHT_OPS = ("MatMul", "Gemm")


def graph_bytes(path: Path | str) -> int:
    """Bytes of a graph file plus the external-data files it references (``<name>_data`` / ``<name>.data``)."""
    path = Path(path)
    total = path.stat().st_size
    for extra in (path.with_name(path.name + "_data"), path.with_name(path.name + ".data")):
        if extra.exists():
            total += extra.stat().st_size
    return total


def _external(path: Path | str) -> bool:
    return graph_bytes(path) > EXTERNAL_DATA_BYTES


def save_model(model: Any, dst: Path | str) -> Path:
    """Write ``model`` (an ``onnx.ModelProto``), moving its weights to ``<dst>_data`` when over protobuf's limit."""
    import onnx

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() > EXTERNAL_DATA_BYTES or _has_external_data(model):
        onnx.save_model(
            model, dst, save_as_external_data=True, all_tensors_to_one_file=True, location=dst.name + "_data"
        )
    else:
        onnx.save_model(model, dst)
    return dst


def _has_external_data(model: Any) -> bool:
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in model.graph.initializer)


def op_counts(path: Path | str) -> collections.Counter[str]:
    """How many nodes of each op type the graph at ``path`` has (weights not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return collections.Counter(node.op_type for node in model.graph.node)


def constant_weight_nodes(model: Any, op_types: Iterable[str] = WEIGHT_OPS) -> list[str]:
    """Names of ``op_types`` nodes whose second input is a weight (an initializer or a Constant's output): the
    nodes weight quantization can rewrite; an activation x activation MatMul (attention scores) is left out."""
    constants = {init.name for init in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    wanted = set(op_types)
    return [n.name for n in model.graph.node if n.op_type in wanted and len(n.input) > 1 and n.input[1] in constants]


def quantize_int8_dynamic(src: Path | str, dst: Path | str, *, op_types: Iterable[str] = WEIGHT_OPS) -> Path:
    """Dynamic int8 (``_int8``): int8 weights (QInt8, per tensor); MatMul/Gemm become DynamicQuantizeLinear +
    MatMulInteger, so activations are quantized at run time and no calibration is needed. ``op_types`` may add
    ``Gather`` (embedding tables: int8 table + DequantizeLinear)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        op_types_to_quantize=list(op_types),
        weight_type=QuantType.QInt8,
        use_external_data_format=_external(src),
        extra_options={"MatMulConstBOnly": True},
    )
    return Path(dst)


def quantize_int8_qdq(
    src: Path | str,
    dst: Path | str,
    reader: Any,
    *,
    per_channel: bool = True,
    op_types: Iterable[str] = ("MatMul", "Gemm", "Conv"),
) -> Path:
    """Static int8 in QDQ form (``_int8_qdq``), the form TensorRT's strongly typed builder consumes: symmetric int8
    weights (per output channel when ``per_channel``) and symmetric int8 activations (zero point 0, as TensorRT
    requires) whose ranges come from ``reader`` (an ``onnxruntime.quantization.CalibrationDataReader``, MinMax).
    Only MatMuls with a constant weight are quantized; attention's activation x activation products stay float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(src),
        str(dst),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(op_types),
        per_channel=per_channel,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        use_external_data_format=_external(src),
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "MatMulConstBOnly": True},
    )
    return Path(dst)


def quantize_int4(
    src: Path | str,
    dst: Path | str,
    *,
    block_size: int = 32,
    symmetric: bool = True,
    embeddings: bool = False,
    accuracy_level: int | None = None,
) -> Path:
    """Weight-only int4 (``_q4``): each constant-weight MatMul becomes MatMulNBits (``block_size`` weights share one
    scale along the input axis, ``symmetric``: no zero points). With ``embeddings`` the Gathers over a weight table
    become GatherBlockQuantized instead (blocks along the hidden axis). ``accuracy_level`` is MatMulNBits'
    (None/0: fp32 arithmetic; 4: int8 arithmetic, faster on CPUs with int8 dot products)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    op_types = ("Gather",) if embeddings else ("MatMul",)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(src)),
        bits=4,
        block_size=block_size,
        is_symmetric=symmetric,
        accuracy_level=accuracy_level,
        op_types_to_quantize=op_types,
        quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    with np.errstate(divide="ignore", invalid="ignore"):  # all-zero blocks: scale 0, handled by the quantizer
        quantizer.process()
    return save_model(quantizer.model.model, dst)


def convert_fp16(src: Path | str, dst: Path | str) -> Path:
    """fp16 (``_fp16``): weights and arithmetic in fp16, graph inputs and outputs kept fp32 (Casts at the edges),
    so an engine feeds it exactly as the fp32 graph. Ops ONNX Runtime lacks fp16 kernels for stay fp32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=_external(src))
    return save_model(converted, dst)


__all__ = [
    "constant_weight_nodes",
    "convert_fp16",
    "graph_bytes",
    "op_counts",
    "quantize_int4",
    "quantize_int8_dynamic",
    "quantize_int8_qdq",
    "save_model",
]
