"""What the device loop needs from a drafter engine; engines hide their library (torch, onnxruntime, tensorrt)."""

from __future__ import annotations

from typing import Any, Protocol

from covspec.models.base import ModelFingerprint, ModelSequence
from covspec.models.vocabulary import Vocabulary
from covspec.reduce import TokenReduction


class DrafterEngine(Protocol):
    """A drafter: prefill a prompt (with the image, if the drafter sees images) and step through tokens."""

    name: str

    @property
    def fingerprint(self) -> ModelFingerprint: ...

    @property
    def accepts_images(self) -> bool: ...

    @property
    def vocabulary(self) -> Vocabulary: ...

    def start(self, image: Any | None, prompt: str, reduction: TokenReduction | None = None) -> ModelSequence:
        """Prefill ``prompt`` (and ``image``, if the drafter sees images), reading only the visual tokens
        ``reduction`` keeps (all of them without one)."""
        ...

    def decode(self, tokens: list[int]) -> str: ...
