"""Adapters over Hugging Face models (one module per family in ``families``: its adapter and its tiny checkpoint),
loading, and the ``tiny`` checkpoint factory.

Importing this package (or ``covspec.models.base``) loads neither torch nor transformers; the names below are
resolved on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from covspec.models.base import LoadedModel, ModelFingerprint, ModelSequence

if TYPE_CHECKING:  # pragma: no cover
    from covspec.models.common import tokenizer_hash
    from covspec.models.loading import load_model
    from covspec.models.tiny import (
        TINY_ARCHS,
        TINY_SIZES,
        build_tiny,
        build_tiny_text_drafter,
    )

_LAZY = {
    "load_model": "covspec.models.loading",
    "tokenizer_hash": "covspec.models.common",
    "build_tiny": "covspec.models.tiny",
    "build_tiny_text_drafter": "covspec.models.tiny",
    "TINY_ARCHS": "covspec.models.tiny",
    "TINY_SIZES": "covspec.models.tiny",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "TINY_ARCHS",
    "TINY_SIZES",
    "LoadedModel",
    "ModelFingerprint",
    "ModelSequence",
    "build_tiny",
    "build_tiny_text_drafter",
    "load_model",
    "tokenizer_hash",
]
