"""The one sampling transform both sides use, and the canonical wire form of a distribution.

Speculative decoding is lossless only if the device and the edge agree on every distribution bit for bit:
the drafter samples a token from q, the edge tests it against p, and (in `dssd`) the device samples a residual
from p and q. Both sides therefore

1. turn logits into probabilities with :func:`logits_to_probs` (temperature, top-k, top-p, in float64);
2. exchange probabilities as float32 (:func:`to_wire_probs`);
3. sample and test only with the *canonical* float64 form, :func:`from_wire_probs` of those float32 values.

:func:`from_wire_probs` normalises each row by the exactly rounded sum of its float32 values (an integer sum,
independent of order, CPU and numpy build), so the same float32 bytes give the same float64 row everywhere, and the
dense and sparse (:class:`SparseProbs`) paths agree bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MIN_TEMPERATURE",
    "SamplingParams",
    "SparseProbs",
    "canonical_probs",
    "dense_from_sparse",
    "from_wire_probs",
    "logits_to_probs",
    "sample_token",
    "sparse_from_dense",
    "to_wire_probs",
]


_REAL_TYPES = (int, float, np.integer, np.floating)
# The smallest non-zero temperature: logits (float32 range) divided by it stay finite in float64, so no NaN can come
# out of the transform; below it, greedy (temperature 0) is what a caller means.
MIN_TEMPERATURE = 1e-3


@dataclass(frozen=True)
class SamplingParams:
    """How logits become a distribution. ``temperature == 0`` is greedy (and ignores ``seed``).

    ``top_k == 0`` and ``top_p == 1.0`` switch those filters off. ``seed`` is carried for the caller that builds the
    ``numpy.random.Generator``; nothing in this module reads it.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def is_greedy(self) -> bool:
        """Greedy decoding: the argmax, no randomness."""
        return self.temperature == 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field that is out of range."""
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, _REAL_TYPES):
            raise ValueError(f"temperature must be a number, got {self.temperature!r}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be finite and >= 0, got {self.temperature!r}")
        if 0 < self.temperature < MIN_TEMPERATURE:
            raise ValueError(f"temperature must be 0 (greedy) or >= {MIN_TEMPERATURE}, got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, np.integer)):
            raise ValueError(f"top_k must be an integer (0 = off), got {self.top_k!r}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k!r}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, _REAL_TYPES):
            raise ValueError(f"top_p must be a number, got {self.top_p!r}")
        if not (0.0 < self.top_p <= 1.0):  # also rejects NaN
            raise ValueError(f"top_p must satisfy 0 < top_p <= 1, got {self.top_p!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")


# --------------------------------------------------------------------------------------------------------------------
# logits -> probabilities


def _check_logits(logits: np.ndarray) -> np.ndarray:
    """Return logits as float64 [..., V]; reject NaN, +inf and rows with no finite logit."""
    logits = np.asarray(logits)
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape [..., V] with V >= 1, got {logits.shape}")
    if not np.issubdtype(logits.dtype, np.floating):
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    logits = logits.astype(np.float64)
    if np.isnan(logits).any():
        raise ValueError("logits contain NaN")
    if np.isposinf(logits).any():
        raise ValueError("logits contain +inf")
    if not np.isfinite(logits).any(axis=-1).all():
        raise ValueError("a row of logits is entirely -inf: no token can be sampled")
    return logits


def _mask_top_k(scores: np.ndarray, top_k: int) -> np.ndarray:
    """Keep every score >= the k-th largest (ties at the boundary are all kept, as Hugging Face does).

    scores: [..., V] float64. Returns a new array with removed entries set to -inf.
    """
    vocab_size = scores.shape[-1]
    if top_k == 0 or top_k >= vocab_size:
        return scores
    kth_largest = np.partition(scores, vocab_size - top_k, axis=-1)[..., vocab_size - top_k : vocab_size - top_k + 1]
    return np.where(scores >= kth_largest, scores, -np.inf)


def _mask_top_p(scores: np.ndarray, top_p: float) -> np.ndarray:
    """Nucleus filter with Hugging Face's semantics.

    Sort ascending (stable, so among equal scores the lower id comes first), drop each token whose cumulative
    probability is <= 1 - top_p, and always keep the most likely one. scores: [..., V] float64.
    """
    if top_p >= 1.0:
        return scores
    order = np.argsort(scores, axis=-1, kind="stable")
    sorted_scores = np.take_along_axis(scores, order, axis=-1)
    cumulative = np.cumsum(_softmax(sorted_scores), axis=-1)
    remove_sorted = cumulative <= 1.0 - top_p
    remove_sorted[..., -1] = False
    remove = np.empty_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, -np.inf, scores)


def _softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64; -inf entries become exactly 0.0. scores: [..., V]."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=-1, keepdims=True)


def logits_to_probs(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """The sampling transform shared by device and edge.

    logits: [..., V] floating point (-inf allowed, NaN and +inf not, every row needs one finite logit).
    Returns [..., V] float64. Greedy: one-hot at the argmax (the first index on ties). Otherwise
    logits / temperature, then top-k, then top-p, then softmax; filtered entries are exactly 0.0.
    """
    params.validate()
    scores = _check_logits(logits)
    if params.is_greedy:
        winners = np.argmax(scores, axis=-1)[..., None]
        one_hot = np.zeros_like(scores)
        np.put_along_axis(one_hot, winners, 1.0, axis=-1)
        return one_hot
    scores = scores / float(params.temperature)
    scores = _mask_top_k(scores, int(params.top_k))
    scores = _mask_top_p(scores, float(params.top_p))
    return _softmax(scores)


# --------------------------------------------------------------------------------------------------------------------
# wire form and canonical form

_FLOAT32_BIASED_EXPONENTS = 256  # the 8-bit exponent field of a float32


def _exact_row_sums(wire: np.ndarray) -> list[float]:
    """Exactly rounded sum of each row of nonnegative finite float32 values. wire: [R, V] float32.

    A float32 with biased exponent ``e`` and 23-bit fraction ``f`` is ``(f + 2**23 * (e > 0)) * 2**(max(e, 1) - 150)``.
    Grouped by ``e``, the fractions sum to an integer below 2**52 (V < 2**29), which float64 holds exactly; the
    groups then combine as Python integers and one integer division rounds the total correctly. The result depends
    on neither the order of the values nor the platform.
    """
    vocab_size = wire.shape[1]
    if vocab_size >= 2**29:
        raise ValueError(f"vocabulary of {vocab_size} is too large for the exact row sum")
    sums = []
    for row in np.ascontiguousarray(wire):
        bits = row.view(np.uint32)
        biased_exponent = (bits >> np.uint32(23)) & np.uint32(0xFF)  # & drops the sign bit of -0.0
        fraction_sums = np.bincount(
            biased_exponent, weights=bits & np.uint32(0x7FFFFF), minlength=_FLOAT32_BIASED_EXPONENTS
        )
        counts = np.bincount(biased_exponent, minlength=_FLOAT32_BIASED_EXPONENTS)
        total = int(fraction_sums[0])  # zeros and subnormals: no implicit leading bit, scale 2**-149
        for exponent in np.flatnonzero(counts[1:]) + 1:
            significand_sum = int(fraction_sums[exponent]) + (int(counts[exponent]) << 23)
            total += significand_sum << (int(exponent) - 1)
        sums.append(total / (1 << 149))
    return sums


def _check_probs(probs: np.ndarray, name: str) -> np.ndarray:
    """probs: [..., V]; must be floating, finite and nonnegative with a positive sum per row."""
    probs = np.asarray(probs)
    if probs.ndim < 1 or probs.shape[-1] < 1:
        raise ValueError(f"{name} must have shape [..., V] with V >= 1, got {probs.shape}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"{name} must be floating point, got {probs.dtype}")
    if not np.isfinite(probs).all():
        raise ValueError(f"{name} contain NaN or inf")
    if (probs < 0).any():
        raise ValueError(f"{name} contain negative entries")
    if not (probs > 0).any(axis=-1).all():
        raise ValueError(f"a row of {name} is all zero")
    return probs


def to_wire_probs(probs: np.ndarray) -> np.ndarray:
    """Cast probabilities to the float32 form that travels between device and edge.

    probs: [..., V] float (usually the float64 output of :func:`logits_to_probs`). Returns [..., V] float32.
    """
    wire = _check_probs(probs, "probs").astype(np.float32)
    if not (wire > 0).any(axis=-1).all():  # impossible for a distribution: its largest entry is >= 1/V
        raise ValueError("a row of probs underflows to all zero in float32")
    return wire


def from_wire_probs(wire: np.ndarray) -> np.ndarray:
    """The canonical float64 distribution of float32 wire probabilities.

    wire: [..., V] float32. Returns [..., V] float64: each row cast up and divided by its exactly rounded sum, so the
    same float32 bytes give the bit-identical row on every machine.
    """
    wire = np.asarray(wire)
    if wire.dtype != np.float32:
        raise ValueError(f"wire probabilities must be float32, got {wire.dtype}")
    _check_probs(wire, "wire probabilities")
    rows = wire.reshape(-1, wire.shape[-1])
    sums = np.asarray(_exact_row_sums(rows), dtype=np.float64)
    canonical = rows.astype(np.float64) / sums[:, None]
    return canonical.reshape(wire.shape)


def canonical_probs(probs: np.ndarray) -> np.ndarray:
    """``from_wire_probs(to_wire_probs(probs))``: the form both sides sample from and test against.

    probs: [..., V] float. Returns [..., V] float64.
    """
    return from_wire_probs(to_wire_probs(probs))


# --------------------------------------------------------------------------------------------------------------------
# sampling


def sample_token(probs: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one token id with probability proportional to ``probs`` by the exponential race.

    probs: [V] float, nonnegative, need not be normalised. ``argmax(probs / E)`` with ``E ~ Exp(1)`` i.i.d. picks id
    ``i`` with probability ``probs[i] / sum(probs)`` exactly, needs no normalisation, and a zero entry never wins.
    Consumes exactly ``V`` exponential draws from ``rng``.
    """
    probs = _check_probs(probs, "probs")
    if probs.ndim != 1:
        raise ValueError(f"sample_token takes one row [V], got shape {probs.shape}")
    race = rng.exponential(size=probs.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(probs > 0, probs / race, -1.0)  # E == 0 gives +inf: that id wins, as the race says
    return int(np.argmax(scores))


# --------------------------------------------------------------------------------------------------------------------
# sparse rows


@dataclass(frozen=True, eq=False)
class SparseProbs:
    """The nonzero support of one float32 wire row: ``ids`` [m] int32 by descending prob (ties: ascending id),
    ``probs`` [m] float32, all > 0. Used where the target's own top-k / top-p makes its rows sparse (`compact`)."""

    ids: np.ndarray
    probs: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.ids, np.ndarray) or self.ids.dtype != np.int32 or self.ids.ndim != 1:
            raise ValueError("SparseProbs.ids must be a 1-D int32 array")
        if not isinstance(self.probs, np.ndarray) or self.probs.dtype != np.float32 or self.probs.ndim != 1:
            raise ValueError("SparseProbs.probs must be a 1-D float32 array")
        if self.ids.shape != self.probs.shape or self.ids.size == 0:
            raise ValueError(
                f"SparseProbs needs matching nonempty ids and probs, got {self.ids.shape}, {self.probs.shape}"
            )
        if not (np.isfinite(self.probs).all() and (self.probs > 0).all()):
            raise ValueError("SparseProbs.probs must be finite and > 0")
        if (self.ids < 0).any() or np.unique(self.ids).size != self.ids.size:
            raise ValueError("SparseProbs.ids must be distinct and nonnegative")
        if (np.diff(self.probs) > 0).any():
            raise ValueError("SparseProbs must be sorted by descending probability")

    def __len__(self) -> int:
        return int(self.ids.size)


def sparse_from_dense(probs: np.ndarray) -> SparseProbs:
    """The exact nonzero support of a row's wire form (lossless: see :func:`dense_from_sparse`).

    probs: [V] float; float64 rows are first cast with :func:`to_wire_probs`, float32 rows are taken as wire values.
    """
    probs = np.asarray(probs)
    if probs.ndim != 1:
        raise ValueError(f"sparse_from_dense takes one row [V], got shape {probs.shape}")
    wire = probs if probs.dtype == np.float32 else to_wire_probs(probs)
    _check_probs(wire, "probs")
    if wire.shape[0] > np.iinfo(np.int32).max:
        raise ValueError("vocabulary too large for int32 ids")
    support = np.flatnonzero(wire)
    order = np.argsort(-wire[support], kind="stable")  # descending prob, ties by ascending id
    ids = support[order].astype(np.int32)
    return SparseProbs(ids=ids, probs=wire[ids].copy())


def dense_from_sparse(sparse: SparseProbs, vocab_size: int) -> np.ndarray:
    """The canonical float64 row [vocab_size] of a sparse wire row.

    Sums only the m support values, yet is bit-identical to ``from_wire_probs`` of the dense float32 row: both divide
    by the exactly rounded sum of the same float32 values, which neither order nor the zeros can change.
    """
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    if int(sparse.ids.max()) >= vocab_size:
        raise ValueError(f"sparse id {int(sparse.ids.max())} is outside the vocabulary of {vocab_size}")
    (total,) = _exact_row_sums(sparse.probs[None, :])
    dense = np.zeros(vocab_size, dtype=np.float64)
    dense[sparse.ids] = sparse.probs.astype(np.float64) / total
    return dense
