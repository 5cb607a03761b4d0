"""Which waiting forwards go into the next batch when there are more than it holds: pure policies over descriptors.

- ``fcfs``: oldest first.
- ``priority``: most expected committed tokens per position fed first (a round whose drafts will mostly be accepted
  buys more output for its compute than one that will be cut at its first token), with a fairness guard: a forward
  that has waited ``guard_s`` goes ahead of every younger one, oldest first, so no session starves.
- ``lyapunov``: drift plus penalty. Each key (a session, a completion) has a virtual queue of latency debt, the
  seconds its forwards waited beyond ``target_wait_s``; a batch takes the rows with the largest
  ``debt + wait + V * value / cost``. Serving the largest debts first keeps every queue stable (the drift term),
  and ``V`` trades that against committed tokens per unit of compute (the penalty term).

A batch's forward costs about the same whichever rows it holds while the edge is memory-bound, and about its
positions once it is compute-bound; ``cost`` is the positions a row feeds, the compute-bound measure.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass, field


class Schedule(str, enum.Enum):
    FCFS = "fcfs"
    PRIORITY = "priority"
    LYAPUNOV = "lyapunov"


@dataclass(frozen=True)
class Waiting:
    """A forward waiting for a batch."""

    key: str  # whose: a session id, a completion's id
    ready_at: float  # monotonic seconds when it was asked for
    tokens: int  # positions it feeds (its cost)
    value: float  # tokens it is expected to commit


@dataclass
class Scheduling:
    """A schedule with its state across batches (the Lyapunov debts; nothing for the others)."""

    schedule: Schedule = Schedule.FCFS
    guard_s: float = 0.05  # priority: a forward waiting this long goes first
    target_wait_s: float = 0.01  # lyapunov: the queue wait each key is allowed before it accrues debt
    tradeoff: float = 0.01  # lyapunov: V, seconds of debt one committed token per position is worth
    max_keys: int = 4096  # debts kept (least recently served dropped first)
    debts: collections.OrderedDict[str, float] = field(default_factory=collections.OrderedDict)

    def choose(self, rows: list[Waiting], capacity: int, now: float) -> list[int]:
        """Indices of the rows of the next batch (at most ``capacity``), in ``rows``' order."""
        if len(rows) <= capacity:
            chosen = list(range(len(rows)))
        else:
            chosen = sorted(sorted(range(len(rows)), key=lambda i: self._rank(rows[i], now))[:capacity])
        if self.schedule is Schedule.LYAPUNOV:
            self._settle_debts(rows, chosen, now)
        return chosen

    def _rank(self, row: Waiting, now: float) -> tuple:
        """Sort key: smaller goes first."""
        wait = now - row.ready_at
        if self.schedule is Schedule.FCFS:
            return (row.ready_at,)
        if self.schedule is Schedule.PRIORITY:
            starving = wait >= self.guard_s
            return (not starving, row.ready_at if starving else -row.value / max(row.tokens, 1), row.ready_at)
        weight = self.debts.get(row.key, 0.0) + wait + self.tradeoff * row.value / max(row.tokens, 1)
        return (-weight, row.ready_at)

    def _settle_debts(self, rows: list[Waiting], chosen: list[int], now: float) -> None:
        """Served rows pay their wait beyond the target into their key's debt; a debt never goes below zero."""
        for i in chosen:
            row = rows[i]
            debt = max(self.debts.pop(row.key, 0.0) + (now - row.ready_at) - self.target_wait_s, 0.0)
            self.debts[row.key] = debt  # most recently served last
        while len(self.debts) > self.max_keys:
            self.debts.popitem(last=False)
