"""ONNX export, TensorRT engine build, bundle manifest and validation.

Importing this package loads neither torch nor onnx: ``covspec.export.bundle`` is stdlib + numpy, and
``export_bundle`` is resolved on first use.
"""

from __future__ import annotations

from typing import Any

from covspec.export.bundle import BUNDLE_FORMAT, MANIFEST_NAME, Bundle, Manifest, load_bundle

_LAZY = {"export_bundle": "covspec.export.onnx_export", "validate_bundle": "covspec.export.validate"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = ["BUNDLE_FORMAT", "MANIFEST_NAME", "Bundle", "Manifest", "export_bundle", "load_bundle", "validate_bundle"]
