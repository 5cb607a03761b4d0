"""The one thread that runs the target, in turns.

Every model job is a sequence of steps, each at most one target forward (a prefill, a round's verify forward, one
token of a burst or of a chat completion). Jobs take one step each in turn, round robin, so a long job (a burst of
128 tokens, a non-streamed completion of thousands) delays another session's round by at most one step of each job
queued before it, never by its whole length. The worker counts, per job, the steps other jobs ran between its
submission and its end: the bound the stall test checks, in steps rather than seconds.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
Steps = Generator[None, None, T]  # a job: yields between steps, returns its result


@dataclass
class _Job:
    steps: Steps
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    on_done: Callable[[int], None] | None
    submitted_at_step: int
    own_steps: int = 0


@dataclass
class ModelWorker:
    """Runs jobs on one thread; ``steps`` counts every step run so far."""

    steps: int = 0
    _queue: collections.deque[_Job] = field(default_factory=collections.deque)
    _ready: threading.Condition = field(default_factory=threading.Condition)
    _closed: bool = False
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="covspec-target", daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[..., T], *args: Any, on_done: Callable[[int], None] | None = None) -> T:
        """``fn(*args)`` as a job of one step."""

        def one_step() -> Steps:
            return fn(*args)
            yield  # a generator: the worker runs it like any job

        return await self.run(one_step(), on_done=on_done)

    async def run(self, steps: Steps, on_done: Callable[[int], None] | None = None) -> T:
        """Run a stepped job to its end; ``on_done(waited)`` gets the number of other jobs' steps it waited
        through."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the model worker is closed")
            self._queue.append(_Job(steps, future, loop, on_done, self.steps))
            self._ready.notify()
        return await future

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if self._closed:
                    for job in self._queue:
                        job.loop.call_soon_threadsafe(_cancel, job.future)
                    return
                job = self._queue.popleft()
            if job.future.done():  # its caller went away (a client gone mid-completion): no more steps for it
                job.steps.close()
                continue
            self._step(job)

    def _step(self, job: _Job) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            next(job.steps)
            finished = False
        except StopIteration as stop:
            finished, result = True, stop.value
        except BaseException as exc:  # the job failed: its caller gets the exception, the worker goes on
            finished, error = True, exc
        self.steps += 1
        job.own_steps += 1
        if not finished:
            with self._ready:
                self._queue.append(job)  # its turn is over: to the back of the queue
            return
        if job.on_done is not None:
            job.on_done(self.steps - job.submitted_at_step - job.own_steps)
        job.loop.call_soon_threadsafe(_settle, job.future, result, error)


def run_to_end(steps: Steps[T]) -> T:
    """A stepped job run at once, on the caller's thread (tests, in-process benchmarks)."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # its caller went away (a cancelled request)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _cancel(future: asyncio.Future) -> None:
    if not future.done():
        future.cancel()
