"""Drafter engines. Each is imported lazily so a device without torch can still use the others."""

from __future__ import annotations

from pathlib import Path

from covspec.runtime_device.engines.base import DrafterEngine

ENGINE_KINDS = ("torch", "onnxruntime", "tensorrt")


def load_engine(
    kind: str,
    path_or_id: str | Path,
    *,
    dtype: str = "auto",
    ep: str = "cpu",
    threads: int | None = None,
    verify: bool = True,
) -> DrafterEngine:
    """``torch``: a checkpoint (folder or Hub id) in ``dtype``. ``onnxruntime``: a bundle folder from
    ``covspec export`` on execution provider ``ep`` (cpu, cuda, tensorrt, auto); ``dtype`` is ignored there (the
    bundle's precision is fixed at export). ``tensorrt``: the bundle's native TensorRT engines (``covspec export
    --tensorrt``) on the first CUDA GPU. ``threads``: the CPU pool of torch (process-wide) or ONNX Runtime (intra-op);
    None keeps the library's own default (``covspec.cpus.default_threads`` gives one derived from this process's
    CPUs); TensorRT ignores it."""
    if kind == "torch":
        from covspec.runtime_device.engines.torch_engine import TorchDrafterEngine

        return TorchDrafterEngine(str(path_or_id), dtype=dtype, threads=threads)
    if kind == "onnxruntime":
        from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

        return OnnxDrafterEngine(path_or_id, ep=ep, threads=threads, verify=verify)
    if kind == "tensorrt":
        from covspec.runtime_device.engines.tensorrt_engine import TensorRTDrafterEngine

        return TensorRTDrafterEngine(path_or_id, verify=verify)
    raise ValueError(f"unknown drafter engine {kind!r} (available: {', '.join(ENGINE_KINDS)})")


__all__ = ["ENGINE_KINDS", "DrafterEngine", "load_engine"]
