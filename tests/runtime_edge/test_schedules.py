"""The schedules as pure policies: which waiting forwards a batch takes when more wait than it holds."""

from __future__ import annotations

import numpy as np

from covspec.runtime_edge.schedules import Schedule, Scheduling, Waiting


def _rows() -> list[Waiting]:
    # (key, ready at, positions fed, expected committed tokens)
    return [
        Waiting("a", 0.00, 5, 1.2),  # oldest, drafts rarely accepted
        Waiting("b", 0.01, 5, 4.5),  # drafts mostly accepted
        Waiting("c", 0.02, 1, 1.0),  # a completion token: one position, one token
        Waiting("d", 0.03, 9, 2.0),
    ]


def test_fcfs_takes_the_oldest() -> None:
    assert Scheduling(Schedule.FCFS).choose(_rows(), 2, now=0.04) == [0, 1]
    assert Scheduling(Schedule.FCFS).choose(_rows(), 8, now=0.04) == [0, 1, 2, 3]  # room for all: all


def test_priority_takes_most_tokens_per_position_until_the_guard() -> None:
    scheduling = Scheduling(Schedule.PRIORITY, guard_s=0.05)
    # value per position: a 0.24, b 0.9, c 1.0, d 0.22
    assert scheduling.choose(_rows(), 2, now=0.04) == [1, 2]
    # a has now waited past the guard: it goes first whatever its value
    assert scheduling.choose(_rows(), 2, now=0.051) == [0, 2]


def test_lyapunov_serves_debt_before_value_and_debts_stay_nonnegative() -> None:
    scheduling = Scheduling(Schedule.LYAPUNOV, target_wait_s=0.0, tradeoff=0.01)
    scheduling.debts["a"] = 1.0  # a has been kept waiting before
    assert scheduling.choose(_rows(), 1, now=0.04) == [0]
    assert scheduling.debts["a"] > 1.0  # it waited again before this service
    relaxed = Scheduling(Schedule.LYAPUNOV, target_wait_s=10.0)
    relaxed.debts["b"] = 0.5
    relaxed.choose(_rows(), 4, now=0.04)
    assert all(debt >= 0 for debt in relaxed.debts.values()) and relaxed.debts["b"] == 0.0


def _simulate(schedule: Schedule, steps: int = 4000, capacity: int = 3) -> tuple[np.ndarray, float]:
    """Eight keys, each with one forward waiting at a time (a session's next round), served ``capacity`` per batch
    of 1 ms; key i's rounds are worth 1 + i/2 tokens. Returns each key's served count and the tokens committed."""
    scheduling = Scheduling(schedule, guard_s=0.01, target_wait_s=0.002, tradeoff=0.002)
    values = 1.0 + np.arange(8) / 2
    ready = np.zeros(8)
    served = np.zeros(8)
    committed = 0.0
    for step in range(steps):
        now = step * 0.001
        rows = [Waiting(str(i), ready[i], 5, values[i]) for i in range(8)]
        for i in scheduling.choose(rows, capacity, now):
            served[i] += 1
            committed += values[i]
            ready[i] = now + 0.001  # its next round comes back after this batch
    return served, committed


def _jain(x: np.ndarray) -> float:
    return float(x.sum() ** 2 / (len(x) * (x**2).sum()))


def test_schedules_under_overload_trade_tokens_against_fairness() -> None:
    fcfs, fcfs_tokens = _simulate(Schedule.FCFS)
    priority, priority_tokens = _simulate(Schedule.PRIORITY)
    lyapunov, lyapunov_tokens = _simulate(Schedule.LYAPUNOV)
    assert _jain(fcfs) > 0.95  # round robin in effect (ties at equal ready times go by position)
    # priority: the most tokens, and the guard's promise only: every key served at least once per guard interval
    assert priority_tokens > lyapunov_tokens > fcfs_tokens
    assert priority.min() >= 4000 / (10 + 2)
    # lyapunov: more tokens than fcfs at fcfs's fairness
    assert _jain(lyapunov) > 0.95
