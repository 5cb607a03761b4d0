"""Timing the drafter's stages from outside the engine: a wrapper around the public engine API.

``TimedEngine`` stands in for any ``DrafterEngine``: its ``start`` records the prefill's own stage clock
(``ModelSequence.prefill_stages``: preprocessing, vision encoder, token reduction, decoder prefill; engines that do not
time them give only the total) and the RSS growth across it, and returns a ``TimedSequence`` whose ``extend`` records
every decoder call with the tokens it fed and the context length after it. The device loop drives both unchanged, so
what is timed is exactly what a generation runs. Nothing in ``runtime_device`` changes for it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from covspec.models.base import ModelSequence
from covspec.profile.memory import rss_kib
from covspec.reduce import TokenReduction

# the engines' prefill stage names (ModelSequence.prefill_stages), in pipeline order, and what a report calls them
PREFILL_STAGES = {
    "preprocess": "image preprocessing",
    "vision": "vision encoder",
    "reduce": "token reduction",
    "decoder": "drafter prefill",
}


@dataclass(frozen=True)
class PrefillRecord:
    """One ``start``: its total and per-stage seconds, the prompt it prefilled and the RSS it added (KiB)."""

    seconds: float
    stages: dict[str, float]
    prompt_length: int
    image_tokens: int
    rss_growth_kib: int | None


@dataclass(frozen=True)
class StepRecord:
    """One decoder call after the prefill: ``tokens`` fed in it, ``context`` the cache length after it."""

    tokens: int
    context: int
    seconds: float


@dataclass
class StageRecorder:
    """What the timed engine saw since the last ``clear``."""

    prefills: list[PrefillRecord] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_prefill(self, record: PrefillRecord) -> None:
        with self._lock:  # the loop prefills on a worker thread
            self.prefills.append(record)

    def add_step(self, record: StepRecord) -> None:
        with self._lock:
            self.steps.append(record)

    def take(self) -> tuple[list[PrefillRecord], list[StepRecord]]:
        """Everything recorded so far, and a fresh start."""
        with self._lock:
            out = (self.prefills, self.steps)
            self.prefills, self.steps = [], []
        return out


class TimedSequence(ModelSequence):
    """A drafter sequence whose decoder calls are timed; everything else passes through."""

    def __init__(self, inner: ModelSequence, recorder: StageRecorder) -> None:
        self.inner = inner
        self.recorder = recorder

    @property
    def prompt_length(self) -> int:
        return self.inner.prompt_length

    @property
    def length(self) -> int:
        return self.inner.length

    @property
    def prefill_logits(self) -> np.ndarray:
        return self.inner.prefill_logits

    @property
    def image_tokens(self) -> int:
        return self.inner.image_tokens

    @property
    def prefill_stages(self) -> dict[str, float]:
        return self.inner.prefill_stages

    def extend(self, tokens: Sequence[int]) -> np.ndarray:
        started = time.perf_counter()
        logits = self.inner.extend(tokens)
        elapsed = time.perf_counter() - started
        if len(tokens):
            self.recorder.add_step(StepRecord(len(tokens), self.inner.length, elapsed))
        return logits

    def crop(self, length: int) -> None:
        self.inner.crop(length)

    def kv_bytes(self) -> int:
        return self.inner.kv_bytes()


class TimedEngine:
    """Any ``DrafterEngine``, with its prefills and decoder calls recorded in ``recorder``."""

    def __init__(self, inner: Any, recorder: StageRecorder | None = None) -> None:
        self.inner = inner
        self.recorder = recorder or StageRecorder()
        self.name = inner.name
        self.last_sequence: TimedSequence | None = None  # the latest ``start``'s (its KV cache size, after a run)

    def __getattr__(self, name: str) -> Any:  # fingerprint, vocabulary, eos ids, decode, ...: the engine's own
        return getattr(self.inner, name)

    @property
    def fingerprint(self) -> Any:
        return self.inner.fingerprint

    @property
    def accepts_images(self) -> bool:
        return self.inner.accepts_images

    def decode(self, tokens: list[int]) -> str:
        return self.inner.decode(tokens)

    def start(self, image: Any | None, prompt: str, reduction: TokenReduction | None = None) -> TimedSequence:
        before = rss_kib()
        started = time.perf_counter()
        sequence = self.inner.start(image, prompt, reduction)
        elapsed = time.perf_counter() - started
        after = rss_kib()
        growth = after - before if before is not None and after is not None else None
        record = PrefillRecord(
            elapsed, dict(sequence.prefill_stages), sequence.prompt_length, sequence.image_tokens, growth
        )
        self.recorder.add_prefill(record)
        self.last_sequence = TimedSequence(sequence, self.recorder)
        return self.last_sequence


@dataclass(frozen=True)
class Spread:
    """Median and the 10th / 90th percentiles of ``n`` values."""

    median: float
    p10: float
    p90: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "p10": self.p10, "p90": self.p90, "n": self.n}


def spread(values: Iterable[float]) -> Spread | None:
    """The spread of ``values``; None when there are none."""
    data = np.asarray([float(v) for v in values], dtype=np.float64)
    if data.size == 0:
        return None
    p10, median, p90 = np.percentile(data, [10, 50, 90])
    return Spread(float(median), float(p10), float(p90), int(data.size))


def spread_dict(values: Iterable[float]) -> dict[str, float | int] | None:
    found = spread(values)
    return found.to_dict() if found is not None else None


def bucket_width(lo: int, hi: int, buckets: int) -> int:
    """A power of two wide enough to cover ``lo..hi`` in at most ``buckets`` buckets."""
    span = max(hi - lo + 1, 1)
    return 1 << max(0, math.ceil(math.log2(span / buckets))) if span > buckets else 1


def bucket_steps(steps: Sequence[StepRecord], buckets: int = 12) -> list[dict[str, Any]]:
    """Single-token decoder steps grouped by context length (power-of-two-wide buckets aligned to multiples of the
    width), each with the spread of its step seconds."""
    single = [s for s in steps if s.tokens == 1]
    if not single:
        return []
    lo, hi = min(s.context for s in single), max(s.context for s in single)
    width = bucket_width(lo, hi, buckets)
    groups: dict[int, list[float]] = {}
    for step in single:
        groups.setdefault(step.context // width, []).append(step.seconds)
    out = []
    for key in sorted(groups):
        found = spread(groups[key])
        assert found is not None
        out.append({"context_lo": key * width, "context_hi": key * width + width - 1, **found.to_dict()})
    return out


__all__ = [
    "PREFILL_STAGES",
    "PrefillRecord",
    "Spread",
    "StageRecorder",
    "StepRecord",
    "TimedEngine",
    "TimedSequence",
    "bucket_steps",
    "bucket_width",
    "spread",
    "spread_dict",
]
