"""What this machine offers TensorRT: the installed version, the GPU and, on a Jetson, the JetPack release.

A TensorRT plan runs only under the version and on the GPU it was built with, so both the engine build (which records
the platform) and the engine (which checks it) read it from here. ``tensorrt`` is imported lazily: this module imports
on machines without it, and says what to install when asked for it.
"""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from covspec.bundle.jetson import RELEASES, jetpack_for_l4t, parse_l4t_release
from covspec.errors import EngineUnavailableError

NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")


def install_hint(*, jetson: bool | None = None) -> str:
    """How to get TensorRT's Python bindings on this kind of machine."""
    jetson = is_jetson() if jetson is None else jetson
    if jetson:
        return (
            "on a Jetson, TensorRT comes with JetPack: `sudo apt install python3-libnvinfer python3-libnvinfer-dev`, "
            "then use the system Python 3 or a venv made with --system-site-packages. On JetPack 7 (Ubuntu 24.04, "
            "the SBSA stack) PyPI's `pip install tensorrt-cu13` also installs; on JetPack 5 / 6 it does not. "
            "See docs/jetson.md"
        )
    return (
        "on an x86-64 (or SBSA arm64) GPU server: `pip install tensorrt-cu12` (CUDA 12 drivers) or "
        "`pip install tensorrt-cu13` (CUDA 13), plus a CUDA build of torch for the device buffers; see docs/jetson.md"
    )


def is_jetson() -> bool:
    return NV_TEGRA_RELEASE.exists()


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or EngineUnavailableError saying how to install it."""
    try:
        import tensorrt  # type: ignore[import-not-found]
    except ImportError as exc:
        raise EngineUnavailableError(f"TensorRT's Python module is not installed ({exc}); {install_hint()}") from exc
    return tensorrt


def trt_major(version: str) -> int:
    return int(version.split(".")[0])


def _dpkg_version(package: str) -> str | None:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def jetson_release() -> tuple[str | None, str | None]:
    """(Jetson Linux release, JetPack release) of this machine; (None, None) off a Jetson."""
    l4t = parse_l4t_release(NV_TEGRA_RELEASE.read_text()) if NV_TEGRA_RELEASE.exists() else None
    if l4t is None:
        core = _dpkg_version("nvidia-l4t-core")  # e.g. "36.4.3-20250107174145"
        l4t = core.split("-")[0] if core else None
    jetpack = jetpack_for_l4t(l4t)
    if jetpack is None:  # an L4T missing from the table: the meta-package's version, if installed
        jetpack_pkg = _dpkg_version("nvidia-jetpack")  # e.g. "6.2+b77"
        jetpack = jetpack_pkg.split("+")[0].split("-")[0] if jetpack_pkg else None
    return l4t, jetpack


def cuda_device(index: int = 0) -> tuple[str, str]:
    """(GPU / SoC name, compute capability "8.7") of CUDA device ``index``, through torch or cuda-python."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(index)
            return torch.cuda.get_device_name(index), f"{major}.{minor}"
    except ImportError:
        pass
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]

        err, props = cudart.cudaGetDeviceProperties(index)
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return name.rstrip("\x00"), f"{props.major}.{props.minor}"
    except ImportError:
        pass
    raise EngineUnavailableError(
        "no CUDA GPU is visible (neither a CUDA build of torch nor cuda-python found one); TensorRT engines need "
        "an NVIDIA GPU with its driver. " + install_hint()
    )


@dataclass(frozen=True)
class PlatformInfo:
    """What a TensorRT plan is tied to."""

    tensorrt_version: str
    device_name: str
    compute_capability: str
    jetpack: str | None = None
    l4t: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_platform(trt: Any | None = None, device: int = 0) -> PlatformInfo:
    trt = trt if trt is not None else import_tensorrt()
    name, capability = cuda_device(device)
    l4t, jetpack = jetson_release()
    return PlatformInfo(trt.__version__, name, capability, jetpack, l4t)


__all__ = [
    "RELEASES",
    "NV_TEGRA_RELEASE",
    "PlatformInfo",
    "cuda_device",
    "detect_platform",
    "import_tensorrt",
    "install_hint",
    "is_jetson",
    "jetpack_for_l4t",
    "jetson_release",
    "parse_l4t_release",
    "trt_major",
]
