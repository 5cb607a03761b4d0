"""The cost model: expected committed tokens against enumeration and Monte Carlo, best_plan against brute force."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from covspec.spec.cost_model import (
    CostInputs,
    EnergyInputs,
    Linear,
    Objective,
    RoundPlan,
    analytical_tokens_per_s,
    best_plan,
    burst_score,
    expected_committed,
    expected_committed_by_length,
    plan_score,
    plan_tokens_per_s,
    round_time,
    score,
)


def _enumerated_committed(accept_probs: np.ndarray) -> float:
    """Every pass/fail pattern of the K positions, weighted by its probability: accepted = the leading passes."""
    total = 0.0
    for pattern in itertools.product((True, False), repeat=len(accept_probs)):
        probability = math.prod(a if ok else 1.0 - a for a, ok in zip(accept_probs, pattern, strict=True))
        accepted = next((i for i, ok in enumerate(pattern) if not ok), len(pattern))
        total += probability * (accepted + 1)
    return total


@pytest.mark.parametrize("draft_len", [0, 1, 2, 5, 8])
def test_expected_committed_equals_enumeration(draft_len: int) -> None:
    rng = np.random.default_rng(100 + draft_len)
    for _ in range(5):
        accept_probs = rng.uniform(0.0, 1.0, draft_len)
        assert expected_committed(accept_probs) == pytest.approx(_enumerated_committed(accept_probs), rel=1e-12)


def test_expected_committed_matches_monte_carlo_of_the_accept_chain() -> None:
    rng = np.random.default_rng(7)
    accept_probs = np.array([0.9, 0.7, 0.8, 0.5, 0.95])  # [K]
    samples = 200_000
    passes = rng.random((samples, accept_probs.size)) < accept_probs  # [samples, K]
    accepted = np.where(passes.all(axis=1), accept_probs.size, np.argmin(passes, axis=1))
    committed = accepted + 1
    standard_error = committed.std() / math.sqrt(samples)
    assert abs(committed.mean() - expected_committed(accept_probs)) < 5 * standard_error


def test_expected_committed_by_length_is_every_prefix_at_once() -> None:
    rng = np.random.default_rng(3)
    accept_probs = rng.uniform(0.0, 1.0, 7)
    by_length = expected_committed_by_length(accept_probs)
    assert by_length.shape == (8,)
    assert by_length[0] == 1.0
    for k in range(8):
        assert by_length[k] == pytest.approx(expected_committed(accept_probs[:k]), rel=1e-12)
    assert expected_committed([1.0, 1.0, 1.0]) == 4.0
    assert expected_committed([0.0, 1.0, 1.0]) == 1.0


def test_acceptance_outside_unit_interval_is_rejected() -> None:
    with pytest.raises(ValueError):
        expected_committed([0.5, 1.2])
    with pytest.raises(ValueError):
        expected_committed([float("nan")])


def _random_inputs(rng: np.random.Generator, max_len: int) -> CostInputs:
    accept_probs = rng.uniform(0.0, 1.0, max_len)
    accept_probs[rng.random(max_len) < 0.1] = 1.0  # exact ones and zeros happen (greedy, identical models)
    accept_probs[rng.random(max_len) < 0.05] = 0.0
    if rng.random() < 0.5:
        verify: Linear | np.ndarray = Linear(rng.uniform(1e-3, 0.05), rng.uniform(0.0, 0.01))
    else:
        verify = np.sort(rng.uniform(1e-3, 0.08, max_len + 1))  # [N+1] measured v(K), K = 0..N
    return CostInputs(
        accept_probs=accept_probs,
        draft_step_s=rng.uniform(1e-4, 0.05),
        verify_s=verify,
        target_step_s=rng.uniform(1e-3, 0.05),
        rtt_s=rng.uniform(0.0, 0.3),
        uplink_bytes_per_s=rng.choice([math.inf, rng.uniform(1e4, 1e7)]),
        downlink_bytes_per_s=rng.choice([math.inf, rng.uniform(1e4, 1e7)]),
        draft_uplink_bytes=Linear(rng.uniform(0, 200), rng.uniform(0, 5000)),
        draft_downlink_bytes=Linear(rng.uniform(0, 200), rng.uniform(0, 50)),
        burst_uplink_bytes=Linear(rng.uniform(0, 200), 0.0),
        burst_downlink_bytes=Linear(rng.uniform(0, 200), rng.uniform(0, 8)),
        catchup_s=Linear(rng.uniform(0, 0.01), rng.uniform(0, 0.01)),
    )


def _brute_force(
    inputs: CostInputs, remaining: int, max_draft_len: int, burst_lengths: tuple[int, ...], overlap: bool
) -> list[tuple[float, RoundPlan]]:
    """Every candidate's rate, written out with loops and the formulas of the module docstring."""

    def verify(k: int) -> float:
        v = inputs.verify_s
        return v.base + v.slope * k if isinstance(v, Linear) else float(v[k])

    candidates = []
    for k in range(min(max_draft_len, remaining - 1, inputs.accept_probs.size) + 1):
        committed, survival = 1.0, 1.0
        for a in inputs.accept_probs[:k]:
            survival *= a
            committed += survival
        up = inputs.draft_uplink_bytes.base + inputs.draft_uplink_bytes.slope * k
        down = inputs.draft_downlink_bytes.base + inputs.draft_downlink_bytes.slope * k
        link = inputs.rtt_s + up / inputs.uplink_bytes_per_s + down / inputs.downlink_bytes_per_s
        drafting, in_flight = k * inputs.draft_step_s, verify(k) + link
        seconds = max(drafting, in_flight) if overlap else drafting + in_flight
        candidates.append((committed / seconds, RoundPlan(burst=False, length=k)))
    for b in burst_lengths:
        b = min(b, remaining)
        up = inputs.burst_uplink_bytes.base + inputs.burst_uplink_bytes.slope * b
        down = inputs.burst_downlink_bytes.base + inputs.burst_downlink_bytes.slope * b
        link = inputs.rtt_s + up / inputs.uplink_bytes_per_s + down / inputs.downlink_bytes_per_s
        catchup = inputs.catchup_s.base + inputs.catchup_s.slope * b
        candidates.append((b / (b * inputs.target_step_s + link + catchup), RoundPlan(burst=True, length=b)))
    return candidates


def test_best_plan_equals_brute_force_on_random_inputs() -> None:
    rng = np.random.default_rng(2024)
    chose_burst = chose_draft = 0
    for _ in range(400):
        max_len = int(rng.integers(1, 9))
        inputs = _random_inputs(rng, max_len)
        remaining = int(rng.integers(1, 24))
        bursts = tuple(int(b) for b in rng.choice([1, 4, 8, 16, 32], size=int(rng.integers(0, 3)), replace=False))
        overlap = bool(rng.random() < 0.3)
        plan, rate = best_plan(inputs, remaining, max_len, bursts, overlap=overlap)
        candidates = _brute_force(inputs, remaining, max_len, bursts, overlap)
        top_rate = max(r for r, _ in candidates)
        assert rate == pytest.approx(top_rate, rel=1e-12)
        winners = [p for r, p in candidates if r >= top_rate * (1 - 1e-12)]
        assert plan in winners
        assert rate == pytest.approx(plan_tokens_per_s(inputs, plan, overlap=overlap), rel=1e-12)
        assert plan.length <= (remaining if plan.burst else remaining - 1)
        chose_burst += plan.burst
        chose_draft += not plan.burst
    assert chose_burst > 20 and chose_draft > 20  # the random inputs exercise both kinds of plan


def test_best_plan_drafts_longer_as_the_round_trip_grows() -> None:
    """Without bursts, a longer round trip is amortised over more drafted tokens: the chosen K never shrinks."""
    rng = np.random.default_rng(11)
    for _ in range(50):
        inputs = _random_inputs(rng, 8)
        inputs = dataclasses.replace(inputs, accept_probs=np.clip(inputs.accept_probs, 0.05, 1.0))
        lengths = []
        for rtt_s in np.linspace(0.0, 2.0, 41):
            swept = dataclasses.replace(inputs, rtt_s=float(rtt_s))
            lengths.append(best_plan(swept, remaining=100, max_draft_len=8)[0].length)
        assert lengths == sorted(lengths)
    long_trip = CostInputs(
        accept_probs=np.full(8, 0.7), draft_step_s=0.01, verify_s=Linear(0.02, 0.001), target_step_s=0.02
    )
    short = best_plan(long_trip, 100, 8)[0].length
    long = best_plan(dataclasses.replace(long_trip, rtt_s=0.5), 100, 8)[0].length
    assert short == 1 and long >= 6


def test_best_plan_respects_remaining_and_min_draft_len() -> None:
    inputs = CostInputs(accept_probs=np.full(6, 0.99), draft_step_s=1e-4, verify_s=Linear(0.01), target_step_s=0.05)
    for remaining in range(1, 10):
        plan, _ = best_plan(inputs, remaining, 6, (16,))
        assert plan.length <= (remaining if plan.burst else remaining - 1)
        assert plan == RoundPlan(burst=False, length=min(6, remaining - 1))  # cheap drafting always wins here
    assert best_plan(inputs, 1, 6, (), min_draft_len=0)[0] == RoundPlan(burst=False, length=0)
    with pytest.raises(ValueError):
        best_plan(inputs, 1, 6, (), min_draft_len=1)  # nothing left to choose from
    with pytest.raises(ValueError):
        best_plan(inputs, 0, 6, (16,))


def test_round_time_and_the_analytical_bound_by_hand() -> None:
    inputs = CostInputs(
        accept_probs=np.array([0.8, 0.5]),
        draft_step_s=0.01,
        verify_s=np.array([0.02, 0.025, 0.03]),  # v(0), v(1), v(2)
        target_step_s=0.02,
        rtt_s=0.1,
        uplink_bytes_per_s=1000.0,
        downlink_bytes_per_s=2000.0,
        draft_uplink_bytes=Linear(10.0, 5.0),
        draft_downlink_bytes=Linear(20.0),
        burst_uplink_bytes=Linear(10.0),
        burst_downlink_bytes=Linear(20.0, 4.0),
        catchup_s=Linear(0.001, 0.002),
    )
    link2 = 0.1 + 20 / 1000 + 20 / 2000
    assert round_time(inputs, RoundPlan(False, 2)) == pytest.approx(0.02 + 0.03 + link2)
    assert round_time(inputs, RoundPlan(False, 2), overlap=True) == pytest.approx(0.03 + link2)
    link_burst = 0.1 + 10 / 1000 + (20 + 4 * 8) / 2000
    assert round_time(inputs, RoundPlan(True, 8)) == pytest.approx(8 * 0.02 + link_burst + 0.001 + 0.016)
    committed = 1 + 0.8 + 0.4
    bound = analytical_tokens_per_s(
        [0.8, 0.5],
        0.01,
        0.03,
        0.1,
        uplink_bytes=20,
        downlink_bytes=20,
        uplink_bytes_per_s=1000.0,
        downlink_bytes_per_s=2000.0,
    )
    assert bound == pytest.approx(committed / (0.02 + 0.03 + link2))
    assert bound == pytest.approx(plan_tokens_per_s(inputs, RoundPlan(False, 2)))


def test_overlap_hides_the_shorter_of_drafting_and_the_round_in_flight() -> None:
    rng = np.random.default_rng(5)
    for _ in range(100):
        k = int(rng.integers(0, 8))
        accept_probs = rng.uniform(0, 1, k)
        draft_s, verify_s, rtt_s = rng.uniform(1e-3, 0.05), rng.uniform(1e-3, 0.05), rng.uniform(0, 0.2)
        plain = analytical_tokens_per_s(accept_probs, draft_s, verify_s, rtt_s)
        overlapped = analytical_tokens_per_s(accept_probs, draft_s, verify_s, rtt_s, overlap=True)
        committed = expected_committed(accept_probs)
        assert plain == pytest.approx(committed / (k * draft_s + verify_s + rtt_s))
        assert overlapped == pytest.approx(committed / max(k * draft_s, verify_s + rtt_s))
        assert overlapped >= plain
    assert analytical_tokens_per_s([], 0.01, 0.02, 0.03) == pytest.approx(1 / 0.05)  # target-only rounds


def test_a_first_round_pays_only_the_drafting_that_outlasts_the_prefill() -> None:
    inputs = CostInputs(accept_probs=np.array([0.9] * 4), draft_step_s=0.01, verify_s=Linear(0.02, 0.004),
                        target_step_s=0.02, rtt_s=0.005)  # fmt: skip
    for hidden in (0.0, 0.015, 0.04, 1.0):
        first = dataclasses.replace(inputs, hidden_draft_s=hidden)
        for k in range(5):
            assert round_time(first, RoundPlan(False, k)) == pytest.approx(
                max(0.0, k * 0.01 - hidden) + 0.02 + 0.004 * k + 0.005
            )
        assert round_time(first, RoundPlan(True, 6)) == round_time(inputs, RoundPlan(True, 6))  # a burst waits alike
    # with its drafting hidden, a draft round beats the burst it loses to in later rounds
    later, _ = best_plan(inputs, 100, 4)
    first, _ = best_plan(dataclasses.replace(inputs, hidden_draft_s=0.04), 100, 4)
    assert plan_tokens_per_s(dataclasses.replace(inputs, hidden_draft_s=0.04), first) > plan_tokens_per_s(inputs, later)


def test_a_burst_past_the_answers_end_is_rated_by_the_tokens_it_will_give() -> None:
    inputs = CostInputs(accept_probs=np.array([0.9]), draft_step_s=0.01, verify_s=Linear(0.02), target_step_s=0.01,
                        rtt_s=0.02, catchup_s=Linear(0.005, 0.001))  # fmt: skip
    full = plan_tokens_per_s(inputs, RoundPlan(True, 40))
    assert burst_score(inputs, 40) == full == burst_score(inputs, 40, answer_left=40.0)
    assert full == pytest.approx(40 / (40 * 0.01 + 0.02 + 0.005 + 0.04))
    # the answer ends 5 tokens in: 5 tokens for their decoding and one round trip, no catch-up after the answer
    assert burst_score(inputs, 40, answer_left=5.0) == pytest.approx(5 / (5 * 0.01 + 0.02))
    assert burst_score(inputs, 40, answer_left=0.2) == pytest.approx(1 / (0.01 + 0.02))  # at least one token


def test_invalid_plans_and_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        RoundPlan(burst=True, length=0)
    with pytest.raises(ValueError):
        RoundPlan(burst=False, length=-1)
    with pytest.raises(ValueError):
        CostInputs(accept_probs=np.ones(2), draft_step_s=-1.0, verify_s=Linear(0.01), target_step_s=0.01)
    with pytest.raises(ValueError):
        CostInputs(
            accept_probs=np.ones(2), draft_step_s=0.01, verify_s=Linear(0.01), target_step_s=0.01, uplink_bytes_per_s=0
        )


# --------------------------------------------------------------------------------------------------------------------
# the energy objectives


def _disagreeing_inputs() -> CostInputs:
    """A drafter on a power-hungry accelerator (12 W while drafting, 4 W waiting) with middling acceptance: each
    extra draft token pays in time only while it is likely accepted, in joules sooner."""
    return CostInputs(
        accept_probs=np.full(8, 0.7), draft_step_s=0.01, verify_s=Linear(0.02, 0.001), target_step_s=0.02,
        rtt_s=0.03, draft_uplink_bytes=Linear(40, 4), draft_downlink_bytes=Linear(12, 0),
        energy=EnergyInputs(draft_w=12.0, wait_w=4.0, up_joules_per_byte=1e-5, down_joules_per_byte=2e-6),
    )  # fmt: skip


def test_round_joules_by_hand() -> None:
    inputs = _disagreeing_inputs()
    seconds = 2 * 0.01 + 0.02 + 0.002 + 0.03  # K = 2: drafting, v(2), rtt
    joules = seconds * 4.0 + 2 * 0.01 * (12.0 - 4.0) + (40 + 8) * 1e-5 + 12 * 2e-6
    assert float(inputs.draft_round_j(2)) == pytest.approx(joules)
    assert inputs.energy.joules(seconds, 0.02, 48, 12) == pytest.approx(joules)
    burst = dataclasses.replace(inputs, catchup_s=Linear(0.005, 0.001))
    burst_s = 10 * 0.02 + 0.03 + 0.015  # decode, rtt, catch-up (no burst bytes given)
    assert float(burst.burst_round_j(10)) == pytest.approx(burst_s * 4.0 + 0.015 * 8.0)
    assert float(burst.burst_round_j(10, catch_up=False)) == pytest.approx((burst_s - 0.015) * 4.0)
    assert CostInputs(np.full(2, 0.5), 0.01, Linear(0.02), 0.02).draft_round_j(1) is None


def test_the_objectives_pick_different_draft_lengths_where_energy_and_latency_disagree() -> None:
    """Latency, balanced and energy each pick the argmax of their own figure, computed here independently, and the
    three differ: drafting costs 3x the waiting power, so the energy objective drafts shortest."""
    inputs = _disagreeing_inputs()
    picks = {}
    for objective in Objective:
        figures = []
        for k in range(9):
            tokens = sum(0.7**j for j in range(k + 1))
            seconds = k * 0.01 + 0.02 + 0.001 * k + 0.03
            joules = seconds * 4.0 + k * 0.01 * 8.0 + (40 + 4 * k) * 1e-5 + 12 * 2e-6
            figures.append(
                {"latency": tokens / seconds, "energy": tokens / joules, "balanced": tokens**2 / (seconds * joules)}[
                    objective.value
                ]
            )
        plan, figure = best_plan(inputs, 100, 8, objective=objective)
        assert plan == RoundPlan(burst=False, length=int(np.argmax(figures)))
        assert figure == pytest.approx(max(figures))
        assert figure == pytest.approx(plan_score(inputs, plan, objective))
        picks[objective] = plan.length
    assert picks[Objective.ENERGY] < picks[Objective.BALANCED] < picks[Objective.LATENCY]
    assert picks == {Objective.LATENCY: 3, Objective.BALANCED: 2, Objective.ENERGY: 1}


def test_equal_powers_make_the_energy_objective_the_latency_objective() -> None:
    """With drafting no dearer than waiting and no radio, joules are seconds times a constant: same choice."""
    inputs = dataclasses.replace(_disagreeing_inputs(), energy=EnergyInputs(draft_w=4.0, wait_w=4.0))
    for remaining in (2, 5, 100):
        plans = {o: best_plan(inputs, remaining, 8, [16], objective=o)[0] for o in Objective}
        assert len(set(plans.values())) == 1


def test_an_energy_objective_needs_energy_inputs() -> None:
    inputs = dataclasses.replace(_disagreeing_inputs(), energy=None)
    with pytest.raises(ValueError, match="needs the round's joules"):
        best_plan(inputs, 100, 8, objective=Objective.ENERGY)
    with pytest.raises(ValueError, match="must be >= wait_w"):
        EnergyInputs(draft_w=1.0, wait_w=2.0)
    with pytest.raises(ValueError, match="finite"):
        EnergyInputs(draft_w=math.inf, wait_w=2.0)
    assert score(Objective.BALANCED, 4.0, 2.0, 8.0) == pytest.approx(1.0)  # 4^2 / (2 * 8)
