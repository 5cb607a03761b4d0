"""Online estimators the drafting policies learn from: per-position acceptance with censoring, the margin
calibration, exponentially decayed ratios and line fits, and the link's round trip and bandwidth.

Public so that benchmarks compute the same numbers from recorded rounds; pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from covspec.spec.cost_model import Linear

__all__ = [
    "DEFAULT_MARGIN_BIN_EDGES",
    "CalibrationConfig",
    "DecayedLine",
    "DecayedRatio",
    "LinkEstimate",
    "MarginCalibration",
    "PositionAcceptance",
    "check_decay",
]


def check_decay(decay: float, name: str) -> None:
    if not 0 < decay <= 1:
        raise ValueError(f"{name} must lie in (0, 1], got {decay}")


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
        check_decay(self.decay, "acceptance decay")
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
        check_decay(self.config.decay, "calibration decay")
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
