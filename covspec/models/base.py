"""The one interface every model family implements.

A ``LoadedModel`` holds weights, tokenizer and processor (shared by many generations); a ``ModelSequence`` holds
one generation's KV cache. Both the edge verifier and the device's torch engine use exactly this, so the two sides
render prompts and count positions the same way.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from covspec.models.vocabulary import Vocabulary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFingerprint:
    """What a peer checks before pairing: same tokenizer, same vocabulary, same special tokens."""

    name: str
    family: str
    vocab_size: int  # width of the logits rows; every valid token id is < vocab_size
    tokenizer_hash: str  # sha256 over the token->id map and the special tokens
    special_tokens: dict[str, str] = field(default_factory=dict)
    eos_token_ids: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "vocab_size": self.vocab_size,
            "tokenizer_hash": self.tokenizer_hash,
            "special_tokens": dict(self.special_tokens),
            "eos_token_ids": list(self.eos_token_ids),
        }


class ModelSequence(abc.ABC):
    """One generation's state: the prompt prefilled, then tokens appended or rolled back."""

    @property
    @abc.abstractmethod
    def prompt_length(self) -> int:
        """Positions taken by the rendered prompt (image tokens included)."""

    @property
    @abc.abstractmethod
    def length(self) -> int:
        """Positions currently in the KV cache (prompt + tokens fed by ``extend``)."""

    @property
    @abc.abstractmethod
    def prefill_logits(self) -> np.ndarray:
        """[vocab_size] logits for the first generated position, from the prefill."""

    @abc.abstractmethod
    def extend(self, tokens: Sequence[int]) -> np.ndarray:
        """Feed ``tokens`` in one forward pass; returns [len(tokens), vocab_size] logits (row i predicts the
        token after tokens[i])."""

    @abc.abstractmethod
    def crop(self, length: int) -> None:
        """Roll the KV cache back to ``length`` positions (prompt_length <= length <= self.length)."""

    @abc.abstractmethod
    def kv_bytes(self) -> int:
        """Bytes the KV cache holds now."""

    @property
    def image_tokens(self) -> int:
        """Visual token positions in the prompt (0 for a text-only model)."""
        return 0

    @property
    def batch_key(self) -> object | None:
        """Sequences whose keys are equal (and not None) can be extended in one forward by ``extend_group``."""
        return None

    @classmethod
    def extend_group(cls, requests: Sequence[tuple[ModelSequence, Sequence[int]]]) -> list[np.ndarray]:
        """``extend`` of each (sequence, tokens) in one forward, the sequences sharing one batch key; when it
        raises, every sequence is as it was."""
        raise NotImplementedError(f"{cls.__name__} extends one sequence at a time")

    @property
    def prefill_stages(self) -> dict[str, float]:
        """Seconds the prefill spent per stage, where the engine times them (``preprocess``: processor and
        tokenizer; ``vision``: the vision encoder; ``reduce``: visual token reduction; ``decoder``: the decoder's
        prefill forward); empty where it does not."""
        return {}


def extend_together(requests: Sequence[tuple[ModelSequence, Sequence[int]]]) -> list[np.ndarray | Exception]:
    """``extend`` of each (sequence, tokens), in order: sequences sharing a batch key in one forward, the rest one by
    one. Each request gets its logits or its own exception: when a group's forward fails, its members run one by
    one, so a bad request fails alone and the others are served."""
    groups: dict[object, list[int]] = {}
    for index, (sequence, _) in enumerate(requests):
        key = sequence.batch_key
        groups.setdefault(key if key is not None else ("alone", index), []).append(index)
    out: list[np.ndarray | Exception] = [None] * len(requests)  # type: ignore[list-item]
    for indices in groups.values():
        members = [requests[i] for i in indices]
        results: list[np.ndarray | Exception] | None = None
        if len(members) > 1:
            try:
                results = list(type(members[0][0]).extend_group(members))
            except ValueError as exc:  # a request's own fault (a token outside the vocabulary): found alone below
                log.debug("a batched forward of %d sequences was refused (%s); one by one", len(members), exc)
            except Exception:  # not expected: say so, and still serve each request alone
                log.warning("a batched forward of %d sequences failed; one by one", len(members), exc_info=True)
        if results is None:
            results = [_extend_alone(sequence, tokens) for sequence, tokens in members]
        for i, result in zip(indices, results, strict=True):
            out[i] = result
    return out


def _extend_alone(sequence: ModelSequence, tokens: Sequence[int]) -> np.ndarray | Exception:
    try:
        return sequence.extend(tokens)
    except Exception as exc:  # this request's own failure: its job gets it, the others go on
        return exc


class StageClock:
    """Seconds between laps, by stage name (a prefill's ``prefill_stages``)."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + now - self._last
        self._last = now


def check_token_ids(tokens: Sequence[int], vocab_size: int) -> list[int]:
    """``tokens`` as ints, each checked against the vocabulary (a drafter must never feed an id its model lacks)."""
    ids = [int(t) for t in tokens]
    for t in ids:
        if not 0 <= t < vocab_size:
            raise ValueError(f"token id {t} outside the vocabulary [0, {vocab_size})")
    return ids


class TokenSequence(ModelSequence):
    """The bookkeeping every engine's sequence shares: the ids in the cache, the prompt's length (never rolled back),
    the prefill row and the image-token count. Subclasses hold the cache and run the forwards."""

    def __init__(self, prompt_ids: Sequence[int], prefill_logits: np.ndarray, image_tokens: int) -> None:
        self._ids: list[int] = [int(t) for t in prompt_ids]
        self._prompt_length = len(self._ids)
        self._prefill_logits = prefill_logits
        self._image_tokens = int(image_tokens)

    @property
    def prompt_length(self) -> int:
        return self._prompt_length

    @property
    def length(self) -> int:
        return len(self._ids)

    @property
    def prefill_logits(self) -> np.ndarray:
        return self._prefill_logits

    @property
    def image_tokens(self) -> int:
        return self._image_tokens

    @property
    def token_ids(self) -> tuple[int, ...]:
        """Every id in the cache: the rendered prompt, then the tokens fed by ``extend``."""
        return tuple(self._ids)

    def _checked_crop(self, length: int) -> int:
        length = int(length)
        if not self._prompt_length <= length <= len(self._ids):
            raise ValueError(
                f"cannot crop to {length}: allowed range is [{self._prompt_length}, {len(self._ids)}] "
                "(the prompt is never rolled back)"
            )
        return length


class PromptSelection(Protocol):
    keep: np.ndarray  # bool [L]: the prompt positions to prefill
    embeds: np.ndarray  # [L, d]: the embeddings to prefill them with


# (prompt embeddings [L, d], image placeholder positions bool [L], vision features [n, d]) -> what to prefill: how a
# caller above the models (covspec.reduce) has the drafter read fewer visual tokens
SelectPrompt = Callable[[np.ndarray, np.ndarray, np.ndarray], PromptSelection]


@dataclass(frozen=True)
class PromptStart:
    """One ``LoadedModel.start`` call's arguments, for starting several sequences together (``start_many``)."""

    image: Any | None
    prompt: str
    max_prompt_tokens: int | None = None
    select: SelectPrompt | None = None


class LoadedModel(abc.ABC):
    """Weights + tokenizer + processor of one checkpoint."""

    family: str
    name: str

    @property
    @abc.abstractmethod
    def tokenizer(self) -> Any:
        """The Hugging Face tokenizer (for decode and hashing)."""

    @property
    @abc.abstractmethod
    def fingerprint(self) -> ModelFingerprint: ...

    @property
    def vocab_size(self) -> int:
        return self.fingerprint.vocab_size

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self.fingerprint.eos_token_ids

    @property
    @abc.abstractmethod
    def accepts_images(self) -> bool: ...

    @property
    def image_token_id(self) -> int | None:
        """The id of the prompt's image placeholder (None: a text-only model); pairing compares the two sides'."""
        return None

    @property
    @abc.abstractmethod
    def vocabulary(self) -> Vocabulary:
        """What each token id means (``covspec.models.vocabulary``): what pairing compares across tokenizers."""

    @abc.abstractmethod
    def start(
        self,
        image: Any | None,
        prompt: str,
        *,
        max_prompt_tokens: int | None = None,
        select: SelectPrompt | None = None,
    ) -> ModelSequence:
        """Render ``prompt`` (with ``image``, a PIL image, if given) exactly as DESIGN.md §7 says, prefill it, and
        return the new sequence. A rendered prompt longer than ``max_prompt_tokens`` raises ``LimitError``
        (``prompt_too_long``) before the prefill is paid for. ``select`` (a drafter's visual-token reduction) picks
        the positions to prefill; the sequence's ids and positions stay the full prompt's."""

    def start_many(self, requests: Sequence[PromptStart]) -> list[ModelSequence | Exception]:
        """``start`` of each request, in order, each getting its sequence or its own exception; a model that can
        prefills several prompts in one forward. Default: one by one."""
        out: list[ModelSequence | Exception] = []
        for r in requests:
            try:
                out.append(self.start(r.image, r.prompt, max_prompt_tokens=r.max_prompt_tokens, select=r.select))
            except Exception as exc:  # this request's own failure (a prompt too long, a bad image)
                out.append(exc)
        return out

    @property
    def reserved_texts(self) -> frozenset[str]:
        """Strings a prompt may not contain: the tokenizer's special tokens and the processor's placeholders (an
        ``<image>`` typed in the text would make the processor expect a second image, a ``<|im_end|>`` would end the
        user turn). Empty for models without a tokenizer that names any."""
        return frozenset()

    @abc.abstractmethod
    def generate(
        self,
        image: Any | None,
        prompt: str,
        *,
        max_new_tokens: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[int]:
        """The model's own ``generate()`` on the same rendered prompt: the reference output (generated ids only,
        EOS kept if produced)."""

    @abc.abstractmethod
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one position costs (for admission control)."""

    def decode(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens`` without the end-of-sequence tokens."""
        eos = set(self.eos_token_ids)
        return self.tokenizer.decode([t for t in tokens if t not in eos], skip_special_tokens=True)
