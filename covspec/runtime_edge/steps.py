"""What a model job is: a generator that asks for target forwards and gets their results back.

A round, a burst, a chat completion each yield one ``Forward`` per target forward and receive its [n, vocab] logits;
a prefill yields one ``Start`` and receives the new sequence; between them jobs do their own bookkeeping. Who runs
the forward is not their business: the scheduler batches the forwards of many jobs into one, and the prefills into
another (``covspec.runtime_edge.scheduler``); ``run_to_end`` runs them one by one (tests, in-process benchmarks).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from covspec.models.base import LoadedModel, ModelSequence, PromptStart

T = TypeVar("T")


@dataclass(frozen=True)
class Forward:
    """Feed ``tokens`` to ``sequence`` in one forward; the job receives their logits, [len(tokens), vocab]."""

    sequence: ModelSequence
    tokens: Sequence[int]


@dataclass(frozen=True)
class Start:
    """Prefill a prompt on ``model``; the job receives the new sequence."""

    model: LoadedModel
    prompt: PromptStart


Request = Forward | Start
Steps = Generator[Request, Any, T]  # a job: yields its requests, returns its result


def run_to_end(steps: Steps[T]) -> T:
    """A job run at once on the caller's thread, each request alone; a request's failure is raised inside the job,
    where it asked for it."""
    reply: Any = None
    while True:
        try:
            request = steps.throw(reply) if isinstance(reply, Exception) else steps.send(reply)
        except StopIteration as stop:
            return stop.value
        try:
            reply = run_alone(request)
        except Exception as exc:
            reply = exc


def run_alone(request: Request) -> Any:
    """One request's result, computed alone."""
    if isinstance(request, Start):
        p = request.prompt
        return request.model.start(p.image, p.prompt, max_prompt_tokens=p.max_prompt_tokens, select=p.select)
    return request.sequence.extend(request.tokens)
