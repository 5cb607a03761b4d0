"""Tiny checkpoints of every family, built once per test session in a temporary folder, and loaded lazily."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    from covspec.models.tiny import (
        TINY_ARCHS,
        TINY_SIZES,
        build_tiny,
        build_tiny_text_drafter,
    )

    root = tmp_path_factory.mktemp("tiny_models")
    for arch in TINY_ARCHS:
        for size in TINY_SIZES:
            build_tiny(arch, size, root / f"{arch}-{size}", seed=0)
    build_tiny_text_drafter(root / "llama-text-drafter", seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_path(tiny_root):
    def path(arch: str, size: str = "target") -> Path:
        return tiny_root / f"{arch}-{size}"

    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_path):
    """``tiny_model(arch, size="target", dtype="float32")``: a LoadedModel, loaded once per session."""
    from covspec.models import load_model

    loaded = {}

    def get(arch: str, size: str = "target", dtype: str = "float32"):
        key = (arch, size, dtype)
        if key not in loaded:
            loaded[key] = load_model(str(tiny_path(arch, size)), dtype=dtype)
        return loaded[key]

    return get
