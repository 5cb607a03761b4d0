"""Verification of one draft block: greedy, stochastic (speculative sampling) and its DSSD split.

Vocabulary (DESIGN.md §2): the device drafts K tokens ``draft_tokens``; the target scores K+1 positions; the verdict
says how many drafted tokens were ``accepted`` and gives one more ``token`` (the correction after a rejection, or
the bonus token after full acceptance), so a round commits ``accepted + 1`` tokens.

Every sampler here and every exact-distribution twin is built from two primitives, :func:`acceptance_probability`
and :func:`residual_distribution`, so a proof by enumeration of the twins is a proof about the samplers, and the
sampler tests only need to show that each sampler draws from its twin.

All distributions are float64 rows that sum to 1: pass the canonical form (``canonical_probs``) that both sides
share, never a locally rounded one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from covspec.spec.sampling import sample_token

__all__ = [
    "Verdict",
    "accept_prefix",
    "acceptance_probabilities",
    "acceptance_probability",
    "accepted_count_distribution",
    "dssd_verdict_distribution",
    "residual_distribution",
    "sample_residual",
    "verdict_distribution",
    "verify_dssd",
    "verify_greedy",
    "verify_stochastic",
]

_SUM_TOLERANCE = 1e-6  # rows must be distributions; canonical rows sum to 1 within a few ulps


@dataclass(frozen=True)
class Verdict:
    """The edge's answer to one draft block.

    ``accepted``: drafted tokens kept (0..K). ``token``: the correction after a rejection, or the bonus token after
    full acceptance. ``bonus``: True exactly when all K were accepted.
    """

    accepted: int
    token: int
    bonus: bool

    def committed(self, draft_tokens: list[int] | np.ndarray) -> list[int]:
        """The tokens this round commits: ``draft_tokens[:accepted] + [token]``. draft_tokens: [K] int."""
        tokens = [int(t) for t in draft_tokens]
        if self.accepted > len(tokens):
            raise ValueError(f"verdict accepts {self.accepted} tokens but the block has {len(tokens)}")
        return tokens[: self.accepted] + [self.token]


# --------------------------------------------------------------------------------------------------------------------
# primitives


def acceptance_probability(target_prob_of_token: float, draft_prob_of_token: float) -> float:
    """``min(1, p(x) / q(x))``: the chance a drafted token x survives the target's test.

    A drafted token was sampled from the draft distribution, so its draft probability is always > 0; a zero means the
    caller sent the wrong row, and is an error rather than a division by zero.
    """
    target_prob_of_token = float(target_prob_of_token)
    draft_prob_of_token = float(draft_prob_of_token)
    if not (np.isfinite(target_prob_of_token) and target_prob_of_token >= 0):
        raise ValueError(f"target probability of the token must be finite and >= 0, got {target_prob_of_token}")
    if not (np.isfinite(draft_prob_of_token) and draft_prob_of_token > 0):
        raise ValueError(f"draft probability of a drafted token must be finite and > 0, got {draft_prob_of_token}")
    return min(1.0, target_prob_of_token / draft_prob_of_token)


def residual_distribution(target_probs: np.ndarray, draft_probs: np.ndarray) -> np.ndarray:
    """``normalise(max(0, p - q))``: where the correction after a rejection is drawn from.

    target_probs: [V] float64, draft_probs: [V] float64, both distributions. Returns [V] float64 summing to 1.

    If the residual is all zero then p <= q everywhere, and both summing to 1 forces p == q, so every drafted token
    is accepted with probability 1 and no rejection, hence no call, can happen. Only rounding (p and q equal up to a
    few ulps) can reach that branch; it then returns p, the target's own row, which keeps sampling well defined.
    """
    target_probs = _check_row(target_probs, "target_probs")
    draft_probs = _check_row(draft_probs, "draft_probs")
    if target_probs.shape != draft_probs.shape:
        raise ValueError(f"target_probs {target_probs.shape} and draft_probs {draft_probs.shape} differ in shape")
    residual = np.maximum(target_probs - draft_probs, 0.0)
    total = residual.sum()
    if total <= 0.0:
        return target_probs / target_probs.sum()
    return residual / total


def acceptance_probabilities(
    draft_tokens: np.ndarray, draft_token_probs: np.ndarray, target_probs: np.ndarray
) -> np.ndarray:
    """Per-position acceptance probabilities, from what the edge holds in `dssd` mode.

    draft_tokens: [K] int, draft_token_probs: [K] float64 (q_i(x_i) only), target_probs: [K+1, V] float64.
    Returns [K] float64.
    """
    draft_tokens, target_probs = _check_tokens_and_targets(draft_tokens, target_probs)
    draft_token_probs = np.asarray(draft_token_probs, dtype=np.float64).reshape(-1)
    if draft_token_probs.shape != draft_tokens.shape:
        raise ValueError(f"draft_token_probs {draft_token_probs.shape} must match draft_tokens {draft_tokens.shape}")
    return np.array(
        [acceptance_probability(target_probs[i, token], draft_token_probs[i]) for i, token in enumerate(draft_tokens)],
        dtype=np.float64,
    )


def accepted_count_distribution(acceptance_probs: np.ndarray) -> np.ndarray:
    """P(accepted == n) for n = 0..K, when position i passes with probability acceptance_probs[i] and testing stops
    at the first failure. acceptance_probs: [K] float64 in [0, 1]. Returns [K+1] float64."""
    acceptance_probs = np.asarray(acceptance_probs, dtype=np.float64).reshape(-1)
    if ((acceptance_probs < 0) | (acceptance_probs > 1)).any():
        raise ValueError("acceptance probabilities must lie in [0, 1]")
    reach = np.concatenate([[1.0], np.cumprod(acceptance_probs)])  # [K+1]: P(positions 0..n-1 all pass)
    stop_here = np.append(1.0 - acceptance_probs, 1.0)  # [K+1]: P(position n fails); K has nothing left to test
    return reach * stop_here


# --------------------------------------------------------------------------------------------------------------------
# samplers


def verify_greedy(draft_tokens: np.ndarray, target_argmax: np.ndarray) -> Verdict:
    """Greedy verification: keep the longest prefix on which the draft equals the target's argmax.

    draft_tokens: [K] int (K may be 0), target_argmax: [K+1] int, the target's argmax at each position.
    """
    draft_tokens = _as_tokens(draft_tokens, "draft_tokens")
    target_argmax = _as_tokens(target_argmax, "target_argmax")
    num_draft = draft_tokens.shape[0]
    if target_argmax.shape[0] != num_draft + 1:
        raise ValueError(f"target_argmax needs K+1 = {num_draft + 1} entries, got {target_argmax.shape[0]}")
    mismatches = np.flatnonzero(draft_tokens != target_argmax[:num_draft])
    accepted = int(mismatches[0]) if mismatches.size else num_draft
    return Verdict(accepted=accepted, token=int(target_argmax[accepted]), bonus=accepted == num_draft)


def verify_stochastic(
    draft_tokens: np.ndarray, draft_probs: np.ndarray, target_probs: np.ndarray, rng: np.random.Generator
) -> Verdict:
    """Speculative sampling (Leviathan et al.; Chen et al.): the committed tokens follow the target exactly.

    draft_tokens: [K] int, draft_probs: [K, V] float64, target_probs: [K+1, V] float64.
    Position i is accepted iff ``rng.random() < acceptance_probability(p_i(x_i), q_i(x_i))`` (one uniform per tested
    position); the first rejection draws the correction from ``residual_distribution(p_i, q_i)``; full acceptance
    draws the bonus from ``p_K``. Used by `vanilla` (on the edge) and `compact` (on the device, sparse target rows).
    """
    draft_tokens, draft_probs, target_probs = _check_block(draft_tokens, draft_probs, target_probs)
    for i, token in enumerate(draft_tokens):
        accept = acceptance_probability(target_probs[i, token], draft_probs[i, token])
        if not rng.random() < accept:
            correction = sample_token(residual_distribution(target_probs[i], draft_probs[i]), rng)
            return Verdict(accepted=i, token=correction, bonus=False)
    num_draft = draft_tokens.shape[0]
    return Verdict(accepted=num_draft, token=sample_token(target_probs[num_draft], rng), bonus=True)


def accept_prefix(
    draft_tokens: np.ndarray, draft_token_probs: np.ndarray, target_probs: np.ndarray, rng: np.random.Generator
) -> int:
    """Edge half of `dssd`: how many drafted tokens pass, knowing only q_i(x_i) for each.

    draft_tokens: [K] int, draft_token_probs: [K] float64, target_probs: [K+1, V] float64. Consumes one
    ``rng.random()`` per tested position, like :func:`verify_stochastic`. After a rejection at ``accepted`` the edge
    sends ``target_probs[accepted]`` and the device calls :func:`sample_residual`; after full acceptance the edge
    draws the bonus itself with ``sample_token(target_probs[K], rng)``.
    """
    accept_probs = acceptance_probabilities(draft_tokens, draft_token_probs, target_probs)  # [K]
    for i, accept in enumerate(accept_probs):
        if not rng.random() < accept:
            return i
    return int(accept_probs.shape[0])


def sample_residual(target_probs_row: np.ndarray, draft_probs_row: np.ndarray, rng: np.random.Generator) -> int:
    """Device half of `dssd`: the correction after a rejection, from the one target row the edge sent.

    target_probs_row: [V] float64, draft_probs_row: [V] float64 (the device's own row at that position).
    """
    return sample_token(residual_distribution(target_probs_row, draft_probs_row), rng)


def verify_dssd(
    draft_tokens: np.ndarray,
    draft_probs: np.ndarray,
    target_probs: np.ndarray,
    edge_rng: np.random.Generator,
    device_rng: np.random.Generator,
) -> Verdict:
    """Both `dssd` halves in one process (tests, in-process runs).

    draft_tokens: [K] int, draft_probs: [K, V] float64 (only q_i(x_i) reaches the edge half), target_probs:
    [K+1, V] float64. With ``edge_rng is device_rng`` it consumes randomness exactly as :func:`verify_stochastic`.
    """
    draft_tokens, draft_probs, target_probs = _check_block(draft_tokens, draft_probs, target_probs)
    num_draft = draft_tokens.shape[0]
    draft_token_probs = draft_probs[np.arange(num_draft), draft_tokens]  # [K]: what the uplink carries
    accepted = accept_prefix(draft_tokens, draft_token_probs, target_probs, edge_rng)
    if accepted == num_draft:
        return Verdict(accepted=accepted, token=sample_token(target_probs[num_draft], edge_rng), bonus=True)
    correction = sample_residual(target_probs[accepted], draft_probs[accepted], device_rng)
    return Verdict(accepted=accepted, token=correction, bonus=False)


# --------------------------------------------------------------------------------------------------------------------
# exact distributions (math-level twins of the samplers)


def verdict_distribution(
    draft_tokens: np.ndarray, draft_probs: np.ndarray, target_probs: np.ndarray
) -> dict[tuple[int, int], float]:
    """Exact law of :func:`verify_stochastic` for these draft tokens: {(accepted, token): probability > 0}.

    draft_tokens: [K] int, draft_probs: [K, V] float64, target_probs: [K+1, V] float64.
    """
    draft_tokens, draft_probs, target_probs = _check_block(draft_tokens, draft_probs, target_probs)
    outcomes: dict[tuple[int, int], float] = {}
    reach = 1.0  # P(positions 0..i-1 all accepted)
    for i, token in enumerate(draft_tokens):
        accept = acceptance_probability(target_probs[i, token], draft_probs[i, token])
        if accept < 1.0:
            _add_row(outcomes, i, reach * (1.0 - accept), residual_distribution(target_probs[i], draft_probs[i]))
        reach *= accept
    num_draft = draft_tokens.shape[0]
    _add_row(outcomes, num_draft, reach, target_probs[num_draft] / target_probs[num_draft].sum())
    return outcomes


def dssd_verdict_distribution(
    draft_tokens: np.ndarray, draft_probs: np.ndarray, target_probs: np.ndarray
) -> dict[tuple[int, int], float]:
    """Exact law of :func:`verify_dssd`, from the halves' own primitives: the edge's per-position acceptance
    (:func:`acceptance_probabilities` on q_i(x_i) only), then the device's residual or the edge's bonus row.

    draft_tokens: [K] int, draft_probs: [K, V] float64, target_probs: [K+1, V] float64.
    """
    draft_tokens, draft_probs, target_probs = _check_block(draft_tokens, draft_probs, target_probs)
    num_draft = draft_tokens.shape[0]
    draft_token_probs = draft_probs[np.arange(num_draft), draft_tokens]
    count_probs = accepted_count_distribution(acceptance_probabilities(draft_tokens, draft_token_probs, target_probs))
    outcomes: dict[tuple[int, int], float] = {}
    for accepted in range(num_draft):
        if count_probs[accepted] > 0:
            residual = residual_distribution(target_probs[accepted], draft_probs[accepted])
            _add_row(outcomes, accepted, count_probs[accepted], residual)
    _add_row(outcomes, num_draft, count_probs[num_draft], target_probs[num_draft] / target_probs[num_draft].sum())
    return outcomes


def _add_row(outcomes: dict[tuple[int, int], float], accepted: int, weight: float, token_probs: np.ndarray) -> None:
    """Add ``weight * token_probs[t]`` to outcome (accepted, t) for every t with positive mass. token_probs: [V]."""
    if weight <= 0.0:
        return
    for token in np.flatnonzero(token_probs > 0):
        key = (accepted, int(token))
        outcomes[key] = outcomes.get(key, 0.0) + weight * float(token_probs[token])


# --------------------------------------------------------------------------------------------------------------------
# entry checks


def _as_tokens(tokens: np.ndarray, name: str) -> np.ndarray:
    """tokens: [n] integer ids, returned as int64."""
    tokens = np.asarray(tokens)
    if tokens.size == 0:
        return np.zeros(0, dtype=np.int64)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array, got shape {tokens.shape} dtype {tokens.dtype}")
    if (tokens < 0).any():
        raise ValueError(f"{name} contains a negative token id")
    return tokens.astype(np.int64)


def _check_row(probs: np.ndarray, name: str) -> np.ndarray:
    """probs: [V] float, finite, nonnegative, summing to 1 (within _SUM_TOLERANCE)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 1 or probs.shape[0] < 1:
        raise ValueError(f"{name} must be one row [V], got shape {probs.shape}")
    _check_distributions(probs[None, :], name)
    return probs


def _check_distributions(probs: np.ndarray, name: str) -> None:
    """probs: [R, V] float64; every row a distribution."""
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError(f"{name} must be finite and nonnegative")
    if probs.shape[0] and (np.abs(probs.sum(axis=-1) - 1.0) > _SUM_TOLERANCE).any():
        raise ValueError(f"every row of {name} must sum to 1 (pass canonical_probs rows)")


def _check_tokens_and_targets(draft_tokens: np.ndarray, target_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """draft_tokens: [K] int, target_probs: [K+1, V] float64; ids inside the vocabulary."""
    draft_tokens = _as_tokens(draft_tokens, "draft_tokens")
    target_probs = np.asarray(target_probs, dtype=np.float64)
    num_draft = draft_tokens.shape[0]
    if target_probs.ndim != 2 or target_probs.shape[0] != num_draft + 1 or target_probs.shape[1] < 1:
        raise ValueError(f"target_probs must have shape [K+1, V] = [{num_draft + 1}, V], got {target_probs.shape}")
    _check_distributions(target_probs, "target_probs")
    if num_draft and draft_tokens.max() >= target_probs.shape[1]:
        raise ValueError(f"draft token {int(draft_tokens.max())} is outside the vocabulary of {target_probs.shape[1]}")
    return draft_tokens, target_probs


def _check_block(
    draft_tokens: np.ndarray, draft_probs: np.ndarray, target_probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """draft_tokens: [K] int, draft_probs: [K, V] float64, target_probs: [K+1, V] float64.

    Also checks that every drafted token has draft probability > 0 (it was sampled from that row).
    """
    draft_tokens, target_probs = _check_tokens_and_targets(draft_tokens, target_probs)
    num_draft, vocab_size = draft_tokens.shape[0], target_probs.shape[1]
    draft_probs = np.asarray(draft_probs, dtype=np.float64)
    if num_draft == 0 and draft_probs.size == 0:
        draft_probs = draft_probs.reshape(0, vocab_size)
    if draft_probs.shape != (num_draft, vocab_size):
        raise ValueError(f"draft_probs must have shape [K, V] = [{num_draft}, {vocab_size}], got {draft_probs.shape}")
    _check_distributions(draft_probs, "draft_probs")
    drafted = draft_probs[np.arange(num_draft), draft_tokens]
    if (drafted <= 0).any():
        position = int(np.flatnonzero(drafted <= 0)[0])
        raise ValueError(f"draft token at position {position} has draft probability 0: it cannot have been drafted")
    return draft_tokens, draft_probs, target_probs
