"""What every visual-token reducer shares: the budget, the result, and the scores they are built from.

A reducer sees the visual tokens as the language model will (the projected image features, [n, d]) and the prompt's
text embeddings ([m, d], the query), and returns which tokens the drafter keeps, in their original order, with the
feature each kept token carries (its own, or, for merging reducers, the mean of the tokens merged into it). The
caller keeps every kept token's original position, so the drafter reads the image where it was, only sparser.

Pure numpy: the ONNX Runtime engine reduces on a device without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Budget:
    """How many visual tokens to keep: a ``ratio`` of them (0 < ratio <= 1) or a ``count``."""

    ratio: float | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.count is None):
            raise ValueError("a budget is a ratio or a count, not both or neither")
        if self.ratio is not None and not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"a budget ratio must be in (0, 1], got {self.ratio}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"a budget count must be >= 1, got {self.count}")

    @classmethod
    def parse(cls, text: str | float | int) -> Budget:
        """``"0.25"`` -> a ratio; ``"64"`` (a whole number above 1) -> a count; ``"1"`` / ``1.0`` -> everything."""
        value = float(text)
        if value > 1.0:
            if value != int(value):
                raise ValueError(f"a budget above 1 is a token count and must be whole, got {text!r}")
            return cls(count=int(value))
        return cls(ratio=value)

    def tokens(self, n: int) -> int:
        """How many of ``n`` tokens to keep (at least one, at most ``n``)."""
        if n <= 0:
            return 0
        wanted = self.count if self.count is not None else round(float(self.ratio or 0) * n)
        return max(1, min(n, int(wanted)))

    @property
    def keeps_everything(self) -> bool:
        return self.ratio == 1.0


@dataclass(frozen=True)
class Reduction:
    """The kept tokens: ``kept`` original indices (ascending, distinct) and the ``features`` [len(kept), d] they
    carry; ``method`` names what produced them (an elastic reducer records its choice)."""

    kept: np.ndarray
    features: np.ndarray
    method: str

    def __post_init__(self) -> None:
        if self.kept.ndim != 1 or self.features.shape[0] != self.kept.shape[0]:
            raise ValueError("one feature row per kept index")
        if self.kept.size and (np.any(np.diff(self.kept) <= 0) or self.kept[0] < 0):
            raise ValueError("kept indices must be ascending and distinct")


class Reducer(Protocol):
    name: str

    def reduce(self, features: np.ndarray, query: np.ndarray | None, budget: Budget) -> Reduction:
        """``features`` [n, d] visual tokens, ``query`` [m, d] the prompt's text embeddings (None: no prompt)."""
        ...


def keep_all(features: np.ndarray, method: str) -> Reduction:
    return Reduction(np.arange(features.shape[0], dtype=np.int64), np.asarray(features), method)


def unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def relevance(features: np.ndarray, query: np.ndarray | None) -> np.ndarray:
    """How much the prompt attends to each visual token: scaled dot-product attention of every query token over the
    visual tokens, averaged over the query (uniform without a query)."""
    n = features.shape[0]
    if query is None or query.shape[0] == 0:
        return np.full(n, 1.0 / n)
    x = features.astype(np.float64)
    q = query.astype(np.float64)
    logits = q @ x.T / np.sqrt(x.shape[1])  # [m, n]
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.mean(axis=0)


def activity(features: np.ndarray) -> np.ndarray:
    """How active each visual token is: its feature norm (tokens the projector left near zero carry little)."""
    return np.linalg.norm(features.astype(np.float64), axis=1)


def share_of_max(values: np.ndarray) -> np.ndarray:
    """``values`` over their largest (non-negative scores on different scales combine without one dominating)."""
    top = float(np.max(values)) if values.size else 0.0
    return values / top if top > 0 else np.ones_like(values, dtype=np.float64)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest scores' indices, ascending; ties go to the earlier token."""
    order = np.lexsort((np.arange(scores.shape[0]), -scores))
    return np.sort(order[:k]).astype(np.int64)


__all__ = [
    "Budget",
    "Reducer",
    "Reduction",
    "activity",
    "keep_all",
    "share_of_max",
    "relevance",
    "top_k",
    "unit_rows",
]
