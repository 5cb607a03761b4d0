"""A bundle's TensorRT engines as data: where the plans live (``BUNDLE/tensorrt/``), what the manifest's
``"tensorrt"`` section records, and the check that they fit this machine before anything is deserialized.

Building them is ``covspec.export.tensorrt``'s; the TensorRT drafter engine only reads them, through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from covspec.bundle.loading import Bundle
from covspec.bundle.platform import PlatformInfo, detect_platform
from covspec.errors import BundleError

TRT_DIR = "tensorrt"
TIMING_CACHE = "timing.cache"
ENGINE_FILES = {
    "vision_encoder": "vision_encoder.plan",
    "embed_tokens": "embed_tokens.plan",
    "decoder_prefill": "decoder_prefill.plan",
    "decoder_decode": "decoder_decode.plan",
}


def check_compatible(recorded: dict[str, Any], platform: PlatformInfo) -> None:
    """Refuse plans built under another TensorRT version, for another GPU or (on a Jetson) under another Jetson Linux
    release (BundleError saying what differs). The JetPack label alone is not compared."""
    problems = []
    if recorded.get("tensorrt_version") != platform.tensorrt_version:
        problems.append(f"TensorRT {recorded.get('tensorrt_version')} (this machine: {platform.tensorrt_version})")
    if recorded.get("compute_capability") != platform.compute_capability:
        problems.append(
            f"compute capability {recorded.get('compute_capability')} (this machine: {platform.compute_capability})"
        )
    if recorded.get("device_name") != platform.device_name:
        problems.append(f"GPU {recorded.get('device_name')!r} (this machine: {platform.device_name!r})")
    # A plan depends on the TensorRT and CUDA libraries and the driver, which on a Jetson come with Jetson Linux (L4T):
    # compare that release, not the JetPack label (the nvidia-jetpack meta-package can move on the same L4T).
    if recorded.get("l4t") and platform.l4t and recorded["l4t"] != platform.l4t:
        problems.append(f"Jetson Linux {recorded['l4t']} (this machine: {platform.l4t})")
    if problems:
        raise BundleError(
            "the bundle's TensorRT engines were built for " + "; ".join(problems) + ". TensorRT plans run only "
            "under the TensorRT version and on the GPU they were built with: rebuild them here with "
            "`covspec export --device PROFILE --tensorrt` (or covspec.export.tensorrt.build_bundle_engines), or run "
            "the bundle's ONNX graphs with the onnxruntime engine"
        )


def engine_paths(bundle: Bundle, *, platform: PlatformInfo | None = None) -> dict[str, Path]:
    """Name -> plan file of a bundle's engines, after checking they fit this machine (BundleError otherwise)."""
    section = bundle.manifest.tensorrt
    if not section:
        raise BundleError(
            f"bundle {bundle.root} has no TensorRT engines; build them with `covspec export --device PROFILE "
            "--tensorrt` on the device"
        )
    check_compatible(section, platform if platform is not None else detect_platform())
    paths = {}
    for name, info in section["engines"].items():
        path = Path(bundle.root) / info["file"]
        if not path.exists():
            raise BundleError(f"bundle {bundle.root} lacks its TensorRT engine {info['file']}")
        paths[name] = path
    return paths


__all__ = ["ENGINE_FILES", "TIMING_CACHE", "TRT_DIR", "check_compatible", "engine_paths"]
