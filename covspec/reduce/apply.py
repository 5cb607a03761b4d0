"""Reduction applied to a prompt: which positions of the rendered sequence the drafter prefills, and with what.

Engines (torch, ONNX Runtime, TensorRT) call ``reduce_prompt`` between the vision features and the decoder: every text
position stays, an image placeholder stays only when the reducer kept its token, and kept placeholders take the
reducer's features (their own, or merged ones). The caller prefills the kept positions with their original position
ids, so text after the image keeps its place and the sequence continues numbering from the full prompt.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from covspec.reduce.base import Budget
from covspec.reduce.reducers import reducer_named


@dataclass(frozen=True)
class TokenReduction:
    """What a drafter applies to each image: a reducer by name and a budget (``covspec run --reducer --keep``)."""

    reducer: str = "covspec"
    budget: Budget = Budget(ratio=1.0)

    def __post_init__(self) -> None:
        reducer_named(self.reducer)  # refuses an unknown name now, not at the first image

    @property
    def reduces(self) -> bool:
        """Whether it leaves anything out (a share of 1 keeps every token: the plain prefill)."""
        return not self.budget.keeps_everything

    def select(self, embeds: np.ndarray, image_positions: np.ndarray, features: np.ndarray) -> ReducedPrompt:
        """``reduce_prompt`` with this reduction: the ``select`` a model's ``start`` takes."""
        return reduce_prompt(embeds, image_positions, features, self)


@dataclass(frozen=True)
class ReducedPrompt:
    keep: np.ndarray  # bool [L]: the positions the drafter prefills
    embeds: np.ndarray  # [L, d]: the prompt's embeddings with the image positions' features (reduced where kept)
    image_tokens: int  # image positions before reduction
    kept_image_tokens: int
    method: str

    @property
    def dropped(self) -> int:
        return self.image_tokens - self.kept_image_tokens


def reduce_prompt(
    embeds: np.ndarray, image_positions: np.ndarray, features: np.ndarray, reduction: TokenReduction
) -> ReducedPrompt:
    """``embeds`` [L, d] the prompt's token embeddings, ``image_positions`` bool [L] the placeholders, ``features``
    [n, d] the vision features in placeholder order. The query is the prompt's text embeddings."""
    if int(image_positions.sum()) != features.shape[0]:
        raise ValueError(f"{features.shape[0]} image features for {int(image_positions.sum())} image placeholders")
    out = np.array(embeds, copy=True)
    places = np.flatnonzero(image_positions)
    with _blas().limit(limits=1, user_api="blas"):
        result = reducer_named(reduction.reducer).reduce(features, embeds[~image_positions], reduction.budget)
    keep = ~image_positions
    keep[places[result.kept]] = True
    out[places] = features.astype(out.dtype, copy=False)
    out[places[result.kept]] = result.features.astype(out.dtype, copy=False)
    return ReducedPrompt(keep, out, int(places.size), int(result.kept.size), result.method)


@functools.cache
def _blas() -> Any:
    """numpy's BLAS, held to one thread while a reducer runs: its matrices are a few hundred rows, too small for
    threads to pay, and a multi-threaded OpenBLAS leaves its threads spinning after each call, beside the engine's own
    (measured here: a 2-thread torch forward right after a 2-thread OpenBLAS product took 2.2x as long; the
    ``elastic`` rows of ``covspec bench reduce`` ran at half the tokens/s of the others until this limit)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


__all__ = ["ReducedPrompt", "TokenReduction", "reduce_prompt"]
