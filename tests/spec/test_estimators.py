"""The drafting policies' estimators: censoring, shadow blocks, the margin calibration, the link's round trip."""

from __future__ import annotations

import numpy as np
import pytest

from covspec.spec.estimators import LinkEstimate, MarginCalibration, PositionAcceptance


def test_position_acceptance_counts_only_tested_positions() -> None:
    counts = PositionAcceptance(max_draft_len=4)
    counts.record(drafted=4, accepted=1)  # position 1 accepted, 2 rejected, 3 and 4 never tested
    assert counts.trials.tolist() == [1, 1, 0, 0]
    assert counts.accepts.tolist() == [1, 0, 0, 0]
    counts.record(drafted=3, accepted=3)  # full acceptance of a shorter block: position 4 not drafted
    assert counts.trials.tolist() == [2, 2, 1, 0]
    assert counts.accepts.tolist() == [2, 1, 1, 0]
    # no prior: the measured rates, and the pooled 4/5 where nothing was tested
    assert counts.probabilities() == pytest.approx([1.0, 0.5, 1.0, 0.8])


def test_shadow_matches_become_the_rounds_that_would_have_run() -> None:
    counts = PositionAcceptance(max_draft_len=4)
    # blocks: [T T F .] accepted 2 (the F is the correction), then [T T T T] accepted 4 (bonus at index 7),
    # then [F] accepted 0 and the burst ends
    counts.record_shadow([True, True, False, True, True, True, True, True, False])
    assert counts.trials.tolist() == [3, 2, 2, 1]
    assert counts.accepts.tolist() == [2, 2, 1, 1]


def test_margin_calibration_respects_censoring() -> None:
    calibration = MarginCalibration()
    calibration.record((0.95, 0.92, 0.01, 0.02), accepted=1)  # accept at 0.95, reject at 0.92, two censored
    high, low = calibration.bin_of(0.95), calibration.bin_of(0.01)
    assert calibration.accepts[high] == 1 and calibration.rejects[high] == 1
    assert calibration.accepts[low] == 0 and calibration.rejects[low] == 0
    assert calibration.observations == 2


def test_margin_calibration_is_monotone_in_margin() -> None:
    calibration = MarginCalibration()
    rng = np.random.default_rng(8)
    for _ in range(300):  # acceptance falls with margin here (an adversarial drafter): the fit must stay monotone
        margins = tuple(float(m) for m in rng.random(4))
        accepted = next((i for i, m in enumerate(margins) if rng.random() < m), 4)
        calibration.record(margins, accepted)
    probs = calibration.accept_probabilities()
    assert (np.diff(probs) >= -1e-12).all()


def test_link_estimate_follows_a_round_trip_step_and_keeps_the_bandwidth() -> None:
    link = LinkEstimate()
    rng = np.random.default_rng(4)
    seconds_per_byte = 1e-6  # 1 MB/s: vanilla-sized rounds (tens of kB) take tens of ms on the wire

    def add_round(rtt_s: float, index: int) -> None:
        total_bytes = 1_000 if index % 2 else int(rng.integers(20_000, 60_000))
        link.add(rtt_s + total_bytes * seconds_per_byte + abs(rng.normal(0, 2e-4)), total_bytes)

    for index in range(30):
        add_round(0.05, index)
    assert link.rtt_s == pytest.approx(0.05, abs=0.005)
    assert link.bytes_per_s == pytest.approx(1e6, rel=0.1)
    for index in range(3):
        add_round(0.2, index)
    assert link.rtt_s == pytest.approx(0.2, abs=0.03)  # three rounds later the step is mostly followed
    for index in range(10):
        add_round(0.2, index)
        assert link.bytes_per_s == pytest.approx(1e6, rel=0.15)  # the step is not mistaken for a bandwidth change
    assert link.rtt_s == pytest.approx(0.2, abs=0.005)
