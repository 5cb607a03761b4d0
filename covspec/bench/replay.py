"""Emulated devices (DESIGN.md §2, §10): a real drafter's drafts, recorded once, replayed at its measured step times.

Sixteen phones are sixteen machines; on this machine sixteen real drafters would measure their contention for two
cores, not the edge. So a load test records, per item, what the real drafter proposes from every context greedy
speculative decoding can reach — the committed prefix (a prefix of the target's own output) followed by the
drafter's own greedy tokens — and an emulated device replays those logits rows, sleeping the drafter's measured
prefill and step times. Everything else of the device is real: the loop, its policy, the protocol, the connection.
Greedy only: under sampling the reachable contexts are not a small set.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from covspec.models.base import ModelFingerprint, TokenSequence
from covspec.models.vocabulary import Vocabulary
from covspec.reduce import TokenReduction
from covspec.runtime_device.engines.base import DrafterEngine
from covspec.runtime_device.upload import decode_rgb


@dataclass(frozen=True)
class DraftRecord:
    """One item: after ``reference[:p]`` the drafter's logits rows ``rows[p]`` [k_max + 1, V], row i scoring the
    position after its own greedy tokens ``chains[p][:i]``."""

    prompt: str
    reference: tuple[int, ...]
    prompt_length: int
    image_tokens: int
    rows: tuple[np.ndarray, ...]  # [len(reference) + 1] of [k_max + 1, V] float32
    chains: tuple[tuple[int, ...], ...]

    def row_after(self, generated: Sequence[int]) -> np.ndarray | None:
        """The drafter's logits after ``generated`` (the tokens after the prompt), or None for a context it was never
        recorded in."""
        p = 0
        limit = min(len(generated), len(self.reference))
        while p < limit and generated[p] == self.reference[p]:
            p += 1
        rest = tuple(generated[p:])
        chain = self.chains[p]
        if len(rest) < len(self.rows[p]) and rest == chain[: len(rest)]:
            return self.rows[p][len(rest)]
        return None


@dataclass(frozen=True)
class DrafterTimes:
    """The real drafter's medians on this machine: a prefill, and one forward of a step (one token)."""

    prefill_s: float
    step_s: float

    def as_dict(self) -> dict[str, float]:
        return {"prefill_s": self.prefill_s, "step_s": self.step_s}


def record_drafts(
    engine: DrafterEngine, items: Sequence[tuple[bytes, str, Sequence[int]]], k_max: int, progress: Any = None
) -> tuple[list[DraftRecord], DrafterTimes]:
    """Record ``engine``'s greedy drafts of up to ``k_max`` tokens from every prefix of each item's reference
    (image bytes, prompt, the target's greedy output), and time its prefills and steps."""
    records, prefills, steps = [], [], []
    task = progress.add_task("recording drafts", total=len(items)) if progress is not None else None
    for image, prompt, reference in items:
        started = time.perf_counter()
        sequence = engine.start(decode_rgb(image) if engine.accepts_images else None, prompt)
        prefills.append(time.perf_counter() - started)
        rows, chains = [], []
        after_prefix = np.asarray(sequence.prefill_logits, dtype=np.float32)
        for p in range(len(reference) + 1):
            base = sequence.length
            block, chain = [after_prefix], []
            for _ in range(k_max):
                chain.append(int(np.argmax(block[-1])))
                started = time.perf_counter()
                block.append(np.asarray(sequence.extend(chain[-1:])[0], dtype=np.float32))
                steps.append(time.perf_counter() - started)
            sequence.crop(base)
            rows.append(np.stack(block))
            chains.append(tuple(chain))
            if p < len(reference):
                after_prefix = np.asarray(sequence.extend([int(reference[p])])[0], dtype=np.float32)
        records.append(
            DraftRecord(prompt, tuple(int(t) for t in reference), sequence.prompt_length, sequence.image_tokens,
                        tuple(rows), tuple(chains))
        )  # fmt: skip
        if progress is not None:
            progress.advance(task)
    return records, DrafterTimes(statistics.median(prefills), statistics.median(steps))


class ReplaySequence(TokenSequence):
    """A drafter sequence that answers from a record and sleeps the real drafter's time per forward."""

    def __init__(self, record: DraftRecord, times: DrafterTimes, engine: ReplayEngine) -> None:
        super().__init__([0] * record.prompt_length, record.rows[0][0], record.image_tokens)
        self._record, self._times, self._engine = record, times, engine

    def extend(self, tokens: Sequence[int]) -> np.ndarray:
        time.sleep(self._times.step_s)  # one forward, as the real drafter's (a catch-up of several tokens too)
        rows = []
        for token in tokens:
            self._ids.append(int(token))
            row = self._record.row_after(self._ids[self.prompt_length :])
            if row is None:  # a context the recording never reached: a draft nobody will accept, and counted
                self._engine.misses += 1
                row = np.zeros_like(self._record.rows[0][0])
            rows.append(row)
        return np.stack(rows) if rows else np.zeros((0, self._record.rows[0].shape[-1]), dtype=np.float32)

    def crop(self, length: int) -> None:
        del self._ids[self._checked_crop(length) :]

    def kv_bytes(self) -> int:
        return 0


class ReplayEngine:
    """A drafter engine for one emulated device: its generations' records in the order it will run them. It names
    the real engine's model (fingerprint, vocabulary), so pairing with the edge is checked as for the real one."""

    def __init__(self, real: DrafterEngine, records: Sequence[DraftRecord], times: DrafterTimes) -> None:
        self.name = f"emulated({real.name})"
        self._real, self._records, self._times = real, list(records), times
        self._next = 0
        self.misses = 0  # drafter forwards answered from no record

    @property
    def fingerprint(self) -> ModelFingerprint:
        return self._real.fingerprint

    @property
    def accepts_images(self) -> bool:
        return self._real.accepts_images

    @property
    def vocabulary(self) -> Vocabulary:
        return self._real.vocabulary

    def start(self, image: Any | None, prompt: str, reduction: TokenReduction | None = None) -> ReplaySequence:
        record = self._records[self._next % len(self._records)]
        if record.prompt != prompt or reduction is not None:
            raise ValueError("an emulated device replays its recorded items in order, without reduction")
        self._next += 1
        time.sleep(self._times.prefill_s)
        return ReplaySequence(record, self._times, self)

    def decode(self, tokens: list[int]) -> str:
        return self._real.decode(tokens)
