"""What a model job is: a generator that asks for target forwards and gets their logits back.

A round, a burst, a chat completion each yield one ``Forward`` per target forward and receive its [n, vocab] logits;
between forwards they do their own bookkeeping. Who runs the forward is not their business: the scheduler batches the
forwards of many jobs into one (``covspec.runtime_edge.scheduler``), ``run_to_end`` runs them one by one (tests,
in-process benchmarks).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from covspec.models.base import ModelSequence

T = TypeVar("T")


@dataclass(frozen=True)
class Forward:
    """Feed ``tokens`` to ``sequence`` in one forward; the job receives their logits, [len(tokens), vocab]."""

    sequence: ModelSequence
    tokens: Sequence[int]


Steps = Generator[Forward, np.ndarray, T]  # a job: yields its forwards, returns its result


def run_to_end(steps: Steps[T]) -> T:
    """A job run at once on the caller's thread, each forward alone; a forward's failure is raised inside the job,
    where it asked for it."""
    reply: np.ndarray | Exception | None = None
    while True:
        try:
            forward = steps.throw(reply) if isinstance(reply, Exception) else steps.send(reply)  # type: ignore[arg-type]
        except StopIteration as stop:
            return stop.value
        try:
            reply = forward.sequence.extend(forward.tokens)
        except Exception as exc:
            reply = exc
