"""The one thread that runs the target: many jobs' forwards batched into one.

Jobs (``covspec.runtime_edge.steps``) ask for forwards; each tick the scheduler advances every job whose last
forward is answered to its next one, picks the forwards of one batch (``schedules``: at most ``max_batch`` rows, in
the schedule's order), runs them as one target forward (``extend_together``), and then runs at most one opaque call
(a prefill: a forward over a whole prompt, which is not batched). So a round waits for at most the batch in progress
and one prefill, however long the other jobs are (a completion of thousands of tokens adds one row per batch), and
rounds of many sessions cost one forward. Before a batch the scheduler may wait up to ``window_s`` from the oldest
waiting forward for more to arrive. Each job's ``on_done`` gets the number of forwards it waited through: forwards
that ran while it was queued and did not include it.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from covspec.models.base import extend_together
from covspec.runtime_edge.schedules import Schedule, Scheduling, Waiting
from covspec.runtime_edge.settings import BatchSettings
from covspec.runtime_edge.steps import Forward, Steps

T = TypeVar("T")


@dataclass(frozen=True)
class BatchRecord:
    """One batched forward, for metrics: its rows, the positions they fed, each row's seconds in the queue."""

    rows: int
    tokens: int
    queue_waits_s: tuple[float, ...]
    schedule: Schedule
    seconds: float


@dataclass
class _Job:
    steps: Steps | None  # None: an opaque call
    call: Callable[[], Any] | None
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    on_done: Callable[[int], None] | None
    submitted_at: int  # the scheduler's forward count at submission
    key: str
    value: Callable[[], float]
    own_forwards: int = 0
    reply: np.ndarray | BaseException | None = None  # the answer to its last forward, not yet delivered
    forward: Forward | None = None  # the forward it waits for
    ready_at: float = field(default_factory=time.monotonic)  # since when it waits: submitted, or its last batch done


@dataclass
class Scheduler:
    """Runs jobs on one thread; ``forwards`` counts every forward run so far (a batch counts once)."""

    settings: BatchSettings = field(default_factory=BatchSettings)
    on_batch: Callable[[BatchRecord], None] | None = None
    on_call: Callable[[float], None] | None = None  # seconds of each opaque call (a prefill)
    forwards: int = 0
    _arrivals: collections.deque[_Job] = field(default_factory=collections.deque)
    _calls: collections.deque[_Job] = field(default_factory=collections.deque)
    _active: list[_Job] = field(default_factory=list)
    _ready: threading.Condition = field(default_factory=threading.Condition)
    _closed: bool = False
    _scheduling: Scheduling = field(init=False)

    def __post_init__(self) -> None:
        self._scheduling = Scheduling(self.settings.schedule)
        threading.Thread(target=self._serve, name="covspec-target", daemon=True).start()

    async def call(self, fn: Callable[..., T], *args: Any, on_done: Callable[[int], None] | None = None) -> T:
        """``fn(*args)`` on the scheduler's thread, alone: a prefill, or anything else that is not a job's forward."""
        return await self._submit(None, lambda: fn(*args), on_done, "", _one)

    async def run(
        self,
        steps: Steps[T],
        on_done: Callable[[int], None] | None = None,
        *,
        key: str = "",
        value: Callable[[], float] = lambda: 1.0,
    ) -> T:
        """Run a job to its end, its forwards batched with other jobs'. ``key`` names whose job it is (a session,
        a completion) and ``value`` what its next forward is expected to commit, for the schedule."""
        return await self._submit(steps, None, on_done, key, value)

    async def _submit(self, steps, call, on_done, key: str, value: Callable[[], float]) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            job = _Job(steps, call, future, loop, on_done, self.forwards, key, value)
            (self._calls if call is not None else self._arrivals).append(job)
            self._ready.notify()
        return await future

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()

    # -- the thread ---------------------------------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not (self._arrivals or self._calls or self._active or self._closed):
                    self._ready.wait()
                if self._closed:
                    for job in [*self._arrivals, *self._calls, *self._active]:
                        job.loop.call_soon_threadsafe(_cancel, job.future)
                    return
                self._active.extend(self._arrivals)
                self._arrivals.clear()
            for job in list(self._active):
                if job.forward is None:
                    self._advance(job)
            self._wait_for_more()
            self._run_batch()
            with self._ready:
                call = self._calls.popleft() if self._calls else None
            if call is not None:
                self._run_call(call)

    def _wait_for_more(self) -> None:
        """Up to ``window_s`` from the oldest waiting forward, take in new jobs while the batch is not full."""
        window, capacity = self.settings.window_s, self.settings.max_batch
        waiting = [job for job in self._active if job.forward is not None]
        if window <= 0 or not waiting or len(waiting) >= capacity:
            return
        deadline = min(job.ready_at for job in waiting) + window
        while len(waiting) < capacity and (left := deadline - time.monotonic()) > 0:
            with self._ready:
                if not self._arrivals and not self._closed:
                    self._ready.wait(left)
                arrived = list(self._arrivals)
                self._arrivals.clear()
                closed = self._closed
            self._active.extend(arrived)
            for job in arrived:
                self._advance(job)
                if job.forward is not None:
                    waiting.append(job)
            if closed:
                return

    def _run_batch(self) -> None:
        waiting = [job for job in self._active if job.forward is not None]
        if not waiting:
            return
        now = time.monotonic()
        rows = [Waiting(job.key, job.ready_at, len(job.forward.tokens), job.value()) for job in waiting]
        indices = self._scheduling.choose(rows, self.settings.max_batch, now)
        chosen = [waiting[i] for i in indices]
        started = time.perf_counter()
        replies = extend_together([(job.forward.sequence, job.forward.tokens) for job in chosen])
        seconds = time.perf_counter() - started
        self.forwards += 1
        done = time.monotonic()
        for job, reply in zip(chosen, replies, strict=True):
            job.reply, job.forward, job.ready_at = reply, None, done
            job.own_forwards += 1
        if self.on_batch is not None:
            tokens = sum(rows[i].tokens for i in indices)
            waits = tuple(now - rows[i].ready_at for i in indices)
            self.on_batch(BatchRecord(len(chosen), tokens, waits, self.settings.schedule, seconds))

    def _advance(self, job: _Job) -> None:
        """Deliver the job's last reply and run it to its next forward, or finish it."""
        assert job.steps is not None
        if job.future.done():  # its caller went away (a client gone mid-completion): no more forwards for it
            job.steps.close()
            self._active.remove(job)
            return
        reply, job.reply = job.reply, None
        try:
            forward = job.steps.throw(reply) if isinstance(reply, BaseException) else job.steps.send(reply)
        except StopIteration as stop:
            self._finish(job, stop.value, None)
            return
        except BaseException as exc:  # the job failed: its caller gets the exception, the others go on
            self._finish(job, None, exc)
            return
        job.forward = forward

    def _run_call(self, job: _Job) -> None:
        if job.future.done():
            return
        assert job.call is not None
        started = time.perf_counter()
        try:
            result, error = job.call(), None
        except BaseException as exc:
            result, error = None, exc
        if self.on_call is not None:
            self.on_call(time.perf_counter() - started)
        self.forwards += 1
        job.own_forwards += 1
        self._finish(job, result, error)

    def _finish(self, job: _Job, result: Any, error: BaseException | None) -> None:
        if job in self._active:
            self._active.remove(job)
        if job.on_done is not None:
            job.on_done(self.forwards - job.submitted_at - job.own_forwards)
        job.loop.call_soon_threadsafe(_settle, job.future, result, error)


def _one() -> float:
    return 1.0


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
