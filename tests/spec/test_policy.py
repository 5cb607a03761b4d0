"""Drafting policies, fed constructed rounds: what they plan, how they gate, what they learn and how fast."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pytest

from covspec.spec.cost_model import CostInputs, EnergyInputs, Linear, Objective, best_plan
from covspec.spec.policy import (
    CostConfig,
    CostPolicy,
    DraftPolicy,
    FixedPolicy,
    MarginConfig,
    MarginPolicy,
    PolicyKind,
    RoundObservation,
    RoundPlan,
    WarmStart,
    draft_margin,
    make_policy,
)

# --------------------------------------------------------------------------------------------------------------------
# a constructed session: the device loop's side of the interface, with known costs


@dataclass
class Scenario:
    """Known per-session costs; acceptance is `accept` per position whatever the margin unless a threshold is set."""

    accept: float = 0.8
    draft_step_s: float = 0.005
    verify_base_s: float = 0.02
    verify_per_token_s: float = 0.002
    target_step_s: float = 0.02
    catchup_per_token_s: float = 0.001
    rtt_s: float = 0.01
    seconds_per_byte: float = 1e-7
    jitter_s: float = 0.0005

    def link_s(self, total_bytes: int, rng: np.random.Generator) -> float:
        return self.rtt_s + total_bytes * self.seconds_per_byte + abs(rng.normal(0.0, self.jitter_s))


def play_round(policy: DraftPolicy, scenario: Scenario, rng: np.random.Generator, remaining: int = 1000) -> RoundPlan:
    """One round as the device loop runs it: plan, draft with gating, observe."""
    plan = policy.plan(remaining)
    if plan.burst:
        tokens = plan.length
        verify_s = tokens * scenario.target_step_s
        up, down = 16, 8 + 4 * tokens
        observation = RoundObservation(
            burst=True,
            drafted=0,
            accepted=0,
            committed=tokens,
            draft_s=0.0,
            verify_s=verify_s,
            exchange_s=verify_s + scenario.link_s(up + down, rng),
            uplink_bytes=up,
            downlink_bytes=down,
            shadow_matches=tuple(bool(m) for m in rng.random(tokens) < scenario.accept),
            catchup_s=tokens * scenario.catchup_per_token_s,
        )
    else:
        margins: list[float] = []
        for position in range(plan.length):
            margin = float(rng.random())
            if not policy.keep_drafting(position, margin):
                break
            margins.append(margin)
        accepted = 0
        while accepted < len(margins) and rng.random() < scenario.accept:
            accepted += 1
        drafted = len(margins)
        verify_s = scenario.verify_base_s + scenario.verify_per_token_s * drafted
        up, down = 20 + 4 * drafted, 12
        observation = RoundObservation(
            burst=False,
            drafted=drafted,
            accepted=accepted,
            committed=min(accepted + 1, remaining),
            draft_s=drafted * scenario.draft_step_s,
            verify_s=verify_s,
            exchange_s=verify_s + scenario.link_s(up + down, rng),
            uplink_bytes=up,
            downlink_bytes=down,
            margins=tuple(margins),
        )
    policy.observe(observation)
    return plan


def draft_round(drafted: int, accepted: int, margins: tuple[float, ...] = ()) -> RoundObservation:
    return RoundObservation(
        burst=False,
        drafted=drafted,
        accepted=accepted,
        committed=accepted + 1,
        draft_s=0.001 * drafted,
        verify_s=0.02,
        exchange_s=0.03,
        uplink_bytes=20,
        downlink_bytes=10,
        margins=margins,
    )


# --------------------------------------------------------------------------------------------------------------------
# interface pieces


def test_draft_margin_is_top1_minus_top2_probability() -> None:
    assert draft_margin(np.log([0.5, 0.3, 0.2])) == pytest.approx(0.2)
    assert draft_margin(np.log([0.1, 0.6, 0.3])) == pytest.approx(0.3)
    assert draft_margin(np.zeros(10)) == pytest.approx(0.0)
    assert draft_margin(np.array([3.0])) == 1.0
    logits = np.random.default_rng(0).normal(size=50)
    assert draft_margin(logits + 1000.0) == pytest.approx(draft_margin(logits))  # no overflow, shift-invariant
    assert draft_margin(np.array([0.0, -np.inf, -np.inf])) == 1.0
    with pytest.raises(ValueError):
        draft_margin(np.array([0.0, np.nan]))


def test_observations_are_validated() -> None:
    with pytest.raises(ValueError):
        draft_round(drafted=2, accepted=3)
    with pytest.raises(ValueError):
        draft_round(drafted=3, accepted=1, margins=(0.5,))
    with pytest.raises(ValueError):
        RoundObservation(True, 2, 0, 4, 0.0, 0.1, 0.2, 10, 10)  # a burst drafts nothing
    assert draft_round(4, 1).link_s == pytest.approx(0.01)


def test_make_policy_builds_each_kind() -> None:
    assert isinstance(make_policy(PolicyKind.FIXED, draft_len=3), FixedPolicy)
    assert isinstance(make_policy("margin", draft_len=3), MarginPolicy)
    cost = make_policy(PolicyKind.COST, draft_len=3, cost=CostConfig(max_burst=4))
    assert isinstance(cost, CostPolicy) and cost.config.max_burst == 4
    for kind in PolicyKind:
        assert isinstance(make_policy(kind, draft_len=3), DraftPolicy)
    with pytest.raises(ValueError):
        make_policy("adaptive", draft_len=3)


def test_fixed_policy_never_bursts_and_respects_remaining() -> None:
    policy = FixedPolicy(draft_len=5)
    rng = np.random.default_rng(1)
    for remaining in [1, 2, 3, 6, 7, 100]:
        assert policy.plan(remaining) == RoundPlan(burst=False, length=min(5, remaining - 1))
    for _ in range(30):  # slow drafter, long trip: a cost policy would burst here, the fixed one must not
        plan = play_round(policy, Scenario(accept=0.1, draft_step_s=0.05, rtt_s=0.3), rng)
        assert plan == RoundPlan(burst=False, length=5)
    assert policy.keep_drafting(4, 0.0)
    assert policy.stats.burst_rounds == 0 and policy.stats.draft_rounds == 30
    with pytest.raises(ValueError):
        policy.plan(0)


@pytest.mark.parametrize("kind", list(PolicyKind))
def test_no_plan_violates_remaining(kind: PolicyKind) -> None:
    rng = np.random.default_rng(17)
    for _ in range(6):
        policy = make_policy(
            kind, draft_len=int(rng.integers(1, 8)), cost=CostConfig(max_burst=int(rng.integers(0, 20)))
        )
        scenario = Scenario(
            accept=float(rng.uniform(0.05, 0.99)),
            draft_step_s=float(rng.uniform(1e-3, 0.06)),
            rtt_s=float(rng.uniform(0.0, 0.4)),
        )
        for _ in range(60):
            remaining = int(rng.integers(1, 20))
            plan = play_round(policy, scenario, rng, remaining)
            if plan.burst:
                assert 1 <= plan.length <= remaining
            else:
                assert 0 <= plan.length <= remaining - 1


# --------------------------------------------------------------------------------------------------------------------
# margin policy


def _calibrated_margin_policy(threshold: float, rng: np.random.Generator) -> MarginPolicy:
    """A margin policy fed blocks whose tokens are accepted exactly when the drafter's margin exceeds threshold."""
    policy = MarginPolicy(max_draft_len=5)
    for _ in range(200):
        margins = tuple(float(m) for m in rng.random(5))
        accepted = next((i for i, m in enumerate(margins) if m <= threshold), 5)
        policy.observe(draft_round(5, accepted, margins))
    return policy


def test_margin_policy_does_not_gate_before_it_has_seen_enough() -> None:
    policy = MarginPolicy(max_draft_len=4)
    policy.observe(draft_round(4, 0, (0.01, 0.01, 0.01, 0.01)))  # one reject: far below min_observations
    assert not policy.calibration.ready
    assert policy.plan(100) == RoundPlan(burst=False, length=4)
    assert all(policy.keep_drafting(position, 0.0) for position in range(4))
    assert policy.plan(3) == RoundPlan(burst=False, length=2)


def test_margin_policy_learns_a_threshold_between_rejected_and_accepted_margins() -> None:
    policy = _calibrated_margin_policy(0.45, np.random.default_rng(21))
    calibration = policy.calibration
    assert calibration.ready
    assert calibration.accept_probability(0.1) < 0.1
    assert calibration.accept_probability(0.85) > 0.9
    edges = calibration.bin_edges
    probs = calibration.accept_probabilities()
    learned = edges[int(np.argmax(probs >= 0.5))]  # lower edge of the first bin more likely accepted than not
    assert 0.3 <= learned <= 0.5
    policy.plan(100)
    assert policy.keep_drafting(0, 0.9) and policy.keep_drafting(1, 0.8) and policy.keep_drafting(2, 0.95)
    assert not policy.keep_drafting(3, 0.1)  # a low-margin token ends the block
    policy.plan(100)
    assert policy.keep_drafting(0, 0.05)  # min_length: the first token is always kept
    assert not policy.keep_drafting(1, 0.9)  # the block is already likely lost at position 0
    assert policy.stats.gated_stops == 2


def test_margin_policy_stops_when_block_survival_falls_below_the_target() -> None:
    """Acceptance 0.6 whatever the margin: P(second token accepted) = 0.36 < 0.5, so blocks stop after one token;
    with target 0.3 they run to two (0.36) and stop at three (0.216)."""
    rng = np.random.default_rng(5)
    observations = []
    for _ in range(2000):
        margins = tuple(float(m) for m in rng.random(4))
        accepted = next((i for i in range(4) if rng.random() >= 0.6), 4)
        observations.append(draft_round(4, accepted, margins))
    for target, kept in [(0.5, 1), (0.3, 2)]:
        policy = MarginPolicy(max_draft_len=4, config=MarginConfig(target=target))
        for observation in observations:
            policy.observe(observation)
        policy.plan(100)
        decisions = [policy.keep_drafting(position, 0.5) for position in range(4)]
        assert decisions.index(False) == kept


# --------------------------------------------------------------------------------------------------------------------
# cost policy


def _run(policy: CostPolicy, scenario: Scenario, rounds: int, rng: np.random.Generator) -> list[RoundPlan]:
    return [play_round(policy, scenario, rng) for _ in range(rounds)]


def test_cost_policy_measures_first_with_a_full_draft_round() -> None:
    policy = CostPolicy(max_draft_len=5)
    assert policy.cost_inputs() is None
    assert policy.plan(100) == RoundPlan(burst=False, length=5)
    assert policy.plan(3) == RoundPlan(burst=False, length=2)
    assert policy.keep_drafting(4, 0.0)  # nothing measured, nothing gated
    for _ in range(policy.config.warmup_rounds):
        assert not policy.measured
        assert policy.plan(100) == RoundPlan(burst=False, length=5)
        policy.observe(draft_round(5, 0))  # even all-rejected rounds do not end the measuring early
    assert policy.measured and policy.cost_inputs() is not None


def test_cost_policy_bursts_with_a_slow_drafter_and_a_long_round_trip() -> None:
    rng = np.random.default_rng(31)
    policy = CostPolicy(max_draft_len=4, config=CostConfig(max_burst=16, probe_every=8))  # explicit: not defaults
    plans = _run(policy, Scenario(accept=0.5, draft_step_s=0.05, rtt_s=0.2), 40, rng)
    warmup = policy.config.warmup_rounds
    assert plans[:warmup] == [RoundPlan(burst=False, length=4)] * warmup
    later = plans[warmup:]
    drafts = sum(not plan.burst for plan in later)
    assert drafts == policy.stats.probe_rounds  # every draft round after the first is a probe
    assert 3 <= policy.stats.probe_rounds <= 5  # one in probe_every + 1 = 9 rounds re-measures the drafter
    assert all(plan.length == 16 for plan in later if plan.burst)


def test_cost_policy_drafts_with_a_fast_drafter_and_good_acceptance() -> None:
    rng = np.random.default_rng(32)
    policy = CostPolicy(max_draft_len=4)
    plans = _run(policy, Scenario(accept=0.9, draft_step_s=0.002, rtt_s=0.02), 40, rng)
    assert not any(plan.burst for plan in plans)
    assert sum(plan.length == 4 for plan in plans) >= 36  # an unlucky streak may shorten a few rounds
    assert policy.stats.gated_stops < 10  # the marginal rule keeps nearly every cheap, likely token
    inputs = policy.cost_inputs()
    assert inputs is not None
    assert inputs.draft_step_s == pytest.approx(0.002)
    assert policy.acceptance.pooled_rate() == pytest.approx(0.9, abs=0.12)


def test_cost_policy_drafts_a_first_round_its_drafting_hides_behind_the_prefill() -> None:
    """A drafter too slow to pay in later rounds still drafts a generation's first round when earlier first rounds
    showed their drafting cost nothing (they waited for the edge's prefill anyway)."""
    rng = np.random.default_rng(34)
    policy = CostPolicy(max_draft_len=4)
    scenario = Scenario(accept=0.7, draft_step_s=0.03, rtt_s=0.01)
    plans = _run(policy, scenario, 20, rng)
    assert plans[-1].burst and policy.plan(100, first_round=True).burst  # nothing seen hidden yet: no difference
    for _ in range(3):  # first rounds whose 4 drafts (0.12 s) still left them waiting 0.05 s for the prefill
        first = replace(draft_round(4, 3), draft_s=4 * scenario.draft_step_s, prefill_wait_s=0.05)
        policy.observe(first)
    assert policy.first_round_free.value == pytest.approx(0.17)
    assert not policy.plan(100, first_round=True).burst
    assert policy.plan(100).burst  # later rounds still burst
    policy.observe(replace(draft_round(4, 3), prefill_wait_s=0.0))  # a first round that did not wait: no evidence
    assert policy.first_round_free.value < 0.17


def test_cost_policy_plans_short_answers_by_their_usual_length() -> None:
    """Bursts of up to 40 tokens for answers of ~5: the burst's round trip buys 5 tokens, not 40, and drafts past the
    answer's likely end are not planned. A policy told where generations start learns the usual length; one that
    is not plans as if every answer ran to max_new_tokens."""
    told, blind = CostPolicy(max_draft_len=6), CostPolicy(max_draft_len=6)

    def drafted(k: int, accepted: int, verify_s: float) -> RoundObservation:
        return replace(draft_round(k, accepted), draft_s=0.0001 * k, verify_s=verify_s, exchange_s=verify_s + 0.002)

    burst = RoundObservation(burst=True, drafted=0, accepted=0, committed=5, draft_s=0.0, verify_s=0.005,
                             exchange_s=0.007, uplink_bytes=16, downlink_bytes=28)  # fmt: skip
    warmup = [drafted(6, 6, 0.0028), drafted(2, 2, 0.0016), drafted(4, 4, 0.0022), drafted(6, 5, 0.0028)]
    for observation in warmup + [burst] * 4:  # one round per generation
        for policy in (told, blind):
            policy.plan(40, first_round=policy is told)
            policy.observe(observation)
    assert blind.answer_length.value is None and blind.plan(40).burst
    assert told.answer_length.value == pytest.approx(5.0, rel=0.1)
    plan = told.plan(40, first_round=True)
    assert not plan.burst and plan.length < told.max_draft_len  # drafting, and not past the answer's likely end
    for _ in range(2):
        told.observe(drafted(4, 4, 0.0022))
    assert told.answer_left() is None  # 10 tokens in, longer than usual: the end is not guessed


def test_cost_policy_follows_the_round_trip_up_and_back_down() -> None:
    rng = np.random.default_rng(33)
    policy = CostPolicy(max_draft_len=4)
    near, far = Scenario(accept=0.85, rtt_s=0.01), Scenario(accept=0.85, rtt_s=0.3)
    before = _run(policy, near, 15, rng)
    assert not any(plan.burst for plan in before[3:])
    during = _run(policy, far, 20, rng)
    first_burst = next(i for i, plan in enumerate(during) if plan.burst)
    assert first_burst <= 3
    assert sum(plan.burst for plan in during[first_burst:]) >= len(during[first_burst:]) - 3  # probes aside
    after = _run(policy, near, 20, rng)
    first_draft = next(i for i, plan in enumerate(after) if not plan.burst)
    assert first_draft <= 7
    assert not any(plan.burst for plan in after[first_draft:])


def test_shadow_matches_bring_the_cost_policy_back_to_drafting() -> None:
    """Probing off: only the bursts' shadow matches can show that the drafter has become good."""
    rng = np.random.default_rng(34)
    policy = CostPolicy(max_draft_len=4, config=CostConfig(probe_every=10_000))
    poor = Scenario(accept=0.1, draft_step_s=0.003, verify_per_token_s=0.001, rtt_s=0.03)
    good = Scenario(accept=0.95, draft_step_s=0.003, verify_per_token_s=0.001, rtt_s=0.03)
    plans = _run(policy, poor, 20, rng)
    assert all(plan.burst for plan in plans[policy.config.warmup_rounds :])
    assert policy.acceptance.probabilities()[0] < 0.3
    plans = _run(policy, good, 15, rng)
    first_draft = next(i for i, plan in enumerate(plans) if not plan.burst)
    assert first_draft <= 8
    assert sum(plan.burst for plan in plans[first_draft:]) <= 1  # an unlucky round may cost one more burst
    estimates = policy.acceptance.probabilities()
    assert estimates[0] > 0.5 and estimates[1:].min() > 0.75  # memory is ~20 blocks, position 1 held the most


def test_cost_policy_gates_low_margin_tokens_once_calibrated() -> None:
    """Margins below 0.3 are always rejected: the marginal rule drops them, keeps confident tokens."""
    rng = np.random.default_rng(35)
    policy = CostPolicy(max_draft_len=4)
    for _ in range(60):
        margins = tuple(float(m) for m in rng.random(4))
        accepted = next((i for i, m in enumerate(margins) if m < 0.3 or rng.random() > 0.95), 4)
        policy.observe(draft_round(4, accepted, margins))
    assert policy.calibration.ready
    assert policy.plan(100) == RoundPlan(burst=False, length=4)
    assert policy.keep_drafting(0, 0.9) and policy.keep_drafting(1, 0.8)
    assert not policy.keep_drafting(2, 0.05)
    policy.plan(100)
    assert all(policy.keep_drafting(position, 0.9) for position in range(4))
    assert policy.stats.gated_stops == 1


def test_cost_policy_without_bursts_never_bursts() -> None:
    rng = np.random.default_rng(36)
    policy = CostPolicy(max_draft_len=4, config=CostConfig(max_burst=0))
    plans = _run(policy, Scenario(accept=0.2, draft_step_s=0.05, rtt_s=0.3), 30, rng)
    assert not any(plan.burst for plan in plans)
    assert math.isfinite(policy.last_rate or math.inf)


class _Constructed(CostPolicy):
    """A cost policy planning on given model inputs (what its estimates would be)."""

    def __init__(self, inputs, draft_margin: float) -> None:
        super().__init__(max_draft_len=4, config=CostConfig(max_burst=32, draft_margin=draft_margin))
        self.given = inputs

    def cost_inputs(self):
        return self.given


@pytest.mark.parametrize("draft_step_s, bursts", [(0.0005, True), (0.0002, False)])
def test_drafting_must_beat_a_burst_by_the_margin(draft_step_s, bursts) -> None:
    """Drafting ~5% faster than a burst is not worth leaving target-only decoding for; ~30% faster is."""
    from covspec.spec.cost_model import CostInputs, Linear, best_plan, plan_tokens_per_s

    inputs = CostInputs(
        accept_probs=np.full(4, 0.8), draft_step_s=draft_step_s, verify_s=Linear(0.0015, 0.0001),
        target_step_s=0.0015, rtt_s=0.001, catchup_s=Linear(0.0005, 0.0),
    )  # fmt: skip
    draft_plan, draft_rate = best_plan(inputs, 40, 4)
    burst_rate = plan_tokens_per_s(inputs, RoundPlan(burst=True, length=32))
    assert (draft_rate / burst_rate < 1.1) is bursts and draft_rate > burst_rate  # drafting is faster either way
    assert _Constructed(inputs, 0.1).plan(40).burst is bursts
    assert _Constructed(inputs, 0.0).plan(40) == draft_plan  # no margin: the model's own best


# --------------------------------------------------------------------------------------------------------------------
# the energy objectives and the warm start

_HUNGRY = EnergyInputs(draft_w=12.0, wait_w=4.0)  # a drafter on an accelerator: 3x the waiting draw


def test_the_energy_objectives_draft_shorter_blocks_from_the_same_rounds() -> None:
    """The same session (acceptance 0.85, 10 ms drafter, 20 ms + 1 ms/K verify, 30 ms round trip, a drafter that
    draws 10 W against 4 W waiting) planned online by each objective: every extra draft pays in time for longer
    than it pays in joules, so energy drafts the shortest blocks. (Balanced lies between per the model, but its
    online choice between K = 3 and 4 is within the estimates' noise, so only its order against energy is asserted.)"""
    scenario = Scenario(accept=0.85, draft_step_s=0.01, verify_base_s=0.02, verify_per_token_s=0.001, rtt_s=0.03)
    lengths = {}
    for objective in Objective:
        rng = np.random.default_rng(41)
        policy = CostPolicy(6, CostConfig(max_burst=0, objective=objective, energy=EnergyInputs(10.0, 4.0)))
        plans = _run(policy, scenario, 100, rng)[policy.config.warmup_rounds :]
        lengths[objective] = float(np.mean([plan.length for plan in plans]))
    assert lengths[Objective.ENERGY] < 2.5 and lengths[Objective.LATENCY] > 3.5
    assert lengths[Objective.ENERGY] + 1 < lengths[Objective.BALANCED]


def test_the_energy_objective_stops_a_block_where_latency_goes_on() -> None:
    """The marginal rule under each objective: a second token is worth its seconds, not its joules."""
    inputs = CostInputs(
        accept_probs=np.full(6, 0.7), draft_step_s=0.01, verify_s=Linear(0.02, 0.001), target_step_s=0.02,
        rtt_s=0.03, energy=_HUNGRY,
    )  # fmt: skip

    class Given(CostPolicy):
        def cost_inputs(self):
            return inputs

    kept = {}
    for objective in (Objective.LATENCY, Objective.ENERGY, Objective.BALANCED):
        policy = Given(6, CostConfig(max_burst=0, objective=objective, energy=_HUNGRY))
        policy.plan(100)
        kept[objective] = next(p for p in range(6) if not policy.keep_drafting(p, 0.5))
    assert kept == {Objective.LATENCY: 3, Objective.BALANCED: 2, Objective.ENERGY: 1}  # as best_plan picks K


def test_an_energy_objective_without_watts_is_refused() -> None:
    with pytest.raises(ValueError, match="needs the device's energy inputs"):
        CostPolicy(4, CostConfig(objective=Objective.BALANCED))


def test_a_warm_start_plans_from_the_first_round() -> None:
    warm = WarmStart(accept_probs=(0.9, 0.85, 0.8), draft_step_s=0.002, verify_base_s=0.02, verify_slope_s=0.001,
                     rtt_s=0.02)  # fmt: skip
    cold = CostPolicy(6)
    policy = make_policy(PolicyKind.COST, draft_len=6, warm=warm)
    assert isinstance(policy, CostPolicy) and policy.measured and not cold.measured
    inputs = policy.cost_inputs()
    assert inputs.draft_step_s == pytest.approx(0.002)
    assert inputs.verify_time(0) == pytest.approx(0.02, rel=0.01)
    assert inputs.verify_time(6) == pytest.approx(0.026, rel=0.05)
    assert inputs.rtt_s == pytest.approx(0.02)
    assert inputs.accept_probs[:3] == pytest.approx([0.9, 0.85, 0.8], abs=0.1)  # shrunk a little to the pooled rate
    plan = policy.plan(100)
    assert plan == best_plan(inputs, 100, 6)[0] and not plan.burst  # the model's plan, not a warm-up round
    assert (
        policy.last_rate is not None and cold.plan(100) == RoundPlan(burst=False, length=6) and cold.last_rate is None
    )


def test_a_wrong_warm_start_gives_way_to_what_the_session_measures() -> None:
    warm = WarmStart(accept_probs=(0.95,) * 4, draft_step_s=0.001, verify_base_s=0.02, verify_slope_s=0.0,
                     rtt_s=0.01)  # fmt: skip
    policy = CostPolicy(4, CostConfig(max_burst=0), warm)
    assert policy.acceptance.pooled_rate() > 0.85
    _run(policy, Scenario(accept=0.2, draft_step_s=0.004), 60, np.random.default_rng(42))
    assert policy.acceptance.pooled_rate() < 0.4  # true 0.2, seen through censoring and the policy's 0.6 prior
    assert policy.cost_inputs().draft_step_s == pytest.approx(0.004, rel=0.05)
    with pytest.raises(ValueError, match="accept_probs"):
        WarmStart(accept_probs=(), draft_step_s=0.0, verify_base_s=0.0, verify_slope_s=0.0, rtt_s=0.0)
