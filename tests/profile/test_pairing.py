"""`covspec pair`'s pure fitting on constructed rounds: the verify line, the censored per-position acceptance and AAL,
the per-round overhead, throughput from timed transfers, the link conditions per preset, and the recommendation per
link where the right K is known (checked against a brute-force twin of the cost model written out here)."""

from __future__ import annotations

import numpy as np
import pytest

from covspec.link.presets import LINK_PRESETS, LinkProfile
from covspec.profile.pairing import (
    PairNumbers,
    acceptance_from_rounds,
    calibration_draft_lens,
    fit_bytes,
    fit_verify,
    link_conditions,
    pair_numbers,
    recommend,
    recommend_link,
    round_overhead_s,
    throughput,
    warm_start,
)
from covspec.runtime_device.loop import GenerationResult
from covspec.runtime_device.pairing_file import MEASURED
from covspec.spec.cost_model import Linear
from covspec.spec.policy import RoundObservation


def _round(k: int, accepted: int, verify_s: float = 0.01, exchange_s: float = 0.02, *, up: int = 0, down: int = 0,
           draft_s: float = 0.0, committed: int | None = None) -> RoundObservation:  # fmt: skip
    return RoundObservation(burst=False, drafted=k, accepted=accepted, committed=accepted + 1 if committed is None
                            else committed, draft_s=draft_s, verify_s=verify_s, exchange_s=exchange_s,
                            uplink_bytes=up, downlink_bytes=down)  # fmt: skip


def test_the_verify_line_is_recovered_from_rounds_at_several_k() -> None:
    rounds = [_round(k, 0, verify_s=0.010 + 0.002 * k) for k in (2, 4, 8, 2, 8)]
    line = fit_verify(rounds + [RoundObservation(True, 0, 0, 5, 0.0, 0.5, 0.6, 0, 0)])  # a burst is ignored
    assert line.base == pytest.approx(0.010) and line.slope == pytest.approx(0.002)
    assert fit_verify([_round(4, 0, verify_s=s) for s in (0.01, 0.03)]) == Linear(0.02, 0.0)  # one K: flat
    falling = fit_verify([_round(2, 0, verify_s=0.03), _round(8, 0, verify_s=0.01)])
    assert falling == Linear(0.02, 0.0)  # a negative slope is noise
    through_origin = fit_verify([_round(2, 0, verify_s=0.001), _round(8, 0, verify_s=0.016)])
    assert through_origin.base == 0.0 and through_origin.slope > 0
    with pytest.raises(ValueError, match="no draft round"):
        fit_verify([])


def test_acceptance_is_counted_per_position_and_censored_after_the_first_rejection() -> None:
    rounds = [_round(4, 4), _round(4, 1), _round(2, 0)]
    acceptance = acceptance_from_rounds(rounds, 4)
    # trials: position 1 in all three, 2 in the first two, 3 and 4 only in the fully accepted block
    assert acceptance.trials == (3.0, 2.0, 1.0, 1.0)
    assert acceptance.accept_probs == pytest.approx((2 / 3, 1 / 2, 1.0, 1.0))
    assert acceptance.aal_by_k == {2: 1.0, 4: 3.5} and acceptance.rounds == 3


def test_overhead_bytes_and_throughput() -> None:
    rounds = [_round(2, 0, 0.010, 0.013), _round(2, 0, 0.010, 0.011), _round(2, 0, 0.010, 0.020)]
    assert round_overhead_s(rounds) == pytest.approx(0.003)
    sized = [_round(k, 0, up=20 + 4 * k, down=40) for k in (1, 2, 4, 8)]
    assert fit_bytes(sized, "up") == Linear(pytest.approx(20.0), pytest.approx(4.0))
    assert fit_bytes(sized, "down") == Linear(pytest.approx(40.0), pytest.approx(0.0, abs=1e-9))
    # 1 MB that took 0.11 s (median) on a link with a 10 ms round trip: 10 MB/s
    assert throughput(1_000_000, [0.2, 0.11, 0.10], 0.01) == pytest.approx(1e7)
    assert throughput(1_000, [0.01], 0.02) == pytest.approx(1_000 / 0.001)  # lost in the noise: bounded, finite
    assert calibration_draft_lens((2, 4, 8, 0), 6) == [2, 4, 6]
    with pytest.raises(ValueError, match="no usable calibration draft length"):
        calibration_draft_lens((0,), 6)


def _numbers(accept_probs, *, draft_step_s=0.002, verify=Linear(0.02, 0.001), overhead=0.005, up=1e7, down=1e7):
    return PairNumbers(tuple(accept_probs), draft_step_s, verify, overhead, up, down, Linear(30.0, 4.0),
                       Linear(40.0, 0.0), answer_tokens=20.0)  # fmt: skip


def _twin_best_k(numbers: PairNumbers, rtt_s: float, up: float, down: float) -> tuple[int, float]:
    """The cost model written out: E(K) = sum_{j<=K} prod_{i<=j} a_i, T(K) = K t + v(K) + rtt + bytes / bandwidth."""
    best = (0, -1.0)
    for k in range(1, len(numbers.accept_probs) + 1):
        expected = 1.0 + sum(float(np.prod(numbers.accept_probs[:j])) for j in range(1, k + 1))
        seconds = (k * numbers.draft_step_s + numbers.verify(k) + rtt_s + numbers.draft_uplink_bytes(k) / up
                   + numbers.draft_downlink_bytes(k) / down)  # fmt: skip
        if expected / seconds > best[1]:
            best = (k, expected / seconds)
    return best


def test_the_recommendation_picks_the_k_the_cost_model_rates_best() -> None:
    # a drafter the target never agrees with past position 1: one draft token, whatever the link
    assert recommend_link(_numbers([0.9, 0.0, 0.0, 0.0]), 0.005, 1e7, 1e7).draft_len == 1
    # full agreement and a cheap drafter: the longest block
    assert recommend_link(_numbers([1.0] * 8), 0.005, 1e7, 1e7).draft_len == 8
    # a decaying acceptance: a longer round trip makes longer blocks pay (the twin agrees on both)
    numbers = _numbers([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    fast, slow = recommend_link(numbers, 0.001, 1e7, 1e7), recommend_link(numbers, 0.2, 1e7, 1e7)
    assert (fast.draft_len, fast.expected_tokens_per_s) == pytest.approx(_twin_best_k(numbers, 0.001, 1e7, 1e7))
    assert (slow.draft_len, slow.expected_tokens_per_s) == pytest.approx(_twin_best_k(numbers, 0.2, 1e7, 1e7))
    assert fast.draft_len < slow.draft_len
    # the target alone decodes the mean answer (20 tokens) at v(0) each, one round trip and its bytes
    target_only = 20.0 / (20 * 0.02 + 0.2 + (40.0 + 4.0 * 20) / 1e7)
    assert slow.target_only_tokens_per_s == pytest.approx(target_only)
    assert slow.expected_speedup == pytest.approx(slow.expected_tokens_per_s / target_only)
    # the target alone pays the round trip once per answer, drafting once per round: a 200 ms link favours it
    assert slow.expected_speedup < 1.0 and not slow.drafting_pays
    assert fast.expected_speedup > 1.5 and fast.drafting_pays
    # a drafter slower than the target itself never pays
    useless = recommend_link(_numbers([0.3] * 4, draft_step_s=0.5), 0.005, 1e7, 1e7)
    assert useless.expected_speedup < 1.0 and not useless.drafting_pays


def test_each_preset_is_placed_on_top_of_the_measured_per_round_time() -> None:
    numbers = _numbers([0.8] * 4, overhead=0.003, up=5e6, down=5e6)
    conditions = link_conditions(numbers)
    assert conditions[MEASURED] == (0.003, 5e6, 5e6)
    lte = LINK_PRESETS["lte"]
    assert conditions["lte"] == pytest.approx((0.003 + lte.rtt_s, lte.uplink_bps / 8, min(lte.downlink_bps / 8, 5e6)))
    assert conditions["loopback"] == (0.003, 5e6, 5e6)
    # measured through an emulated 5g link: its round trip comes off before another preset's goes on
    through = LINK_PRESETS["5g"]
    numbers = _numbers([0.8] * 4, overhead=0.003 + through.rtt_s, up=5e6, down=2e7)
    moved = link_conditions(numbers, through)
    assert moved["lte"][0] == pytest.approx(0.003 + lte.rtt_s) and moved["lte"][1] == lte.uplink_bps / 8
    presets = {"slow": LinkProfile("slow", one_way_delay_s=0.1)}
    choices = recommend(numbers, through, presets)
    assert set(choices) == {MEASURED, "slow"} and choices["slow"].rtt_s == pytest.approx(0.203)


def test_pair_numbers_and_the_warm_start_come_from_the_calibration() -> None:
    from covspec.profile.pairing import LinkMeasurement

    rounds = [_round(2, 2, 0.012, 0.02, draft_s=0.004, up=28, down=40), _round(4, 1, 0.014, 0.03, draft_s=0.008,
                                                                               up=36, down=40)]  # fmt: skip
    results = [GenerationResult("", [5] * 10, {}, rounds[:1]), GenerationResult("", [5] * 20, {}, rounds[1:])]
    link = LinkMeasurement(0.001, 0.0008, 0.002, 3e6, 4e6, 1 << 20, 1 << 20, MEASURED)
    numbers = pair_numbers(results, link, 4)
    assert numbers.draft_step_s == pytest.approx(0.002) and numbers.answer_tokens == 15.0
    assert numbers.verify == Linear(pytest.approx(0.010), pytest.approx(0.001))
    assert numbers.round_overhead_s == pytest.approx(0.012) and numbers.uplink_bytes_per_s == 3e6
    warm = warm_start(numbers)
    assert warm.accept_probs == numbers.accept_probs and warm.rtt_s == numbers.round_overhead_s
    assert (warm.verify_base_s, warm.verify_slope_s) == (numbers.verify.base, numbers.verify.slope)
    with pytest.raises(ValueError, match="no draft round"):
        pair_numbers([GenerationResult("", [2], {}, [])], link, 4)
