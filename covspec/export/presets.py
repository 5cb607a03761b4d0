"""Device presets: what a bundle for one kind of device should be (precision, ONNX Runtime providers, TensorRT
build settings, sequence limits), each with the reasons for its choices. ``docs/device-presets.md`` explains them
at length; ``covspec export --device NAME`` and ``covspec quantize`` take their defaults from here.

Called "device profiles" before ``covspec profile`` (latency and energy profiling) took the word. What is written
to disk kept its old names so existing bundles still load: the manifest's ``device_profile`` section and
``tensorrt.device_profile`` key, and the CLI flag ``--device``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from covspec.errors import ConfigError


@dataclass(frozen=True)
class TensorRTSettings:
    """How ``covspec.export.tensorrt`` builds engines for a device."""

    fp16: bool  # TensorRT 10 builder flag (TensorRT >= 11 builds strongly typed: precision comes from the ONNX)
    int8: bool  # likewise; int8 needs a QDQ (``int8_qdq``) bundle, TensorRT's implicit calibration is not used
    workspace_mib: int  # scratch memory a layer may take while building and running
    builder_optimization_level: int  # 0..5; 3 is TensorRT's default, higher builds longer for rarely faster tactics
    dla_core: int | None = None  # None: GPU only; an index puts supported layers on that DLA (with GPU fallback)
    timing_cache: bool = True  # keep tactic timings beside the engines so a rebuild takes seconds


@dataclass(frozen=True)
class DevicePreset:
    name: str
    precision: str  # bundle precision: fp32 | fp16 | int8 | int8_qdq | int4
    providers: tuple[str, ...]  # ONNX Runtime execution providers, most preferred first
    tensorrt: TensorRTSettings | None  # None: no TensorRT on such devices
    max_prompt_tokens: int  # longest prompt (image tokens included) the prefill engine accepts
    max_context_tokens: int  # longest KV cache (prompt + generated) the decode engine accepts
    max_step_tokens: int  # most tokens one decode call feeds (a correction plus a re-fed draft: K + 1)
    threads: int | None  # intra-op threads for ONNX Runtime; None: its default (all cores)
    reasons: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_ORIN_REASONS = (
    "Orin's Ampere GPU (sm_87) runs fp16 on tensor cores at about twice its fp32 rate, and a drafter step is "
    "memory-bound, so halving weight bytes roughly halves it; fp16 needs no calibration and keeps acceptance at "
    "fp32's. int8 (a calibrated int8_qdq bundle) is the next step when a measured AAL allows it. TensorRT first, "
    "CUDA next, CPU last, so ONNX Runtime falls back op by op. 1 GiB workspace fits the 8 GB Orin Nano beside "
    "the OS and camera; optimization level 3 (TensorRT's default) because higher levels multiply build time on "
    "the device for little. DLA off: the DLA runs convolutions, not the attention, dynamic-shape MatMul and "
    "softmax of a transformer, so nearly every layer would fall back to the GPU with copies between them (Orin "
    "Nano has none)."
)
_XAVIER_REASONS = (
    "Xavier's Volta GPU (sm_72) has fp16 tensor cores; int8 runs but Volta's int8 tensor-core support is narrower "
    "than Ampere's, so fp16. Xavier's last JetPack is 5.1 (TensorRT 8.5), older than the TensorRT 10 / 11 this "
    "toolkit is written against: the flag-based build path is the one that applies and it is untested there. "
    "512 MiB workspace and shorter limits for the 8 GB / 16 GB modules of the NX and AGX. DLA off for the same "
    "reason as on Orin."
)
_ARM_REASONS = (
    "Phones, Raspberry Pi-class boards and Jetsons without a usable GPU: a drafter step on a CPU is bound by memory "
    "bandwidth, so the fewest weight bytes win: int4 weight-only (MatMulNBits, block 32), a quarter of fp32's weight "
    "bytes. The bundle keeps MatMulNBits at accuracy_level 0 (fp32 arithmetic on dequantized blocks); ONNX Runtime's "
    "NEON int8 dot-product kernels run only at accuracy_level 4, which is not set (it changes the numerics; not "
    "measured). No calibration needed. CPU provider only; 4 threads suit the big cores of "
    "common big.LITTLE chips (more threads land on little cores and slow every step)."
)
_X86_REASONS = (
    "x86 laptops and desktops acting as the device: dynamic int8 (MatMulInteger) has mature VNNI / AVX2 kernels in "
    "ONNX Runtime and keeps acceptance closer to fp32 than int4, with no calibration set to carry. CPU provider "
    "only; ONNX Runtime's default thread count (the physical cores)."
)

PRESETS: dict[str, DevicePreset] = {
    "jetson-orin": DevicePreset(
        name="jetson-orin",
        precision="fp16",
        providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        tensorrt=TensorRTSettings(fp16=True, int8=False, workspace_mib=1024, builder_optimization_level=3),
        max_prompt_tokens=1024,
        max_context_tokens=2048,
        max_step_tokens=9,
        threads=None,
        reasons=_ORIN_REASONS,
    ),
    "jetson-xavier": DevicePreset(
        name="jetson-xavier",
        precision="fp16",
        providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        tensorrt=TensorRTSettings(fp16=True, int8=False, workspace_mib=512, builder_optimization_level=3),
        max_prompt_tokens=768,
        max_context_tokens=1024,
        max_step_tokens=9,
        threads=None,
        reasons=_XAVIER_REASONS,
    ),
    "arm64-cpu": DevicePreset(
        name="arm64-cpu",
        precision="int4",
        providers=("CPUExecutionProvider",),
        tensorrt=None,
        max_prompt_tokens=1024,
        max_context_tokens=2048,
        max_step_tokens=9,
        threads=4,
        reasons=_ARM_REASONS,
    ),
    "x86-cpu": DevicePreset(
        name="x86-cpu",
        precision="int8",
        providers=("CPUExecutionProvider",),
        tensorrt=None,
        max_prompt_tokens=2048,
        max_context_tokens=4096,
        max_step_tokens=9,
        threads=None,
        reasons=_X86_REASONS,
    ),
}


def get_preset(name: str | DevicePreset) -> DevicePreset:
    """The preset called ``name`` (a ``DevicePreset`` passes through)."""
    if isinstance(name, DevicePreset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown device preset {name!r}; choose one of {', '.join(PRESETS)}") from None


__all__ = ["PRESETS", "DevicePreset", "TensorRTSettings", "get_preset"]
