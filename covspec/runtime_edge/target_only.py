"""Target-only decoding, one token per forward: the baseline every speedup is measured against."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from covspec.models.base import ModelSequence
from covspec.spec import SamplingParams, canonical_probs, logits_to_probs, sample_token


def iter_target_tokens(
    sequence: ModelSequence,
    params: SamplingParams,
    max_new_tokens: int,
    eos_token_ids: frozenset[int],
    rng: np.random.Generator,
) -> Iterator[int]:
    """Yield the target's tokens one by one; stops after an EOS token (yielded) or ``max_new_tokens``."""
    logits = sequence.prefill_logits
    for _ in range(max_new_tokens):
        if params.is_greedy:
            token = int(np.argmax(logits))
        else:
            token = sample_token(canonical_probs(logits_to_probs(logits, params)), rng)
        yield token
        if token in eos_token_ids:
            return
        logits = sequence.extend([token])[0]
