"""The PyTorch drafter engine: a Hugging Face checkpoint through ``covspec.models``."""

from __future__ import annotations

from typing import Any

from covspec.models import load_model
from covspec.models.base import ModelFingerprint, ModelSequence


class TorchDrafterEngine:
    def __init__(self, path_or_id: str, *, dtype: str = "auto", device: str = "cpu") -> None:
        self._model = load_model(path_or_id, dtype=dtype, device=device)
        self.name = f"torch:{path_or_id}"

    @property
    def fingerprint(self) -> ModelFingerprint:
        return self._model.fingerprint

    @property
    def accepts_images(self) -> bool:
        return self._model.accepts_images

    def start(self, image: Any | None, prompt: str) -> ModelSequence:
        return self._model.start(image if self._model.accepts_images else None, prompt)

    def decode(self, tokens: list[int]) -> str:
        return self._model.decode(tokens)
