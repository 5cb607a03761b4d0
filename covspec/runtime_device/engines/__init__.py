"""Drafter engines. Each is imported lazily so a device without torch can still use the others."""

from __future__ import annotations

from covspec.runtime_device.engines.base import DrafterEngine


def load_engine(kind: str, path_or_id: str, *, dtype: str = "auto") -> DrafterEngine:
    if kind == "torch":
        from covspec.runtime_device.engines.torch_engine import TorchDrafterEngine

        return TorchDrafterEngine(path_or_id, dtype=dtype)
    raise ValueError(f"unknown drafter engine {kind!r} (available: torch)")


__all__ = ["DrafterEngine", "load_engine"]
