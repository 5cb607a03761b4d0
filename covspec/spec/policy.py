"""Drafting policies: what the device does each round (draft up to K, or ask for a burst), pure and transport-free.

The device loop asks ``plan(remaining)`` before each round, ``keep_drafting(position, margin)`` before keeping each
draft token, and reports the round with ``observe(RoundObservation)``. Three policies (:class:`PolicyKind`):

- ``fixed``: always K = draft_len, the baseline every paper reports;
- ``margin``: K = draft_len, cut short when the drafter's confidence, calibrated online against the verdicts, says
  the block's next token is unlikely to be accepted;
- ``cost``: adaptive draft length and verification frequency from :mod:`covspec.spec.cost_model` (our
  reconstruction of CoVSpec's; its formulas are not public), fed by per-session online estimates, bursting when no
  draft length is expected to beat the target alone.

The estimators they learn from live in :mod:`covspec.spec.estimators`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np

from covspec.spec.cost_model import (
    CostInputs,
    EnergyInputs,
    Linear,
    Objective,
    RoundPlan,
    best_plan,
    burst_score,
)
from covspec.spec.estimators import (
    CalibrationConfig,
    DecayedLine,
    DecayedRatio,
    LinkEstimate,
    MarginCalibration,
    PositionAcceptance,
    check_decay,
)

__all__ = [
    "CostConfig",
    "CostPolicy",
    "DraftPolicy",
    "FixedPolicy",
    "MarginConfig",
    "MarginPolicy",
    "PolicyKind",
    "PolicyStats",
    "RoundObservation",
    "RoundPlan",
    "WarmStart",
    "draft_margin",
    "make_policy",
]


class PolicyKind(str, enum.Enum):
    """`covspec run --policy`: fixed draft length, margin gating, or the cost model (DESIGN.md §2)."""

    FIXED = "fixed"
    MARGIN = "margin"
    COST = "cost"


# --------------------------------------------------------------------------------------------------------------------
# the interface the device loop uses


@dataclass(frozen=True)
class RoundObservation:
    """What one finished round measured, as the device saw it.

    ``drafted``/``accepted``: K and drafts accepted (0 for a burst). ``committed``: tokens the round committed.
    ``draft_s``: device seconds drafting. ``verify_s``: the edge's reported target compute (verify forward, or the
    burst's decode). ``exchange_s``: device wall seconds from sending the round to its verdict (includes verify_s),
    plus the device loop's own per-round time (planning, applying, observing), which costs like the link does.
    ``margins``: drafter margin (:func:`draft_margin`) of each drafted position, empty when not measured.
    ``shadow_matches``: burst only, whether the drafter's greedy choice equalled each burst token.
    ``catchup_s``: device seconds the drafter spent catching up on a burst's tokens.
    ``prefill_wait_s``: a generation's first round only, how long it waited at the edge for the target's prefill
    after it was sent (None for later rounds): its drafting was hidden behind that prefill.
    """

    burst: bool
    drafted: int
    accepted: int
    committed: int
    draft_s: float
    verify_s: float
    exchange_s: float
    uplink_bytes: int
    downlink_bytes: int
    margins: tuple[float, ...] = ()
    shadow_matches: tuple[bool, ...] = ()
    catchup_s: float = 0.0
    prefill_wait_s: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.accepted <= self.drafted:
            raise ValueError(f"need 0 <= accepted <= drafted, got accepted={self.accepted}, drafted={self.drafted}")
        if self.burst and (self.drafted or self.margins):
            raise ValueError("a burst drafts nothing: drafted must be 0 and margins empty")
        if not self.burst and self.shadow_matches:
            raise ValueError("shadow_matches belong to bursts only")
        if self.margins and len(self.margins) != self.drafted:
            raise ValueError(f"margins has {len(self.margins)} entries for {self.drafted} drafted tokens")
        if self.committed < 0 or self.uplink_bytes < 0 or self.downlink_bytes < 0:
            raise ValueError("committed and byte counts must be >= 0")
        if min(self.draft_s, self.verify_s, self.exchange_s, self.catchup_s, self.prefill_wait_s or 0.0) < 0:
            raise ValueError("durations must be >= 0")

    @property
    def link_s(self) -> float:
        """Seconds the round spent on the link (and per-round overheads): exchange minus the edge's compute."""
        return max(0.0, self.exchange_s - self.verify_s)


@runtime_checkable
class DraftPolicy(Protocol):
    """What the device loop needs of a policy. ``uses_margins``: whether ``keep_drafting`` and the observed margins
    matter to it (the drafter computes a margin, a softmax over the vocabulary, per token only then)."""

    uses_margins: bool

    def plan(self, remaining: int, first_round: bool = False) -> RoundPlan:
        """Next round; ``remaining`` >= 1 tokens still allowed. Draft length <= remaining - 1, burst <= remaining.
        ``first_round``: a generation's first, which goes up while the edge is still prefilling."""
        ...

    def keep_drafting(self, position: int, margin: float) -> bool:
        """Before keeping the draft token at 0-based ``position``: False ends the block there (the token is dropped)."""
        ...

    def observe(self, observation: RoundObservation) -> None:
        """Learn from a finished round."""
        ...


@dataclass
class PolicyStats:
    """Counters of a policy's decisions over a session (logging and metrics read them)."""

    draft_rounds: int = 0
    burst_rounds: int = 0
    probe_rounds: int = 0  # draft rounds planned only to re-measure the drafter while bursting
    gated_stops: int = 0  # blocks ended early by keep_drafting

    def record(self, observation: RoundObservation) -> None:
        if observation.burst:
            self.burst_rounds += 1
        else:
            self.draft_rounds += 1


def draft_margin(logits_row: np.ndarray) -> float:
    """Top-1 minus top-2 probability of softmax(logits) at temperature 1, in [0, 1]: the drafter's confidence.

    logits_row: [V] drafter logits at one position. Computed without forming the softmax's quotient per entry, so
    large logits do not overflow. A one-word vocabulary is fully confident (1.0).
    """
    row = np.asarray(logits_row, dtype=np.float64).reshape(-1)
    if row.size == 0:
        raise ValueError("logits_row is empty")
    if row.size == 1:
        return 1.0
    second, first = np.partition(row, row.size - 2)[-2:]
    if not (np.isfinite(first) and not np.isnan(second)):
        raise ValueError("logits_row needs a finite maximum and no NaN")
    normaliser = np.exp(row - first).sum()  # 1 / p_top1
    return float((1.0 - np.exp(second - first)) / normaliser)


def _check_remaining(remaining: int) -> None:
    if remaining < 1:
        raise ValueError(f"remaining must be >= 1, got {remaining}")


# --------------------------------------------------------------------------------------------------------------------
# policies


class FixedPolicy:
    """Always draft ``draft_len`` tokens (fewer near the end); never bursts, never gates."""

    uses_margins = False

    def __init__(self, draft_len: int) -> None:
        if draft_len < 0:
            raise ValueError(f"draft_len must be >= 0, got {draft_len}")
        self.draft_len = draft_len
        self.stats = PolicyStats()

    def plan(self, remaining: int, first_round: bool = False) -> RoundPlan:
        _check_remaining(remaining)
        return RoundPlan(burst=False, length=min(self.draft_len, remaining - 1))

    def keep_drafting(self, position: int, margin: float) -> bool:
        return True

    def observe(self, observation: RoundObservation) -> None:
        self.stats.record(observation)


@dataclass(frozen=True)
class MarginConfig:
    """Options of :class:`MarginPolicy`.

    ``target``: a block stops before the first token whose estimated chance of being accepted, P(token accepted |
    its margin) × P(every earlier token of the block accepted), falls below it (0.5: stop once a token is more
    likely wasted than kept). ``min_length``: tokens always kept, so a round verifies at least this much draft.
    """

    target: float = 0.5
    min_length: int = 1
    calibration: CalibrationConfig = CalibrationConfig()


class MarginPolicy:
    """Draft up to ``max_draft_len``; stop a block when the calibrated margin says the next token is a likely loss.

    Nothing is gated until the calibration has seen ``calibration.min_observations`` verdicts.
    """

    uses_margins = True

    def __init__(self, max_draft_len: int, config: MarginConfig | None = None) -> None:
        if max_draft_len < 1:
            raise ValueError(f"max_draft_len must be >= 1, got {max_draft_len}")
        self.max_draft_len = max_draft_len
        self.config = config or MarginConfig()
        if not 0 <= self.config.target <= 1 or self.config.min_length < 0:
            raise ValueError("target must lie in [0, 1] and min_length be >= 0")
        self.calibration = MarginCalibration(self.config.calibration)
        self.stats = PolicyStats()
        self._survival = 1.0  # estimated P(every token kept so far in this block is accepted)

    def plan(self, remaining: int, first_round: bool = False) -> RoundPlan:
        _check_remaining(remaining)
        self._survival = 1.0
        return RoundPlan(burst=False, length=min(self.max_draft_len, remaining - 1))

    def keep_drafting(self, position: int, margin: float) -> bool:
        if position == 0:
            self._survival = 1.0
        if not self.calibration.ready:
            return True
        chance = self._survival * self.calibration.accept_probability(margin)
        if position >= self.config.min_length and chance < self.config.target:
            self.stats.gated_stops += 1
            return False
        self._survival = chance
        return True

    def observe(self, observation: RoundObservation) -> None:
        self.stats.record(observation)
        if not observation.burst and observation.margins:
            self.calibration.record(observation.margins, observation.accepted)


@dataclass(frozen=True)
class CostConfig:
    """Options of :class:`CostPolicy` (defaults live here only; the CLI reads them)."""

    max_burst: int = 128  # tokens asked for in a burst (the edge's default cap); 0 disables bursts
    # drafting must beat a burst (target-only decoding) by this fraction to be chosen: a burst never loses against
    # the target alone, while the model's gain from drafting is an estimate (a short answer ends a block early)
    draft_margin: float = 0.1
    probe_every: int = 32  # after this many bursts in a row, one draft round re-measures the drafter
    warmup_rounds: int = 3  # draft rounds of max_draft_len that measure before the model plans (one verdict is noise)
    acceptance_prior: float = 0.6  # Beta prior mean of the per-position acceptance
    acceptance_prior_weight: float = 4.0  # its pseudo-trials (each position also shrinks to the pooled rate by this)
    acceptance_decay: float = 0.95  # per-block forgetting of acceptance evidence (a burst's shadow holds many blocks)
    shadow_weight: float = 1.0  # a shadow block's weight relative to a verified block
    timing_decay: float = 0.9  # per-round forgetting of drafter, verify, target, catch-up, bytes, bandwidth estimates
    link_decay: float = 0.5  # per-round forgetting of the round trip: small, so a changed delay is followed fast
    bandwidth_prior_bytes: float = 256.0  # byte differences below about this say nothing about bandwidth
    burst_token_bytes: float = 4.0  # downlink bytes per burst token assumed before a burst was seen
    calibration: CalibrationConfig = CalibrationConfig()  # the margin calibration keep_drafting uses
    objective: Objective = Objective.LATENCY  # what a plan maximises: tokens/s, tokens/J, or both (cost_model)
    energy: EnergyInputs | None = None  # the device's watts and radio joules; the energy objectives need them


@dataclass(frozen=True)
class WarmStart:
    """What a calibration measured on this pair and link (`covspec pair`), so that a cost policy plans from its
    first round instead of drafting ``warmup_rounds`` blind rounds. Seeded as ``weight`` rounds' worth of evidence,
    so the session's own rounds outweigh it within a few rounds (the estimates forget at their usual decay).

    ``accept_probs``: a_i of positions 1..n. ``verify_base_s`` + ``verify_slope_s`` * K: the edge's verify time.
    ``rtt_s``: the link's round trip with the per-round overheads.
    """

    accept_probs: tuple[float, ...]
    draft_step_s: float
    verify_base_s: float
    verify_slope_s: float
    rtt_s: float
    weight: float = 4.0

    def __post_init__(self) -> None:
        if not self.accept_probs or not all(0.0 <= a <= 1.0 for a in self.accept_probs):
            raise ValueError(f"accept_probs must be a non-empty list of values in [0, 1], got {self.accept_probs}")
        values = (self.draft_step_s, self.verify_base_s, self.verify_slope_s, self.rtt_s)
        if not all(math.isfinite(v) and v >= 0 for v in values) or not self.weight > 0:
            raise ValueError("warm-start timings must be finite and >= 0, and its weight > 0")


class CostPolicy:
    """Adaptive draft length and verification frequency: each round, the plan the cost model rates fastest.

    Our reconstruction of CoVSpec's policy (its formulas are not public). Per session it estimates online: the
    per-position acceptance a_i (censored verdicts plus bursts' shadow matches), the drafter's step time, the edge's
    verify time v(K) = v0 + v1*K, the link's round trip and bandwidth and the bytes of a round in K (or B), the
    target's own per-token time in a burst (v0 until a burst is seen) and the drafter's catch-up on a burst of B
    tokens, one forward over them (one drafter step plus an eighth per token until seen). ``plan`` maximises expected
    committed tokens per second over K = 0..max_draft_len and a burst of ``max_burst``
    (:func:`covspec.spec.cost_model.best_plan`): it bursts unless a draft length beats the target alone by
    ``draft_margin``, and drafts again when acceptance (kept current by shadow matches) or timings make drafting pay;
    every ``probe_every`` bursts in a row it drafts once to re-measure. The first ``warmup_rounds`` rounds draft
    max_draft_len to measure, unless a :class:`WarmStart` seeds the estimates. A generation's first round drafts
    while the edge prefills: the drafting seconds earlier first rounds hid behind the prefill (their drafting plus
    their wait for it) are free in its plan. A burst is rated by the tokens the answer is expected to have left (the
    usual answer length on this connection, while this one is shorter): a short answer ends a burst early, and no
    catch-up follows it. With ``config.objective`` energy or balanced, "fastest" reads "most tokens per joule" or
    "most tokens^2 per second-joule" throughout, bursts and the marginal rule included
    (:func:`covspec.spec.cost_model.score`).

    ``keep_drafting`` is the marginal rule: with E and T the expected tokens and seconds of the block kept so far,
    one more token (acceptance p from the margin calibration once ready, else a_{j+1}) adds S*p expected tokens (S:
    survival of the block so far) and ΔT = t_draft + v(j+1) - v(j) + Δlink seconds; keep it iff S*p*T >= E*ΔT, i.e.
    iff it raises the block's rate E/T (for the other objectives: iff it raises E/J, or E^2/(T*J)).
    """

    uses_margins = True

    def __init__(self, max_draft_len: int, config: CostConfig | None = None, warm: WarmStart | None = None) -> None:
        if max_draft_len < 1:
            raise ValueError(f"max_draft_len must be >= 1, got {max_draft_len}")
        self.max_draft_len = max_draft_len
        self.config = config = config or CostConfig()
        if config.max_burst < 0 or config.probe_every < 1 or config.warmup_rounds < 1 or config.draft_margin < 0:
            raise ValueError("max_burst and draft_margin must be >= 0, probe_every and warmup_rounds >= 1")
        if config.objective is not Objective.LATENCY and config.energy is None:
            raise ValueError(f"the {config.objective.value} objective needs the device's energy inputs (watts)")
        for name in ("acceptance_decay", "timing_decay", "link_decay"):
            check_decay(getattr(config, name), name)
        self.acceptance = PositionAcceptance(
            max_draft_len, config.acceptance_prior, config.acceptance_prior_weight, config.acceptance_decay
        )
        self.calibration = MarginCalibration(config.calibration)
        self.draft_step = DecayedRatio(config.timing_decay)  # s per drafted token
        self.target_step = DecayedRatio(config.timing_decay)  # s per burst token (edge compute)
        self.catchup = DecayedLine(config.timing_decay)  # drafter s to feed a burst of B tokens, in B
        self.first_round_free = DecayedRatio(config.timing_decay)  # drafting s a first round hid behind the prefill
        self.answer_length = DecayedRatio(config.timing_decay)  # tokens per generation on this connection
        self._generated = 0  # tokens committed in the current generation
        self.verify = DecayedLine(config.timing_decay)  # verify_s in K
        self.draft_uplink = DecayedLine(config.timing_decay)  # bytes in K
        self.draft_downlink = DecayedLine(config.timing_decay)
        self.burst_uplink = DecayedLine(config.timing_decay)  # bytes in B
        self.burst_downlink = DecayedLine(config.timing_decay)
        self.link = LinkEstimate(config.link_decay, config.timing_decay, config.bandwidth_prior_bytes)
        self.stats = PolicyStats()
        self.last_rate: float | None = None  # expected tokens/s of the last plan (None while measuring)
        self._bursts_in_a_row = 0
        self._measured_rounds = 0  # draft rounds with at least one drafted token
        self._inputs: CostInputs | None = None  # the inputs of the current round's plan, for keep_drafting
        self._kept_tokens = 1.0  # E of the block kept so far
        self._survival = 1.0  # S of the block kept so far
        if warm is not None:
            self._seed(warm)

    def _seed(self, warm: WarmStart) -> None:
        """Enter ``warm``'s measurements as ``warm.weight`` rounds of evidence and skip the warm-up."""
        probs = np.asarray(warm.accept_probs[: self.max_draft_len], dtype=np.float64)
        self.acceptance.trials[: probs.size] += warm.weight
        self.acceptance.accepts[: probs.size] += warm.weight * probs
        self.draft_step.add(warm.draft_step_s * warm.weight, warm.weight)
        for k in (0, self.max_draft_len):  # two points fix the line; their weight is warm.weight rounds' worth
            for _ in range(max(1, round(warm.weight / 2))):
                self.verify.add(k, warm.verify_base_s + warm.verify_slope_s * k)
        self.link.add(warm.rtt_s, 0.0)
        self._measured_rounds = self.config.warmup_rounds

    @property
    def measured(self) -> bool:
        """Whether ``warmup_rounds`` draft rounds with a drafted token were observed (the model needs their timings)."""
        return self._measured_rounds >= self.config.warmup_rounds

    def cost_inputs(self) -> CostInputs | None:
        """The model's inputs from the current estimates (None until :attr:`measured`)."""
        if not self.measured:
            return None
        t_draft = self.draft_step.value or 0.0
        verify = self.verify.fit() or Linear()
        draft_up = self.draft_uplink.fit(pivot=-1.0) or Linear()
        draft_down = self.draft_downlink.fit() or Linear()
        burst_up = self.burst_uplink.fit() or Linear(base=float(draft_up(0)))
        burst_down = self.burst_downlink.fit(pivot=0.0) or Linear(float(draft_down(0)), self.config.burst_token_bytes)
        bandwidth = self.link.bytes_per_s
        target_step = self.target_step.value
        # feeding B tokens is one forward over them: about one drafter step, a little more per token, until seen
        catchup = self.catchup.fit() or Linear(base=t_draft, slope=t_draft / 8)
        return CostInputs(
            accept_probs=self.acceptance.probabilities(),
            draft_step_s=t_draft,
            verify_s=verify,
            target_step_s=target_step if target_step is not None else verify.base,
            rtt_s=self.link.rtt_s,
            uplink_bytes_per_s=bandwidth,
            downlink_bytes_per_s=bandwidth,
            draft_uplink_bytes=draft_up,
            draft_downlink_bytes=draft_down,
            burst_uplink_bytes=burst_up,
            burst_downlink_bytes=burst_down,
            catchup_s=catchup,
            energy=self.config.energy,
        )

    def plan(self, remaining: int, first_round: bool = False) -> RoundPlan:
        _check_remaining(remaining)
        if first_round and self._generated > 0:  # the previous generation is complete: its length is known
            self.answer_length.add(self._generated, 1.0)
            self._generated = 0
        self._kept_tokens, self._survival = 1.0, 1.0
        self._inputs = self.cost_inputs()
        if first_round and self._inputs is not None:  # drafting while the edge prefills costs only what outlasts it
            self._inputs = replace(self._inputs, hidden_draft_s=self.first_round_free.value or 0.0)
        if self._inputs is None:
            self.last_rate = None
            return RoundPlan(burst=False, length=min(self.max_draft_len, remaining - 1))
        if self._bursts_in_a_row >= self.config.probe_every and remaining > 1:
            plan, self.last_rate = best_plan(
                self._inputs, remaining, self.max_draft_len, min_draft_len=1, objective=self.config.objective
            )
            self.stats.probe_rounds += 1
            return plan
        answer_left = self.answer_left()
        # drafts past the answer's likely end are work for nothing: K stops short of it
        likely = remaining if answer_left is None else min(remaining, max(1, math.ceil(answer_left)))
        plan, self.last_rate = best_plan(self._inputs, likely, self.max_draft_len, objective=self.config.objective)
        if self.config.max_burst > 0:
            burst = RoundPlan(burst=True, length=min(self.config.max_burst, remaining))
            burst_rate = burst_score(self._inputs, burst.length, answer_left, self.config.objective)
            if burst_rate * (1.0 + self.config.draft_margin) >= self.last_rate:
                plan, self.last_rate = burst, burst_rate
        return plan

    def answer_left(self) -> float | None:
        """Tokens the answer is expected to run for beyond this generation's so far (None: not known, or this answer
        already outran the usual length)."""
        usual = self.answer_length.value
        return None if usual is None or usual <= self._generated else usual - self._generated

    def keep_drafting(self, position: int, margin: float) -> bool:
        if position == 0:
            self._kept_tokens, self._survival = 1.0, 1.0
        inputs = self._inputs
        if inputs is None or position >= self.max_draft_len:
            return True
        if self.calibration.ready:
            chance = self.calibration.accept_probability(margin)
        else:
            chance = float(inputs.accept_probs[position])
        gain = self._survival * chance
        if not self._raises_score(inputs, position, gain):
            self.stats.gated_stops += 1
            return False
        self._survival = gain
        self._kept_tokens += gain
        return True

    def _raises_score(self, inputs: CostInputs, position: int, gain: float) -> bool:
        """Whether one more drafted token, worth ``gain`` expected tokens, keeps the block's figure of merit from
        falling (cross-multiplied: a block of no seconds or joules is never divided by)."""
        kept, grown = self._kept_tokens, self._kept_tokens + gain
        seconds = float(inputs.draft_round_s(position)), float(inputs.draft_round_s(position + 1))
        if self.config.objective is Objective.LATENCY:
            return grown * seconds[0] >= kept * seconds[1]
        joules = float(inputs.draft_round_j(position)), float(inputs.draft_round_j(position + 1))
        if self.config.objective is Objective.ENERGY:
            return grown * joules[0] >= kept * joules[1]
        return grown * grown * seconds[0] * joules[0] >= kept * kept * seconds[1] * joules[1]

    def observe(self, observation: RoundObservation) -> None:
        self.stats.record(observation)
        self._generated += observation.committed
        self.link.add(observation.link_s, observation.uplink_bytes + observation.downlink_bytes)
        if observation.prefill_wait_s is not None and not observation.burst:
            # drafting that still left the round waiting for the prefill was free, and so was that wait; a round that
            # did not wait says only that some of its drafting may have been (counted as none)
            free = observation.draft_s + observation.prefill_wait_s if observation.prefill_wait_s > 0 else 0.0
            self.first_round_free.add(free, 1.0)
        if observation.burst:
            self._bursts_in_a_row += 1
            if observation.committed > 0:
                self.target_step.add(observation.verify_s, observation.committed)
                self.catchup.add(observation.committed, observation.catchup_s)
                self.burst_uplink.add(observation.committed, observation.uplink_bytes)
                self.burst_downlink.add(observation.committed, observation.downlink_bytes)
            self.acceptance.record_shadow(observation.shadow_matches, self.config.shadow_weight)
            return
        self._bursts_in_a_row = 0
        if observation.drafted > 0:
            self._measured_rounds += 1
            self.draft_step.add(observation.draft_s, observation.drafted)
        self.verify.add(observation.drafted, observation.verify_s)
        self.draft_uplink.add(observation.drafted, observation.uplink_bytes)
        self.draft_downlink.add(observation.drafted, observation.downlink_bytes)
        self.acceptance.record(observation.drafted, observation.accepted)
        if observation.margins:
            self.calibration.record(observation.margins, observation.accepted)


def make_policy(
    kind: PolicyKind | str,
    *,
    draft_len: int,
    margin: MarginConfig | None = None,
    cost: CostConfig | None = None,
    warm: WarmStart | None = None,
) -> DraftPolicy:
    """The policy ``kind`` with maximum draft length ``draft_len``; ``margin``/``cost`` override their defaults;
    ``warm`` seeds the cost policy's estimates (the other policies have none)."""
    kind = PolicyKind(kind)
    if kind is PolicyKind.FIXED:
        return FixedPolicy(draft_len)
    if kind is PolicyKind.MARGIN:
        return MarginPolicy(draft_len, margin)
    return CostPolicy(draft_len, cost, warm)
