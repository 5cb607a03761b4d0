"""The visual-token reducers behind one interface (``covspec.reduce.base.Reducer``).

- ``covspec``: CoVSpec's three criteria, reconstructed (the paper gives no formulas): *query relevance* (the prompt's
  attention over the visual tokens), *token activity* (feature norm), and *low-rank dependency* (a token the kept ones
  already explain adds nothing). Importance is the mean of the first two, each as a share of its largest value. The
  kept set is chosen by importance-weighted, column-pivoted Gram-Schmidt: each step keeps the token with the largest
  importance times the share of it the kept tokens do not explain (its residual's norm over its own, against the
  span of those kept so far), so a near-duplicate of a kept token (share ~ 0) is kept last. Features wider than
  ``SKETCH_DIM`` are read through a fixed Gaussian sketch for this test (cost, not quality: see there). Importance
  is raised to ``IMPORTANCE_POWER`` so that relevance leads and novelty decides among tokens of like importance.
  Past the features' rank every residual is zero and the rest are kept by importance.
- ``pool``: uniform pooling, the baseline that ignores content: the tokens split into ``k`` contiguous groups, each
  kept at its middle position with the group's mean feature.
- ``random``: a seeded uniform subset, the floor any criterion must beat.
- ``merge``: ToMe / iLLaVA-style merging: the ``k`` most important tokens are kept and every dropped token is averaged
  into the kept token it is most similar to (cosine), so what is dropped still contributes.
- ``elastic``: SpecVLM's per-input choice among them: prune (``covspec``) when the prompt's attention is
  concentrated on about as many tokens as the budget keeps, merge when the tokens are largely redundant, pool
  otherwise (thresholds below).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from covspec.reduce.base import (
    Budget,
    Reduction,
    activity,
    keep_all,
    relevance,
    share_of_max,
    top_k,
    unit_rows,
)


class Selecting:
    """A reducer that picks ``k`` of ``n`` tokens (``select``); the budget and the keep-everything case are here."""

    name: str

    def select(self, features: np.ndarray, query: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(kept indices ascending, their features) for ``0 < k < n``."""
        raise NotImplementedError

    def reduce(self, features: np.ndarray, query: np.ndarray | None, budget: Budget) -> Reduction:
        k = budget.tokens(features.shape[0])
        if k >= features.shape[0]:
            return keep_all(features, self.name)
        kept, selected = self.select(features, query, k)
        return Reduction(kept, selected, self.name)


def importance(features: np.ndarray, query: np.ndarray | None) -> np.ndarray:
    """Query relevance and token activity, each as a share of its largest value, averaged (without a query: activity
    alone). Shares, not ranks: tokens of nearly equal activity stay nearly equal."""
    act = share_of_max(activity(features))
    if query is None or query.shape[0] == 0:
        return act
    return 0.5 * (share_of_max(relevance(features, query)) + act)


def pivoted_selection(features: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """``k`` token indices chosen greedily by ``weights`` x the share of each token left unexplained by the span of
    those already chosen (its residual's norm over its own: importance-weighted column-pivoted QR); ties go to the
    earlier token. Returned ascending."""
    x = features.astype(np.float64)
    residual = x.copy()
    own = np.maximum(np.linalg.norm(x, axis=1), 1e-12)
    scale = float(own.max())
    chosen: list[int] = []
    available = np.ones(x.shape[0], dtype=bool)
    for _ in range(k):
        norms = np.linalg.norm(residual, axis=1)
        independent = norms > 1e-9 * scale
        if not np.any(independent & available):  # past the features' rank: the rest by importance alone
            rest = np.flatnonzero(available)
            order = rest[np.lexsort((rest, -weights[rest]))]
            chosen.extend(int(i) for i in order[: k - len(chosen)])
            break
        score = np.where(available & independent, weights * norms / own, -np.inf)
        pick = int(np.argmax(score))  # argmax returns the first of equal maxima
        chosen.append(pick)
        available[pick] = False
        direction = residual[pick] / norms[pick]
        residual -= np.outer(residual @ direction, direction)
    return np.sort(np.asarray(chosen, dtype=np.int64))


# the dependency test reads features through a seeded Gaussian sketch of this many dimensions when they are wider: a
# token's unexplained share keeps its size within a few percent (Johnson-Lindenstrauss), and the selection costs
# k passes over [n, SKETCH_DIM] instead of [n, d] (576 tokens of a 1024-wide drafter: about 8x less)
SKETCH_DIM = 128


def sketch(features: np.ndarray, dim: int) -> np.ndarray:
    """``features`` [n, d] projected to ``dim`` dimensions by a fixed seeded Gaussian map (unchanged when d <= dim):
    exact duplicates stay duplicates, and norms and angles are kept up to a small distortion."""
    d = features.shape[1]
    if d <= dim:
        return features
    return features.astype(np.float64) @ _gaussian_map(d, dim)


@functools.cache
def _gaussian_map(d: int, dim: int) -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, 1.0 / np.sqrt(dim), size=(d, dim))


# how much importance outweighs novelty in the CoVSpec selection: with 4, a token of importance 0.9 left 60%
# unexplained still beats a token of importance 0.7 entirely new (0.9**4 * 0.6 > 0.7**4); among tokens of like
# importance, novelty decides
IMPORTANCE_POWER = 4


@dataclass(frozen=True)
class CovspecReducer(Selecting):
    name: str = "covspec"

    def select(self, features: np.ndarray, query: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        weights = (0.05 + importance(features, query)) ** IMPORTANCE_POWER
        kept = pivoted_selection(sketch(features, SKETCH_DIM), weights, k)
        return kept, features[kept]


@dataclass(frozen=True)
class PoolReducer(Selecting):
    name: str = "pool"

    def select(self, features: np.ndarray, query: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = features.shape[0]
        groups = np.array_split(np.arange(n), k)
        kept = np.asarray([g[(len(g) - 1) // 2] for g in groups], dtype=np.int64)
        pooled = np.stack([features[g].mean(axis=0) for g in groups]).astype(features.dtype)
        return kept, pooled


@dataclass(frozen=True)
class RandomReducer(Selecting):
    seed: int = 0
    name: str = "random"

    def select(self, features: np.ndarray, query: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = features.shape[0]
        kept = np.sort(np.random.default_rng(self.seed).choice(n, size=k, replace=False)).astype(np.int64)
        return kept, features[kept]


@dataclass(frozen=True)
class MergeReducer(Selecting):
    name: str = "merge"

    def select(self, features: np.ndarray, query: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = features.shape[0]
        kept = top_k(importance(features, query), k)
        dropped = np.setdiff1d(np.arange(n), kept)
        unit = unit_rows(features.astype(np.float64))
        target = np.argmax(unit[dropped] @ unit[kept].T, axis=1)  # the kept token each dropped one is most like
        sums = features[kept].astype(np.float64).copy()
        counts = np.ones(k)
        np.add.at(sums, target, features[dropped].astype(np.float64))
        np.add.at(counts, target, 1.0)
        return kept, (sums / counts[:, None]).astype(features.dtype)


# elastic: the prompt's attention is "concentrated" when the k tokens it attends to most hold this many times the
# share of its attention k tokens hold on average (k / n), and the tokens are "redundant" when the mean cosine
# similarity of each token to its nearest neighbour is above this
CONCENTRATION = 2.0
REDUNDANT_SIMILARITY = 0.9


@dataclass(frozen=True)
class ElasticReducer:
    name: str = "elastic"

    def choose(self, features: np.ndarray, query: np.ndarray | None, k: int) -> str:
        """Which reducer suits this input at a budget of ``k`` tokens: ``covspec``, ``merge`` or ``pool``."""
        n = features.shape[0]
        if query is not None and query.shape[0] and 0 < k < n:
            top_mass = float(np.sort(relevance(features, query))[::-1][:k].sum())
            if top_mass >= CONCENTRATION * k / n:
                return "covspec"
        if n > 1:
            unit = unit_rows(features.astype(np.float64))
            similarity = unit @ unit.T
            np.fill_diagonal(similarity, -np.inf)
            if float(similarity.max(axis=1).mean()) > REDUNDANT_SIMILARITY:
                return "merge"
        return "pool"

    def reduce(self, features: np.ndarray, query: np.ndarray | None, budget: Budget) -> Reduction:
        choice = self.choose(features, query, budget.tokens(features.shape[0]))
        inner = REDUCERS[choice].reduce(features, query, budget)
        return Reduction(inner.kept, inner.features, f"{self.name}:{choice}")


REDUCERS: dict[str, CovspecReducer | PoolReducer | RandomReducer | MergeReducer | ElasticReducer] = {
    "covspec": CovspecReducer(),
    "pool": PoolReducer(),
    "random": RandomReducer(),
    "merge": MergeReducer(),
    "elastic": ElasticReducer(),
}


def reducer_named(name: str) -> CovspecReducer | PoolReducer | RandomReducer | MergeReducer | ElasticReducer:
    if name not in REDUCERS:
        raise ValueError(f"unknown reducer {name!r}; choose one of {', '.join(REDUCERS)}")
    return REDUCERS[name]


__all__ = [
    "REDUCERS",
    "CovspecReducer",
    "ElasticReducer",
    "MergeReducer",
    "PoolReducer",
    "RandomReducer",
    "importance",
    "pivoted_selection",
    "reducer_named",
]
