"""The cost model of a round: expected committed tokens, round time, the best plan, and the analytical bound.

Pure arithmetic over measured quantities, with no bookkeeping: the policies in :mod:`covspec.spec.policy` estimate
the inputs online and call :func:`best_plan`; benchmarks call :func:`analytical_tokens_per_s` beside every measured
speedup (DESIGN.md §2 "analytical bound", §10).

CoVSpec's exact formulas are not public. These are our reconstruction from its description (adaptive draft length
and verification frequency from a device/edge/link cost model, falling back to the target alone):

- survival ``s_0 = 1``, ``s_j = prod_{i<=j} a_i`` where ``a_i`` = P(draft i accepted | drafts 1..i-1 accepted);
- a draft round of length K commits ``E(K) = sum_{j=0..K} s_j`` tokens in expectation (accepted + 1);
- it takes ``T(K) = K * t_draft + v(K) + link(K)``, ``link(K) = rtt + up(K) / up_bandwidth + down(K) / down_bandwidth``;
  with overlap (the next block drafted while the round is in flight) ``T(K) = max(K * t_draft, v(K) + link(K))``;
  a generation's first round drafts while the edge is still prefilling, so up to ``hidden`` seconds of its drafting
  cost nothing: ``T(K) = max(0, K * t_draft - hidden) + v(K) + link(K)``;
- a burst of B target tokens commits B and takes ``B * t_target + link_burst(B) + catchup(B)``; when the answer is
  expected to end after ``L < B`` more tokens, it commits L and takes ``L * t_target + link_burst(L)`` (no drafting
  follows to catch up);
- the plan maximises the objective (:class:`Objective`): expected committed tokens per second ``E / T`` (latency),
  per joule ``E / J`` (energy), or their product ``E^2 / (T * J)`` (balanced: the inverse of the energy-delay
  product per token, so a 10% loss of either is traded for a 10% gain of the other);
- the device's joules of a round, radio included (:class:`EnergyInputs`): ``J = T * P_wait + drafting_s *
  (P_draft - P_wait) + up_bytes * e_up + down_bytes * e_down``. The device draws ``P_wait`` for the whole round
  (idle SoC plus a radio kept connected by rounds that come faster than its tail), and ``P_draft - P_wait`` more
  while the drafter computes, including drafting hidden behind a prefill (free in time, not in joules). A burst's
  drafting is its catch-up.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CostInputs",
    "EnergyInputs",
    "Linear",
    "Objective",
    "RoundPlan",
    "analytical_tokens_per_s",
    "best_plan",
    "burst_score",
    "expected_committed",
    "expected_committed_by_length",
    "plan_score",
    "plan_tokens_per_s",
    "round_time",
    "score",
]


class Objective(str, enum.Enum):
    """What a plan maximises (`covspec run --objective`): tokens per second, tokens per joule, or their product."""

    LATENCY = "latency"
    ENERGY = "energy"
    BALANCED = "balanced"


def score(
    objective: Objective, tokens: np.ndarray | float, seconds: np.ndarray | float, joules: np.ndarray | float | None
) -> np.ndarray:
    """The objective's figure of merit, higher is better: E/T, E/J or E^2/(T*J). ``joules`` None only for latency."""
    tokens = np.asarray(tokens, dtype=np.float64)
    if objective is Objective.LATENCY:
        return tokens / np.asarray(seconds, dtype=np.float64)
    if joules is None:
        raise ValueError(f"objective {objective.value} needs the round's joules (EnergyInputs)")
    per_joule = tokens / np.asarray(joules, dtype=np.float64)
    return per_joule if objective is Objective.ENERGY else per_joule * tokens / np.asarray(seconds, dtype=np.float64)


@dataclass(frozen=True)
class RoundPlan:
    """What the device does next round.

    ``burst``: True asks the edge for ``length`` target tokens decoded by the target alone (no draft); False drafts
    up to ``length`` tokens (K; margin gating may stop earlier).
    """

    burst: bool
    length: int

    def __post_init__(self) -> None:
        if self.length < (1 if self.burst else 0):
            kind = "burst length must be >= 1" if self.burst else "draft length must be >= 0"
            raise ValueError(f"{kind}, got {self.length}")


@dataclass(frozen=True)
class Linear:
    """``base + slope * x``: a cost (seconds or bytes) that grows with the tokens in a round."""

    base: float = 0.0
    slope: float = 0.0

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        return self.base + self.slope * np.asarray(x, dtype=np.float64)


@dataclass(frozen=True)
class EnergyInputs:
    """The device's power by activity, in watts, and the radio's joules per byte moved, beyond ``wait_w``.

    ``wait_w``: the whole device's draw while it waits on the link and the edge (idle SoC plus the radio held
    connected). ``draft_w``: its draw while the drafter computes (>= wait_w). From a meter (`covspec pair
    --energy`) or the documented estimate (:mod:`covspec.profile.energy`).
    """

    draft_w: float
    wait_w: float
    up_joules_per_byte: float = 0.0
    down_joules_per_byte: float = 0.0

    def joules(self, wall_s: float, drafting_s: float, up_bytes: float, down_bytes: float) -> float:
        """The device's joules over ``wall_s`` seconds of which ``drafting_s`` computed, with these bytes moved
        (the model of a round, applied to what a run measured)."""
        moved = up_bytes * self.up_joules_per_byte + down_bytes * self.down_joules_per_byte
        return wall_s * self.wait_w + drafting_s * (self.draft_w - self.wait_w) + moved

    def __post_init__(self) -> None:
        values = (self.draft_w, self.wait_w, self.up_joules_per_byte, self.down_joules_per_byte)
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"energy inputs must be finite and >= 0, got {values}")
        if self.draft_w < self.wait_w:
            raise ValueError(f"draft_w ({self.draft_w} W) must be >= wait_w ({self.wait_w} W): drafting adds work")
        if self.draft_w <= 0:
            raise ValueError("draft_w must be > 0: a round that costs no joules cannot be rated per joule")


@dataclass(frozen=True, eq=False)
class CostInputs:
    """Everything the model needs about one session, in seconds, bytes and bytes/s.

    ``accept_probs``: [N] a_i, conditional acceptance of draft position i (1-based) given 1..i-1 accepted.
    ``draft_step_s``: drafter seconds per drafted token. ``verify_s``: edge seconds to verify a block of K drafts
    (one target forward over K + 1 positions), a :class:`Linear` in K or a table indexed by K = 0..N.
    ``target_step_s``: the target's seconds per token when it decodes alone (a burst). ``rtt_s``: the link's round
    trip, including per-round overheads that do not scale with bytes. ``*_bytes_per_s``: bandwidth (inf: free).
    ``draft_*_bytes``: bytes of a draft round, in K; ``burst_*_bytes``: bytes of a burst, in B.
    ``catchup_s``: drafter seconds to catch up on a burst's B tokens, in B. ``hidden_draft_s``: drafting seconds
    this round costs nothing for (a first round drafts while the edge prefills). ``energy``: the device's power and
    radio, needed by the energy and balanced objectives only.
    """

    accept_probs: np.ndarray
    draft_step_s: float
    verify_s: Linear | np.ndarray
    target_step_s: float
    rtt_s: float = 0.0
    uplink_bytes_per_s: float = math.inf
    downlink_bytes_per_s: float = math.inf
    draft_uplink_bytes: Linear = field(default_factory=Linear)
    draft_downlink_bytes: Linear = field(default_factory=Linear)
    burst_uplink_bytes: Linear = field(default_factory=Linear)
    burst_downlink_bytes: Linear = field(default_factory=Linear)
    catchup_s: Linear = field(default_factory=Linear)
    hidden_draft_s: float = 0.0
    energy: EnergyInputs | None = None

    def __post_init__(self) -> None:
        accept_probs = _check_probs(self.accept_probs)
        object.__setattr__(self, "accept_probs", accept_probs)
        if not isinstance(self.verify_s, Linear):
            table = np.asarray(self.verify_s, dtype=np.float64).reshape(-1)
            if table.size == 0 or (table < 0).any() or not np.isfinite(table).all():
                raise ValueError("verify_s table must be finite, non-negative and cover K = 0 at least")
            object.__setattr__(self, "verify_s", table)
        for name in ("draft_step_s", "target_step_s", "rtt_s", "hidden_draft_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        for name in ("uplink_bytes_per_s", "downlink_bytes_per_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 (math.inf for a free link), got {getattr(self, name)}")

    def verify_time(self, draft_len: np.ndarray | int) -> np.ndarray:
        """v(K): edge seconds to verify K drafts. draft_len: int or [n] int."""
        if isinstance(self.verify_s, Linear):
            return self.verify_s(draft_len)
        return self.verify_s[np.asarray(draft_len)]

    def draft_link_s(self, draft_len: np.ndarray | int) -> np.ndarray:
        """link(K) of a draft round: round trip plus its bytes over each direction's bandwidth."""
        return (
            self.rtt_s
            + self.draft_uplink_bytes(draft_len) / self.uplink_bytes_per_s
            + self.draft_downlink_bytes(draft_len) / self.downlink_bytes_per_s
        )

    def burst_link_s(self, burst_len: np.ndarray | int) -> np.ndarray:
        """link(B) of a burst round."""
        return (
            self.rtt_s
            + self.burst_uplink_bytes(burst_len) / self.uplink_bytes_per_s
            + self.burst_downlink_bytes(burst_len) / self.downlink_bytes_per_s
        )

    def draft_round_s(self, draft_len: np.ndarray | int, *, overlap: bool = False) -> np.ndarray:
        """T(K) of a draft round; with ``overlap`` the drafting hides behind the round in flight (or vice versa)."""
        drafting = np.maximum(np.asarray(draft_len, dtype=np.float64) * self.draft_step_s - self.hidden_draft_s, 0.0)
        in_flight = self.verify_time(draft_len) + self.draft_link_s(draft_len)
        return np.maximum(drafting, in_flight) if overlap else drafting + in_flight

    def burst_round_s(self, burst_len: np.ndarray | float, *, catch_up: bool = True) -> np.ndarray:
        """T(B) of a burst: the target decodes B tokens, the link carries them, the drafter catches up (unless
        nothing is drafted after it: the answer ends within the burst)."""
        tokens = np.asarray(burst_len, dtype=np.float64)
        decoded = tokens * self.target_step_s + self.burst_link_s(burst_len)
        return decoded + self.catchup_s(burst_len) if catch_up else decoded

    def draft_round_j(self, draft_len: np.ndarray | int, *, overlap: bool = False) -> np.ndarray | None:
        """J(K): the device's joules of a draft round (None without :attr:`energy`)."""
        if self.energy is None:
            return None
        e = self.energy
        drafting = np.asarray(draft_len, dtype=np.float64) * self.draft_step_s
        moved = self.draft_uplink_bytes(draft_len) * e.up_joules_per_byte
        moved = moved + self.draft_downlink_bytes(draft_len) * e.down_joules_per_byte
        return self.draft_round_s(draft_len, overlap=overlap) * e.wait_w + drafting * (e.draft_w - e.wait_w) + moved

    def burst_round_j(self, burst_len: np.ndarray | float, *, catch_up: bool = True) -> np.ndarray | None:
        """J(B) of a burst: waiting while the target decodes, the bytes, and the drafter's catch-up."""
        if self.energy is None:
            return None
        e = self.energy
        moved = self.burst_uplink_bytes(burst_len) * e.up_joules_per_byte
        moved = moved + self.burst_downlink_bytes(burst_len) * e.down_joules_per_byte
        catchup = self.catchup_s(burst_len) * (e.draft_w - e.wait_w) if catch_up else 0.0
        return self.burst_round_s(burst_len, catch_up=catch_up) * e.wait_w + catchup + moved


def _check_probs(accept_probs: np.ndarray | Sequence[float]) -> np.ndarray:
    probs = np.asarray(accept_probs, dtype=np.float64).reshape(-1)
    if not np.isfinite(probs).all() or ((probs < 0) | (probs > 1)).any():
        raise ValueError("acceptance probabilities must lie in [0, 1]")
    return probs


def expected_committed_by_length(accept_probs: np.ndarray | Sequence[float]) -> np.ndarray:
    """E(k) for k = 0..K at once, by prefix products. accept_probs: [K] a_i. Returns [K+1] float64, E(0) = 1."""
    survival = np.concatenate([[1.0], np.cumprod(_check_probs(accept_probs))])  # [K+1]: s_0..s_K
    return np.cumsum(survival)


def expected_committed(accept_probs: np.ndarray | Sequence[float]) -> float:
    """Expected tokens a draft round of K = len(accept_probs) commits: 1 + sum_j prod_{i<=j} a_i (accepted + 1)."""
    return float(expected_committed_by_length(accept_probs)[-1])


def round_time(inputs: CostInputs, plan: RoundPlan, *, overlap: bool = False) -> float:
    """Seconds one round of ``plan`` takes under ``inputs`` (overlap applies to draft rounds only)."""
    if plan.burst:
        return float(inputs.burst_round_s(plan.length))
    return float(inputs.draft_round_s(plan.length, overlap=overlap))


def _plan_tokens(inputs: CostInputs, plan: RoundPlan) -> float:
    if plan.burst:
        return float(plan.length)
    if plan.length > inputs.accept_probs.size:
        raise ValueError(f"draft length {plan.length} exceeds the {inputs.accept_probs.size} known positions")
    return expected_committed(inputs.accept_probs[: plan.length])


def plan_tokens_per_s(inputs: CostInputs, plan: RoundPlan, *, overlap: bool = False) -> float:
    """Expected committed tokens per second of repeating ``plan``: E / T (B / T for a burst)."""
    return _plan_tokens(inputs, plan) / round_time(inputs, plan, overlap=overlap)


def plan_score(
    inputs: CostInputs, plan: RoundPlan, objective: Objective = Objective.LATENCY, *, overlap: bool = False
) -> float:
    """``objective``'s figure of merit of repeating ``plan`` (tokens/s for latency)."""
    if plan.burst:
        joules = inputs.burst_round_j(plan.length)
    else:
        joules = inputs.draft_round_j(plan.length, overlap=overlap)
    return float(score(objective, _plan_tokens(inputs, plan), round_time(inputs, plan, overlap=overlap), joules))


def burst_score(
    inputs: CostInputs, length: int, answer_left: float | None = None, objective: Objective = Objective.LATENCY
) -> float:
    """The objective's figure of merit (tokens/s for latency) of a burst of ``length``, given that the answer is
    expected to end after ``answer_left`` more tokens (None: unknown, the burst runs its length and the drafter
    catches up after it)."""
    if answer_left is None or answer_left >= length:
        return plan_score(inputs, RoundPlan(burst=True, length=length), objective)
    tokens = max(float(answer_left), 1.0)
    seconds = inputs.burst_round_s(tokens, catch_up=False)
    return float(score(objective, tokens, seconds, inputs.burst_round_j(tokens, catch_up=False)))


def best_plan(
    inputs: CostInputs,
    remaining: int,
    max_draft_len: int,
    burst_lengths: Sequence[int] = (),
    *,
    min_draft_len: int = 0,
    overlap: bool = False,
    objective: Objective = Objective.LATENCY,
) -> tuple[RoundPlan, float]:
    """The plan with the best figure of merit under ``objective`` (tokens/s for latency), and that figure.

    Draft candidates: K = min_draft_len..min(max_draft_len, remaining - 1, N). Burst candidates: each B of
    ``burst_lengths`` capped at ``remaining``. Ties go to the first candidate in that order (drafts by K, then
    bursts). Raises ValueError when no candidate is left, a round would take no time, or the objective needs
    joules that ``inputs`` lack.
    """
    if remaining < 1:
        raise ValueError(f"remaining must be >= 1, got {remaining}")
    top = min(max_draft_len, remaining - 1, inputs.accept_probs.size)
    draft_lens = np.arange(min_draft_len, top + 1)  # [n_draft]
    committed = expected_committed_by_length(inputs.accept_probs[:top])[draft_lens] if top >= 0 else np.empty(0)
    burst_lens = np.array(list(dict.fromkeys(min(int(b), remaining) for b in burst_lengths if b >= 1)), dtype=int)
    tokens = np.concatenate([committed, burst_lens.astype(np.float64)])  # [n_draft + n_burst]
    seconds = np.concatenate([inputs.draft_round_s(draft_lens, overlap=overlap), inputs.burst_round_s(burst_lens)])
    if tokens.size == 0:
        raise ValueError("no candidate plan: widen max_draft_len / min_draft_len or pass burst lengths")
    if not (seconds > 0).all():
        raise ValueError("every round must take some time; check the inputs (all-zero costs)")
    joules = None
    if inputs.energy is not None:
        joules = np.concatenate(
            [inputs.draft_round_j(draft_lens, overlap=overlap), inputs.burst_round_j(burst_lens)]
        )  # [n_draft + n_burst]
    rates = score(objective, tokens, seconds, joules)
    best = int(np.argmax(rates))
    if best < draft_lens.size:
        return RoundPlan(burst=False, length=int(draft_lens[best])), float(rates[best])
    return RoundPlan(burst=True, length=int(burst_lens[best - draft_lens.size])), float(rates[best])


def analytical_tokens_per_s(
    accept_probs: np.ndarray | Sequence[float],
    draft_step_s: float,
    verify_s: float,
    rtt_s: float = 0.0,
    *,
    uplink_bytes: float = 0.0,
    downlink_bytes: float = 0.0,
    uplink_bytes_per_s: float = math.inf,
    downlink_bytes_per_s: float = math.inf,
    overlap: bool = False,
) -> float:
    """The analytical bound (DESIGN.md §2): tokens/s of drafting K = len(accept_probs) every round with no overhead.

    accept_probs: [K] measured per-position conditional acceptance (``np.full(K, alpha)`` when only α is known).
    ``verify_s``: measured v(K) for this K; ``uplink_bytes``/``downlink_bytes``: bytes of one round. Without overlap
    a round takes K*t_draft + v + link; with overlap drafting the next block during the round trip hides
    min(K*t_draft, v + link), the best a pipelined loop can do (every speculative block lands on the right branch).
    K = 0 gives the rate of target-only rounds through the same link.
    """
    probs = _check_probs(accept_probs)
    inputs = CostInputs(
        accept_probs=probs,
        draft_step_s=float(draft_step_s),
        verify_s=Linear(base=float(verify_s)),
        target_step_s=0.0,
        rtt_s=float(rtt_s),
        uplink_bytes_per_s=uplink_bytes_per_s,
        downlink_bytes_per_s=downlink_bytes_per_s,
        draft_uplink_bytes=Linear(base=float(uplink_bytes)),
        draft_downlink_bytes=Linear(base=float(downlink_bytes)),
    )
    return plan_tokens_per_s(inputs, RoundPlan(burst=False, length=probs.size), overlap=overlap)
