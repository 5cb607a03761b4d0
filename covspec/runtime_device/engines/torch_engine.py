"""The PyTorch drafter engine: a Hugging Face checkpoint through ``covspec.models``."""

from __future__ import annotations

import logging
from typing import Any

from covspec.cpus import describe, set_torch_threads
from covspec.models import load_model
from covspec.models.base import ModelFingerprint, ModelSequence
from covspec.models.vocabulary import Vocabulary
from covspec.reduce import TokenReduction

logger = logging.getLogger(__name__)


class TorchDrafterEngine:
    """``threads`` sets torch's intra-op pool before the model loads; torch has one pool per process, so this is
    process-wide. None leaves the process's setting as it is (a host that shares torch keeps its own)."""

    def __init__(
        self, path_or_id: str, *, dtype: str = "auto", device: str = "cpu", threads: int | None = None
    ) -> None:
        if threads is not None:
            set_torch_threads(threads)
            logger.info(describe("device", threads))
        self._model = load_model(path_or_id, dtype=dtype, device=device)
        self.name = f"torch:{path_or_id}"

    @property
    def fingerprint(self) -> ModelFingerprint:
        return self._model.fingerprint

    @property
    def accepts_images(self) -> bool:
        return self._model.accepts_images

    @property
    def image_token_id(self) -> int | None:
        return self._model.image_token_id

    @property
    def vocabulary(self) -> Vocabulary:
        return self._model.vocabulary

    def start(self, image: Any | None, prompt: str, reduction: TokenReduction | None = None) -> ModelSequence:
        select = reduction.select if reduction is not None and reduction.reduces else None
        return self._model.start(image if self._model.accepts_images else None, prompt, select=select)

    def decode(self, tokens: list[int]) -> str:
        return self._model.decode(tokens)
