"""The load harness's pure parts: Jain's index, the modes, and the rows it derives from what devices and the edge
measured."""

from __future__ import annotations

import math

import pytest

from covspec.bench.load import jain_index, load_modes
from covspec.runtime_edge.schedules import Schedule


def test_jain_index() -> None:
    assert jain_index([5.0, 5.0, 5.0]) == pytest.approx(1.0)
    assert jain_index([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)  # one takes everything: 1/n
    assert jain_index([1.0, 2.0]) == pytest.approx(9 / 10)
    assert jain_index([]) is None and jain_index([0.0, 0.0]) is None
    assert not math.isnan(jain_index([1e-9, 1e-9]) or 0)


def test_load_modes_put_the_baselines_first_and_one_row_per_extra_schedule() -> None:
    modes = load_modes(16, [Schedule.PRIORITY, Schedule.LYAPUNOV])
    assert [m.name for m in modes] == ["batched", "one-at-a-time", "target-only batched", "batched lyapunov"]
    assert modes[0].schedule is Schedule.PRIORITY and modes[0].max_batch == 16 and modes[1].max_batch == 1
    assert not modes[2].speculative and all(m.speculative for m in modes if m is not modes[2])
    assert modes[3].serve_args(0.002, 40) == (
        "--max-batch", "16", "--schedule", "lyapunov", "--batch-window-ms", "2", "--max-sessions", "40"
    )  # fmt: skip
