"""Drafting policies: what the device does each round (draft up to K, or ask for a burst), pure and transport-free.

The device loop asks ``plan(remaining)`` before each round, ``keep_drafting(position, margin)`` before keeping each
draft token, and reports the round with ``observe(RoundObservation)``. Three policies (:class:`PolicyKind`):

- ``fixed``: always K = draft_len, the baseline every paper reports;
- ``margin``: K = draft_len, cut short when the drafter's confidence, calibrated online against the verdicts, says
  the block's next token is unlikely to be accepted;
- ``cost``: adaptive draft length and verification frequency from :mod:`covspec.spec.cost_model` (our
  reconstruction of CoVSpec's; its formulas are not public), fed by per-session online estimates, bursting when no
  draft length is expected to beat the target alone.

The estimators (acceptance with censoring, margin calibration, decayed fits) are public so that benchmarks can
compute the same numbers from recorded rounds.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from covspec.spec.cost_model import CostInputs, Linear, RoundPlan, best_plan, plan_tokens_per_s

__all__ = [
    "DEFAULT_MARGIN_BIN_EDGES",
    "CalibrationConfig",
    "CostConfig",
    "CostPolicy",
    "DecayedLine",
    "DecayedRatio",
    "DraftPolicy",
    "FixedPolicy",
    "LinkEstimate",
    "MarginCalibration",
    "MarginConfig",
    "MarginPolicy",
    "PolicyKind",
    "PolicyStats",
    "PositionAcceptance",
    "RoundObservation",
    "RoundPlan",
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
        if min(self.draft_s, self.verify_s, self.exchange_s, self.catchup_s) < 0:
            raise ValueError("durations must be >= 0")

    @property
    def link_s(self) -> float:
        """Seconds the round spent on the link (and per-round overheads): exchange minus the edge's compute."""
        return max(0.0, self.exchange_s - self.verify_s)


@runtime_checkable
class DraftPolicy(Protocol):
    """What the device loop needs of a policy."""

    def plan(self, remaining: int) -> RoundPlan:
        """Next round; ``remaining`` >= 1 tokens still allowed. Draft length <= remaining - 1, burst <= remaining."""
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


def _check_decay(decay: float, name: str) -> None:
    if not 0 < decay <= 1:
        raise ValueError(f"{name} must lie in (0, 1], got {decay}")


# --------------------------------------------------------------------------------------------------------------------
# estimators


@dataclass
class PositionAcceptance:
    """Per-position accept/trial counts of draft blocks, censored after the first rejection.

    Position i (1-based) of a block with ``accepted`` = a is a trial when i <= a + 1 and i <= drafted, an accept
    when i <= a; later positions were never tested (censored) and are not counted. Estimates shrink towards the
    pooled rate of all positions (itself shrunk towards ``prior_rate`` with ``prior_weight`` pseudo-trials), so a
    position rarely drafted borrows the others' evidence instead of a fixed guess. ``decay``: each recorded block
    makes earlier ones count that much less, so memory is counted in blocks (a burst's shadow holds many).
    The defaults (no prior, no forgetting) give the plain measured a_i of a run, as the analytical bound wants;
    :class:`CostPolicy` passes its own.
    """

    max_draft_len: int
    prior_rate: float = 0.5  # used only where nothing at all was tested
    prior_weight: float = 0.0
    decay: float = 1.0
    accepts: np.ndarray = field(init=False, repr=False)  # [N] float64, decayed
    trials: np.ndarray = field(init=False, repr=False)  # [N] float64, decayed

    def __post_init__(self) -> None:
        if self.max_draft_len < 1:
            raise ValueError(f"max_draft_len must be >= 1, got {self.max_draft_len}")
        if not 0 <= self.prior_rate <= 1 or self.prior_weight < 0:
            raise ValueError("prior_rate must lie in [0, 1] and prior_weight be >= 0")
        _check_decay(self.decay, "acceptance decay")
        self.accepts = np.zeros(self.max_draft_len)
        self.trials = np.zeros(self.max_draft_len)

    def record(self, drafted: int, accepted: int, weight: float = 1.0) -> None:
        """Add one block's outcome (``weight`` blocks' worth); positions beyond max_draft_len are ignored."""
        if not 0 <= accepted <= drafted:
            raise ValueError(f"need 0 <= accepted <= drafted, got accepted={accepted}, drafted={drafted}")
        fade = self.decay**weight
        self.accepts *= fade
        self.trials *= fade
        tested = min(drafted, accepted + 1, self.max_draft_len)
        self.trials[:tested] += weight
        self.accepts[: min(accepted, self.max_draft_len)] += weight

    def record_shadow(self, matches: Sequence[bool], weight: float = 1.0) -> None:
        """Add a burst's shadow matches as the draft rounds that would have run over it.

        Blocks of max_draft_len start at each token a real round would have started at: after a rejection the
        correction (the target's token) is committed, after full acceptance the bonus token is, and a block is
        drafted from the token after that. The burst's end censors its last block.
        """
        matches = [bool(m) for m in matches]
        start = 0
        while start < len(matches):
            window = matches[start : start + self.max_draft_len]
            accepted = window.index(False) if False in window else len(window)
            self.record(drafted=len(window), accepted=accepted, weight=weight)
            start += accepted + 1

    def pooled_rate(self) -> float:
        """Acceptance over all tested positions, shrunk towards the prior (``prior_rate`` before any trial)."""
        weight = self.trials.sum() + self.prior_weight
        if weight <= 0:
            return self.prior_rate
        return float((self.accepts.sum() + self.prior_weight * self.prior_rate) / weight)

    def probabilities(self) -> np.ndarray:
        """[N] a_i estimates (posterior means; untested positions get the pooled rate)."""
        pooled = self.pooled_rate()
        weight = self.trials + self.prior_weight  # [N]
        estimates = (self.accepts + self.prior_weight * pooled) / np.where(weight > 0, weight, 1.0)
        return np.where(weight > 0, estimates, pooled)


DEFAULT_MARGIN_BIN_EDGES: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class CalibrationConfig:
    """How margins are turned into acceptance probabilities.

    ``bin_edges``: margin bins over [0, 1]. ``prior_accept``/``prior_reject``: Beta prior pseudo-counts per bin.
    ``min_observations``: accepts + rejects seen before the calibration is trusted (until then nothing is gated).
    ``decay``: per-round forgetting of old counts (1.0 keeps everything).
    """

    bin_edges: tuple[float, ...] = DEFAULT_MARGIN_BIN_EDGES
    prior_accept: float = 1.0
    prior_reject: float = 1.0
    min_observations: int = 32
    decay: float = 1.0


def _increasing_fit(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-decreasing fit (pool adjacent violators). values, weights: [n]. Returns [n]."""
    blocks: list[list[float]] = []  # [weighted sum, weight, count]
    for value, weight in zip(values, weights, strict=True):
        blocks.append([value * weight, weight, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, weight_sum, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += weight_sum
            blocks[-1][2] += count
    return np.concatenate([np.full(int(count), total / weight_sum) for total, weight_sum, count in blocks])


class MarginCalibration:
    """P(accept | drafter margin), learned online from verdicts: binned counts, Beta prior, monotone in margin.

    A drafted position j of a block with ``accepted`` = a counts as an accept when j < a, a reject when j == a, and
    not at all when j > a (censored: the target never tested it).
    """

    def __init__(self, config: CalibrationConfig | None = None) -> None:
        self.config = config or CalibrationConfig()
        edges = np.asarray(self.config.bin_edges, dtype=np.float64)
        if edges.size < 2 or edges[0] != 0.0 or edges[-1] != 1.0 or (np.diff(edges) <= 0).any():
            raise ValueError("bin_edges must increase strictly from 0.0 to 1.0")
        if self.config.prior_accept <= 0 or self.config.prior_reject <= 0:
            raise ValueError("Beta prior pseudo-counts must be > 0")
        _check_decay(self.config.decay, "calibration decay")
        self.bin_edges = edges
        self.accepts = np.zeros(edges.size - 1)  # [bins] float64, decayed
        self.rejects = np.zeros(edges.size - 1)  # [bins] float64, decayed
        self._fitted: np.ndarray | None = None  # accept_probabilities() until the next record (asked per token)

    def bin_of(self, margin: float) -> int:
        """Index of the bin holding ``margin`` (clipped into [0, 1])."""
        return int(np.clip(np.searchsorted(self.bin_edges, margin, side="right") - 1, 0, self.accepts.size - 1))

    def record(self, margins: Sequence[float], accepted: int) -> None:
        """Add one block: margins[j] is the drafter's margin at drafted position j; ages old counts first."""
        self._fitted = None
        self.accepts *= self.config.decay
        self.rejects *= self.config.decay
        for position, margin in enumerate(margins):
            if position < accepted:
                self.accepts[self.bin_of(margin)] += 1
            elif position == accepted:
                self.rejects[self.bin_of(margin)] += 1
            else:
                break

    @property
    def observations(self) -> float:
        return float(self.accepts.sum() + self.rejects.sum())

    @property
    def ready(self) -> bool:
        """Whether enough verdicts were seen to gate on the estimate."""
        return self.observations >= self.config.min_observations

    def accept_probabilities(self) -> np.ndarray:
        """[bins] P(accept | margin in bin): Beta posterior means, made non-decreasing in margin."""
        return self._fit().copy()

    def accept_probability(self, margin: float) -> float:
        return float(self._fit()[self.bin_of(margin)])

    def _fit(self) -> np.ndarray:
        if self._fitted is None:
            hits = self.accepts + self.config.prior_accept
            totals = self.accepts + self.rejects + self.config.prior_accept + self.config.prior_reject
            self._fitted = _increasing_fit(hits / totals, totals)
        return self._fitted


@dataclass
class DecayedRatio:
    """sum(numerator) / sum(denominator) with older rounds weighted ``decay`` times less per round (e.g. s/token)."""

    decay: float
    numerator: float = 0.0
    denominator: float = 0.0

    def add(self, numerator: float, denominator: float) -> None:
        self.numerator = self.numerator * self.decay + numerator
        self.denominator = self.denominator * self.decay + denominator

    @property
    def value(self) -> float | None:
        return self.numerator / self.denominator if self.denominator > 0 else None


@dataclass
class DecayedLine:
    """Weighted least squares y = base + slope * x over rounds, older rounds weighted ``decay`` times less each.

    The slope is ridge-shrunk (``ridge`` pseudo-weight of unit x-spread) towards a fallback: when x never varied
    (one K seen so far) the data say nothing about the slope, and the fallback decides it. Base and slope are kept
    >= 0 (times and bytes).
    """

    decay: float
    ridge: float = 0.5
    weight: float = 0.0
    sum_x: float = 0.0
    sum_y: float = 0.0
    sum_xx: float = 0.0
    sum_xy: float = 0.0

    def add(self, x: float, y: float) -> None:
        self.weight = self.weight * self.decay + 1.0
        self.sum_x = self.sum_x * self.decay + x
        self.sum_y = self.sum_y * self.decay + y
        self.sum_xx = self.sum_xx * self.decay + x * x
        self.sum_xy = self.sum_xy * self.decay + x * y

    def fit(self, pivot: float | None = None) -> Linear | None:
        """The fitted line (None before any data).

        Fallback slope: with ``pivot`` None a flat line; otherwise the line through (pivot, 0) and the mean point,
        i.e. y proportional to x - pivot (pivot -1: proportional to K + 1 positions; 0: to the tokens).
        """
        if self.weight <= 0:
            return None
        mean_x, mean_y = self.sum_x / self.weight, self.sum_y / self.weight
        fallback = 0.0
        if pivot is not None and mean_x - pivot > 0:
            fallback = mean_y / (mean_x - pivot)
        spread_xx = max(self.sum_xx - self.weight * mean_x * mean_x, 0.0)
        spread_xy = self.sum_xy - self.weight * mean_x * mean_y
        slope = max((spread_xy + self.ridge * fallback) / (spread_xx + self.ridge), 0.0)
        base = mean_y - slope * mean_x
        if base < 0:  # the best line through the origin instead
            base, slope = 0.0, (self.sum_xy / self.sum_xx if self.sum_xx > 0 else 0.0)
        return Linear(base=base, slope=max(slope, 0.0))


@dataclass
class LinkEstimate:
    """The link as round trip + bytes / bandwidth, fitted from (link seconds, bytes) of each round.

    The seconds-per-byte slope comes from differences of consecutive rounds (a change of round trip shifts both
    rounds alike and cancels; the one difference that straddles the step is clipped to a few times the usual
    scatter), decayed by ``slope_decay`` and shrunk towards a free link by ``prior_bytes``² of pseudo-spread, so
    rounds that differ by a few bytes cannot fake a bandwidth. The round trip is a fast
    exponentially weighted mean of link seconds minus the bytes' share (``rtt_decay``: recent rounds count more),
    so a delay that changes mid-generation is followed within a few rounds.
    """

    rtt_decay: float = 0.5
    slope_decay: float = 0.9
    prior_bytes: float = 256.0
    weight: float = 0.0
    sum_link_s: float = 0.0
    sum_bytes: float = 0.0
    diff_xx: float = 0.0
    diff_xy: float = 0.0
    differences: int = 0
    diff_weight: float = 0.0
    residual_sum: float = 0.0  # decayed sum of |difference not explained by the bytes|, for clipping
    last: tuple[float, float] | None = None  # (bytes, link seconds) of the previous round

    def add(self, link_s: float, total_bytes: float) -> None:
        if self.last is not None:
            delta_bytes, delta_s = total_bytes - self.last[0], link_s - self.last[1]
            explained = self.seconds_per_byte * delta_bytes
            residual = delta_s - explained
            if self.differences >= 3:  # a step in the round trip is one outlier: clip it (Huber-like)
                bound = 4.0 * self.residual_sum / self.diff_weight
                delta_s = explained + min(max(residual, -bound), bound)
            self.residual_sum = self.residual_sum * self.slope_decay + abs(residual)
            self.diff_weight = self.diff_weight * self.slope_decay + 1.0
            self.differences += 1
            self.diff_xx = self.diff_xx * self.slope_decay + delta_bytes * delta_bytes
            self.diff_xy = self.diff_xy * self.slope_decay + delta_bytes * delta_s
        self.last = (total_bytes, link_s)
        self.weight = self.weight * self.rtt_decay + 1.0
        self.sum_link_s = self.sum_link_s * self.rtt_decay + link_s
        self.sum_bytes = self.sum_bytes * self.rtt_decay + total_bytes

    @property
    def seen(self) -> bool:
        return self.weight > 0

    @property
    def seconds_per_byte(self) -> float:
        return max(0.0, self.diff_xy / (self.diff_xx + self.prior_bytes**2))

    @property
    def bytes_per_s(self) -> float:
        spb = self.seconds_per_byte
        return 1.0 / spb if spb > 0 else math.inf

    @property
    def rtt_s(self) -> float:
        if not self.seen:
            return 0.0
        return max(0.0, (self.sum_link_s - self.seconds_per_byte * self.sum_bytes) / self.weight)


# --------------------------------------------------------------------------------------------------------------------
# policies


class FixedPolicy:
    """Always draft ``draft_len`` tokens (fewer near the end); never bursts, never gates."""

    def __init__(self, draft_len: int) -> None:
        if draft_len < 0:
            raise ValueError(f"draft_len must be >= 0, got {draft_len}")
        self.draft_len = draft_len
        self.stats = PolicyStats()

    def plan(self, remaining: int) -> RoundPlan:
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

    def plan(self, remaining: int) -> RoundPlan:
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
    max_draft_len to measure.

    ``keep_drafting`` is the marginal rule: with E and T the expected tokens and seconds of the block kept so far,
    one more token (acceptance p from the margin calibration once ready, else a_{j+1}) adds S*p expected tokens (S:
    survival of the block so far) and ΔT = t_draft + v(j+1) - v(j) + Δlink seconds; keep it iff S*p*T >= E*ΔT, i.e.
    iff it raises the block's rate E/T.
    """

    def __init__(self, max_draft_len: int, config: CostConfig | None = None) -> None:
        if max_draft_len < 1:
            raise ValueError(f"max_draft_len must be >= 1, got {max_draft_len}")
        self.max_draft_len = max_draft_len
        self.config = config = config or CostConfig()
        if config.max_burst < 0 or config.probe_every < 1 or config.warmup_rounds < 1 or config.draft_margin < 0:
            raise ValueError("max_burst and draft_margin must be >= 0, probe_every and warmup_rounds >= 1")
        for name in ("acceptance_decay", "timing_decay", "link_decay"):
            _check_decay(getattr(config, name), name)
        self.acceptance = PositionAcceptance(
            max_draft_len, config.acceptance_prior, config.acceptance_prior_weight, config.acceptance_decay
        )
        self.calibration = MarginCalibration(config.calibration)
        self.draft_step = DecayedRatio(config.timing_decay)  # s per drafted token
        self.target_step = DecayedRatio(config.timing_decay)  # s per burst token (edge compute)
        self.catchup = DecayedLine(config.timing_decay)  # drafter s to feed a burst of B tokens, in B
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
        )

    def plan(self, remaining: int) -> RoundPlan:
        _check_remaining(remaining)
        self._kept_tokens, self._survival = 1.0, 1.0
        self._inputs = self.cost_inputs()
        if self._inputs is None:
            self.last_rate = None
            return RoundPlan(burst=False, length=min(self.max_draft_len, remaining - 1))
        if self._bursts_in_a_row >= self.config.probe_every and remaining > 1:
            plan, self.last_rate = best_plan(self._inputs, remaining, self.max_draft_len, min_draft_len=1)
            self.stats.probe_rounds += 1
            return plan
        plan, self.last_rate = best_plan(self._inputs, remaining, self.max_draft_len)
        if self.config.max_burst > 0:
            burst = RoundPlan(burst=True, length=min(self.config.max_burst, remaining))
            burst_rate = plan_tokens_per_s(self._inputs, burst)
            if burst_rate * (1.0 + self.config.draft_margin) >= self.last_rate:
                plan, self.last_rate = burst, burst_rate
        return plan

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
        seconds_now = float(inputs.draft_round_s(position))
        extra_s = float(inputs.draft_round_s(position + 1)) - seconds_now
        gain = self._survival * chance
        if gain * seconds_now < self._kept_tokens * extra_s:
            self.stats.gated_stops += 1
            return False
        self._survival = gain
        self._kept_tokens += gain
        return True

    def observe(self, observation: RoundObservation) -> None:
        self.stats.record(observation)
        self.link.add(observation.link_s, observation.uplink_bytes + observation.downlink_bytes)
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
) -> DraftPolicy:
    """The policy ``kind`` with maximum draft length ``draft_len``; ``margin``/``cost`` override their defaults."""
    kind = PolicyKind(kind)
    if kind is PolicyKind.FIXED:
        return FixedPolicy(draft_len)
    if kind is PolicyKind.MARGIN:
        return MarginPolicy(draft_len, margin)
    return CostPolicy(draft_len, cost)
