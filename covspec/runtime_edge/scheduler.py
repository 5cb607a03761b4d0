"""The one thread that runs the target: many jobs' forwards batched into one.

Jobs (``covspec.runtime_edge.steps``) ask for forwards and prefills. Each tick the scheduler advances every job
whose last request is answered to its next one, picks the forwards of one batch (``schedules``: at most
``max_batch`` rows, in the schedule's order) and runs them as one target forward (``extend_together``), then runs
the waiting prefills, oldest first and at most ``max_batch`` of them, as one more (``start_many``: one forward where
the family can, else one each). So a round waits for at most the batch in progress and one batch of prefills, however
long the other jobs are (a completion of thousands of tokens adds one row per batch), and rounds of many sessions
cost one forward. Before a batch the scheduler may wait up to ``window_s`` from the oldest waiting forward for more
to arrive. Each job's ``on_done`` gets the number of forwards it waited through: forwards that ran while it was
queued and did not include it.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from covspec.models.base import extend_together
from covspec.runtime_edge.schedules import Schedule, Scheduling, Waiting
from covspec.runtime_edge.settings import BatchSettings
from covspec.runtime_edge.steps import Forward, Request, Start, Steps

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
    steps: Steps
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    on_done: Callable[[int], None] | None
    submitted_at: int  # the scheduler's forward count at submission
    key: str
    value: float  # what each of its forwards is expected to commit (the schedule's measure)
    own_forwards: int = 0
    reply: Any = None  # the answer to its last request, not yet delivered (an exception is raised in the job)
    request: Request | None = None  # the request it waits on
    ready_at: float = field(default_factory=time.monotonic)  # since when it waits: submitted, or its last request done


@dataclass
class Scheduler:
    """Runs jobs on one thread; ``forwards`` counts every forward run so far (a batch counts once)."""

    settings: BatchSettings = field(default_factory=BatchSettings)
    on_batch: Callable[[BatchRecord], None] | None = None
    on_prefills: Callable[[int, float], None] | None = None  # (prompts, seconds) of each batch of prefills
    forwards: int = 0
    _arrivals: collections.deque[_Job] = field(default_factory=collections.deque)
    _active: list[_Job] = field(default_factory=list)
    _ready: threading.Condition = field(default_factory=threading.Condition)
    _closed: bool = False
    _scheduling: Scheduling = field(init=False)

    def __post_init__(self) -> None:
        self._scheduling = Scheduling(self.settings.schedule)
        threading.Thread(target=self._serve, name="covspec-target", daemon=True).start()

    async def run(
        self,
        steps: Steps[T],
        on_done: Callable[[int], None] | None = None,
        *,
        key: str = "",
        value: float = 1.0,
    ) -> T:
        """Run a job to its end, its requests batched with other jobs'. ``key`` names whose job it is (a session,
        a completion) and ``value`` what its next forward is expected to commit, for the schedule."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._arrivals.append(_Job(steps, future, loop, on_done, self.forwards, key, value))
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
                while not (self._arrivals or self._active or self._closed):
                    self._ready.wait()
                if self._closed:
                    for job in [*self._arrivals, *self._active]:
                        job.loop.call_soon_threadsafe(_cancel, job.future)
                    return
                self._active.extend(self._arrivals)
                self._arrivals.clear()
            for job in list(self._active):
                if job.request is None:
                    self._advance(job)
            self._wait_for_more()
            self._run_forwards()
            self._run_prefills()

    def _waiting(self, kind: type) -> list[_Job]:
        return [job for job in self._active if isinstance(job.request, kind)]

    def _wait_for_more(self) -> None:
        """Up to ``window_s`` from the oldest waiting forward, take in new jobs while the batch is not full."""
        window, capacity = self.settings.window_s, self.settings.max_batch
        waiting = self._waiting(Forward)
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
                if isinstance(job.request, Forward):
                    waiting.append(job)
            if closed:
                return

    def _run_forwards(self) -> None:
        waiting = self._waiting(Forward)
        if not waiting:
            return
        now = time.monotonic()
        rows = [Waiting(job.key, job.ready_at, len(job.request.tokens), job.value) for job in waiting]
        indices = self._scheduling.choose(rows, self.settings.max_batch, now)
        chosen = [waiting[i] for i in indices]
        started = time.perf_counter()
        replies = extend_together([(job.request.sequence, job.request.tokens) for job in chosen])
        seconds = time.perf_counter() - started
        self._answer(chosen, replies)
        if self.on_batch is not None:
            tokens = sum(rows[i].tokens for i in indices)
            waits = tuple(now - rows[i].ready_at for i in indices)
            self.on_batch(BatchRecord(len(chosen), tokens, waits, self.settings.schedule, seconds))

    def _run_prefills(self) -> None:
        """The oldest waiting prefills, at most a batch of them, each model's in one ``start_many``."""
        waiting = sorted(self._waiting(Start), key=lambda job: job.ready_at)[: self.settings.max_batch]
        if not waiting:
            return
        started = time.perf_counter()
        by_model: dict[int, list[_Job]] = {}
        for job in waiting:
            by_model.setdefault(id(job.request.model), []).append(job)
        for jobs in by_model.values():
            self._answer(jobs, jobs[0].request.model.start_many([job.request.prompt for job in jobs]))
        if self.on_prefills is not None:
            self.on_prefills(len(waiting), time.perf_counter() - started)

    def _answer(self, jobs: list[_Job], replies: list[Any]) -> None:
        """One forward ran for ``jobs``: hand each its reply (its result or its own exception)."""
        self.forwards += 1
        done = time.monotonic()
        for job, reply in zip(jobs, replies, strict=True):
            job.reply, job.request, job.ready_at = reply, None, done
            job.own_forwards += 1

    def _advance(self, job: _Job) -> None:
        """Deliver the job's last reply and run it to its next request, or finish it."""
        if job.future.done():  # its caller went away (a client gone mid-completion): no more forwards for it
            job.steps.close()
            self._active.remove(job)
            return
        reply, job.reply = job.reply, None
        try:
            request = job.steps.throw(reply) if isinstance(reply, BaseException) else job.steps.send(reply)
        except StopIteration as stop:
            self._finish(job, stop.value, None)
            return
        except BaseException as exc:  # the job failed: its caller gets the exception, the others go on
            self._finish(job, None, exc)
            return
        job.request = request

    def _finish(self, job: _Job, result: Any, error: BaseException | None) -> None:
        self._active.remove(job)
        if job.on_done is not None:
            job.on_done(self.forwards - job.submitted_at - job.own_forwards)
        job.loop.call_soon_threadsafe(_settle, job.future, result, error)


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
