"""The drafter's per-generation state: draft a block, then keep exactly the committed tokens.

The drafter's KV cache holds the prompt and committed tokens except those still ``pending`` (committed but not yet
fed); each block feeds the pending tokens first, so one round costs the drafter K forward steps.
"""

from __future__ import annotations

import numpy as np

from covspec.models.base import ModelSequence
from covspec.spec import SamplingParams, canonical_probs, logits_to_probs, sample_token


def fit_vocab(logits: np.ndarray, vocab_size: int) -> np.ndarray:
    """Drafter logits cut or padded (with -inf) to the target's vocabulary, so no id >= vocab_size is drafted."""
    if logits.shape[-1] == vocab_size:
        return logits
    if logits.shape[-1] > vocab_size:
        return logits[..., :vocab_size]
    pad = np.full(logits.shape[:-1] + (vocab_size - logits.shape[-1],), -np.inf, dtype=logits.dtype)
    return np.concatenate([logits, pad], axis=-1)


class Drafter:
    def __init__(
        self, sequence: ModelSequence, vocab_size: int, params: SamplingParams, rng: np.random.Generator
    ) -> None:
        self.sequence = sequence
        self.vocab_size = vocab_size
        self.params = params
        self.rng = rng
        self.pending: list[int] = []
        self._base_length = sequence.length

    def draft(self, k: int) -> tuple[list[int], np.ndarray]:
        """K draft tokens and their canonical draft rows [K, V] (the exact distributions they were drawn from)."""
        rows = np.zeros((k, self.vocab_size), dtype=np.float64)
        if k == 0:
            return [], rows
        logits = self.sequence.extend(self.pending)[-1] if self.pending else self.sequence.prefill_logits
        self.pending = []
        self._base_length = self.sequence.length
        tokens: list[int] = []
        for i in range(k):
            probs = canonical_probs(logits_to_probs(fit_vocab(logits, self.vocab_size), self.params))
            token = int(np.argmax(probs)) if self.params.is_greedy else sample_token(probs, self.rng)
            tokens.append(token)
            rows[i] = probs
            if i + 1 < k:
                logits = self.sequence.extend([token])[0]
        return tokens, rows

    def commit(self, drafted: list[int], accepted: int, token: int) -> None:
        """Roll back to the accepted drafts; whatever was committed but never fed becomes pending."""
        if not drafted:
            self.pending.append(token)
            return
        fed = min(accepted, len(drafted) - 1)  # the last draft token is never fed during drafting
        self.sequence.crop(self._base_length + fed)
        self.pending = drafted[fed:accepted] + [token]
