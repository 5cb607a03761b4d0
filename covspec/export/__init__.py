"""ONNX export and its validation, TensorRT engine build, bundle manifests written (``covspec.bundle`` reads them).

Importing this package loads neither torch nor onnx: ``export_bundle`` and ``validate_bundle`` are resolved on first
use.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"export_bundle": "covspec.export.onnx_export", "validate_bundle": "covspec.export.validate"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = ["export_bundle", "validate_bundle"]
