"""SpecStats arithmetic: AAL (mean committed per round) and acceptance rate (accepted / drafted)."""

from __future__ import annotations

import pytest

from covspec.spec import SpecStats


def test_empty_run_reports_zeros() -> None:
    stats = SpecStats()
    assert stats.aal == 0.0 and stats.acceptance_rate == 0.0
    assert stats.to_dict() == {
        "rounds": 0,
        "drafted": 0,
        "accepted": 0,
        "committed": 0,
        "bursts": 0,
        "burst_tokens": 0,
        "aal": 0.0,
        "acceptance_rate": 0.0,
    }


def test_aal_and_acceptance_rate() -> None:
    stats = SpecStats()
    stats.record_round(drafted=4, accepted=4, committed=5)  # full acceptance + bonus
    stats.record_round(drafted=4, accepted=1, committed=2)  # rejection at position 1 + correction
    stats.record_round(drafted=4, accepted=0, committed=1)
    assert (stats.rounds, stats.drafted, stats.accepted, stats.committed) == (3, 12, 5, 8)
    assert stats.aal == pytest.approx(8 / 3)
    assert stats.acceptance_rate == pytest.approx(5 / 12)
    assert stats.to_dict()["aal"] == pytest.approx(8 / 3)
    assert stats.to_dict()["acceptance_rate"] == pytest.approx(5 / 12)


def test_rounds_without_drafting_count_for_aal_only() -> None:
    stats = SpecStats()
    stats.record_round(drafted=0, accepted=0, committed=1)  # target-only step (K = 0)
    stats.record_round(drafted=0, accepted=0, committed=1)
    assert stats.aal == 1.0 and stats.acceptance_rate == 0.0


def test_truncated_round_commits_fewer_tokens() -> None:
    stats = SpecStats()
    stats.record_round(drafted=3, accepted=3, committed=2)  # end of sequence inside the accepted prefix
    assert stats.aal == 2.0 and stats.acceptance_rate == 1.0


@pytest.mark.parametrize(
    ("drafted", "accepted", "committed"), [(2, 3, 4), (-1, 0, 1), (2, -1, 0), (2, 1, 3), (2, 1, -1)]
)
def test_impossible_rounds_raise(drafted: int, accepted: int, committed: int) -> None:
    stats = SpecStats()
    with pytest.raises(ValueError):
        stats.record_round(drafted=drafted, accepted=accepted, committed=committed)
    assert stats.rounds == 0 and stats.committed == 0


def test_bursts_are_counted_apart_from_drafting() -> None:
    stats = SpecStats()
    stats.record_round(drafted=3, accepted=3, committed=4)
    stats.record_burst(committed=6)
    assert (stats.rounds, stats.bursts, stats.burst_tokens, stats.exchanges) == (1, 1, 6, 2)
    assert stats.aal == 4.0 and stats.acceptance_rate == 1.0
    with pytest.raises(ValueError):
        stats.record_burst(committed=-1)


def test_add_pools_every_counter() -> None:
    first, second = SpecStats(), SpecStats()
    first.record_round(drafted=4, accepted=2, committed=3)
    second.record_round(drafted=3, accepted=3, committed=4)
    second.record_burst(committed=5)
    first.add(second)
    assert (first.rounds, first.drafted, first.accepted, first.committed) == (2, 7, 5, 7)
    assert (first.bursts, first.burst_tokens) == (1, 5) and first.aal == 3.5
