"""Target-only decoding, one token per forward: the baseline every speedup is measured against, batched by the
scheduler with every other job's forwards (continuous batching)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from covspec.models.base import ModelSequence
from covspec.runtime_edge.steps import Forward, Steps
from covspec.spec import SamplingParams, canonical_probs, logits_to_probs, sample_token


def completion_steps(
    sequence: ModelSequence,
    params: SamplingParams,
    max_new_tokens: int,
    eos_token_ids: frozenset[int],
    rng: np.random.Generator,
    on_token: Callable[[int], None] | None = None,
) -> Steps[list[int]]:
    """The target's tokens, one forward each, ``on_token`` told of each as it comes (a stream); stops after an EOS
    token (kept) or ``max_new_tokens``. Returns them all."""
    logits, tokens = sequence.prefill_logits, []
    for _ in range(max_new_tokens):
        if params.is_greedy:
            token = int(np.argmax(logits))
        else:
            token = sample_token(canonical_probs(logits_to_probs(logits, params)), rng)
        tokens.append(token)
        if on_token is not None:
            on_token(token)
        if token in eos_token_ids or len(tokens) == max_new_tokens:
            break
        logits = (yield Forward(sequence, [token]))[0]
    return tokens
