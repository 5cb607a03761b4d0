"""What this machine has for covspec (``covspec info``): the first thing to run on a new board.

Every probe says what it found or why not, and everything missing is also listed in plain sentences, so a user on a
Jetson, a GPU server or a laptop sees at once what will and will not work: the libraries and their versions, ONNX
Runtime's execution providers, CUDA as torch sees it, TensorRT, the Jetson's release (covspec.bundle.jetson), the
energy meters (covspec.profile.energy), and optionally an edge's info and a device bundle's manifest.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict
from importlib import metadata, util
from pathlib import Path
from typing import Any

from covspec.bundle.jetson import describe_jetson, max_performance_mode, parse_nvpmodel_conf
from covspec.bundle.loading import load_bundle
from covspec.bundle.manifest import covspec_version
from covspec.bundle.platform import install_hint
from covspec.cpus import usable_cpus
from covspec.errors import CovspecError
from covspec.profile.energy import probe_meters
from covspec.runtime_device.client import EdgeClient

PACKAGES = ("torch", "torchvision", "transformers", "onnxruntime", "onnxruntime-gpu", "tensorrt", "ray",
            "nvidia-ml-py", "zeus")  # fmt: skip
JETSON_FILES = {  # what describe_jetson reads, relative to the filesystem root
    "nv_tegra_release": "etc/nv_tegra_release",
    "device_tree_model": "proc/device-tree/model",
    "dpkg_status": "var/lib/dpkg/status",
}


def system_report(
    root: Path = Path("/"), *, edge: str | None = None, api_key: str | None = None, bundle: Path | None = None
) -> dict[str, Any]:
    """The whole report as JSON-ready data; ``missing`` lists what is not there, one sentence each. ``root`` is the
    filesystem the Jetson files and the energy meters are read under (tests point it at a fixture tree)."""
    missing: list[str] = []
    jetson = _jetson(root)
    report: dict[str, Any] = {
        "covspec": covspec_version(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "system": platform.platform(),
        "cpus": len(usable_cpus()),
        "packages": {name: _version(name) for name in PACKAGES},
        "onnxruntime": _onnxruntime(missing),
        "cuda": _cuda(missing),
        "tensorrt": _tensorrt(missing, jetson is not None),
        "jetson": jetson,
        "energy_meters": probe_meters(root),
    }
    if not any(status.startswith("ok") for kind, status in report["energy_meters"].items() if kind != "estimate"):
        missing.append("no energy sensor is readable here: energy can only be estimated (--energy estimate)")
    if edge is not None:
        report["edge"] = _edge(edge, api_key, missing)
    if bundle is not None:
        report["bundle"] = _bundle(bundle, missing)
    report["missing"] = missing
    return report


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _onnxruntime(missing: list[str]) -> dict[str, Any]:
    if util.find_spec("onnxruntime") is None:
        missing.append("onnxruntime is not installed: the device's ONNX Runtime engine cannot run (covspec[device])")
        return {"installed": False}
    import onnxruntime as ort

    providers = list(ort.get_available_providers())
    if "CUDAExecutionProvider" not in providers:
        missing.append("onnxruntime has no CUDA provider: drafters run on its CPU provider")
    # a provider in this list is compiled in, not proven to work: scripts/gpu_check.sh runs a real CUDA inference
    return {"installed": True, "version": ort.__version__, "device": ort.get_device(), "providers": providers}


def _cuda(missing: list[str]) -> dict[str, Any]:
    if util.find_spec("torch") is None:
        missing.append("torch is not installed: no edge target, no torch drafter (covspec[models])")
        return {"torch": False}
    import torch

    available = bool(torch.cuda.is_available())
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if available else []
    if not available:
        missing.append("no CUDA GPU visible to torch: targets and torch drafters run on the CPU")
    return {"torch": True, "torch_cuda_build": torch.version.cuda, "available": available, "devices": devices}


def _tensorrt(missing: list[str], on_jetson: bool) -> dict[str, Any]:
    if util.find_spec("tensorrt") is None:
        missing.append("TensorRT is not installed: no TensorRT engines (" + install_hint(jetson=on_jetson) + ")")
        return {"installed": False}
    import tensorrt

    return {"installed": True, "version": tensorrt.__version__}


def _jetson(root: Path) -> dict[str, Any] | None:
    texts = {}
    for name, relative in JETSON_FILES.items():
        path = root / relative
        try:
            texts[name] = path.read_text(errors="replace") if path.is_file() else None
        except OSError:
            texts[name] = None
    info = describe_jetson(**texts)
    if info is None:
        return None
    conf = root / "etc/nvpmodel.conf"
    mode = max_performance_mode(parse_nvpmodel_conf(conf.read_text(errors="replace"))) if conf.is_file() else None
    return {**info.to_dict(), "max_power_mode": asdict(mode) if mode is not None else None}


def _edge(url: str, api_key: str | None, missing: list[str]) -> dict[str, Any]:
    client = EdgeClient(url, api_key=api_key)
    try:
        info = client.info()
    except (CovspecError, OSError) as exc:
        missing.append(f"the edge at {url} did not answer /v1/info: {exc}")
        return {"url": url, "reachable": False, "error": str(exc)}
    finally:
        client.close()
    model = info.get("model", {})
    return {
        "url": url,
        "reachable": True,
        "protocol_version": info.get("protocol_version"),
        "model": model.get("name"),
        "family": model.get("family"),
        "vocab_size": model.get("vocab_size"),
        "features": info.get("features", []),
        "batching": info.get("batching"),
    }


def _bundle(path: Path, missing: list[str]) -> dict[str, Any]:
    try:
        loaded = load_bundle(path)
    except (CovspecError, OSError) as exc:
        missing.append(f"the bundle at {path} cannot be used: {exc}")
        return {"path": str(path), "valid": False, "error": str(exc)}
    manifest = loaded.manifest
    return {
        "path": str(path),
        "valid": True,
        "family": manifest.family,
        "precision": manifest.precision,
        "graphs": dict(manifest.graphs),
        "source": manifest.source,
        "tensorrt_engines": manifest.tensorrt is not None,
    }
