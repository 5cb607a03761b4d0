"""The drafter's per-generation state: draft a block, then keep exactly the committed tokens.

The drafter's KV cache holds the prompt and committed tokens except those still ``pending`` (committed but not yet
fed); each block feeds the pending tokens first, so one round costs the drafter K forward steps.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from covspec.models.base import ModelSequence
from covspec.spec import SamplingParams, canonical_probs, logits_to_probs, sample_token
from covspec.spec.policy import draft_margin


def fit_vocab(logits: np.ndarray, vocab_size: int) -> np.ndarray:
    """Drafter logits cut or padded (with -inf) to the target's vocabulary, so no id >= vocab_size is drafted."""
    if logits.shape[-1] == vocab_size:
        return logits
    if logits.shape[-1] > vocab_size:
        return logits[..., :vocab_size]
    pad = np.full(logits.shape[:-1] + (vocab_size - logits.shape[-1],), -np.inf, dtype=logits.dtype)
    return np.concatenate([logits, pad], axis=-1)


class Drafter:
    """``sequence`` may still be prefilling (a ``Future``): a first round that is a burst goes out without it."""

    def __init__(
        self,
        sequence: ModelSequence | Future[ModelSequence],
        vocab_size: int,
        params: SamplingParams,
        rng: np.random.Generator,
    ) -> None:
        self._sequence = sequence
        self.vocab_size = vocab_size
        self.params = params
        self.rng = rng
        self.pending: list[int] = []
        self._base_length = -1  # set once the prefill is in
        self._fed_drafts = 0  # drafts of the last block that went into the KV cache
        self._next_logits: np.ndarray | None = None  # scores the next position once nothing is pending

    @property
    def sequence(self) -> ModelSequence:
        if isinstance(self._sequence, Future):
            self._sequence = self._sequence.result()
        if self._next_logits is None:
            self._base_length = self._sequence.length
            self._next_logits = self._sequence.prefill_logits
        return self._sequence

    def wait_for_prefill(self) -> None:
        """Block until the drafter's prefill is in (it may still be running on another thread)."""
        _ = self.sequence

    def draft(
        self, k: int, keep_drafting: Callable[[int, float], bool] | None = None
    ) -> tuple[list[int], np.ndarray, list[float]]:
        """Up to K draft tokens, their canonical draft rows [K', V] (the exact distributions they were drawn from) and,
        when ``keep_drafting(position, margin)`` is given (it may end the block before a token), the drafter's margin
        at each."""
        sequence = self.sequence
        logits = sequence.extend(self.pending)[-1] if self.pending else self._next_logits
        self.pending = []
        self._base_length = self.sequence.length
        tokens: list[int] = []
        rows: list[np.ndarray] = []
        margins: list[float] = []
        for i in range(k):
            logits = fit_vocab(logits, self.vocab_size)
            if keep_drafting is not None:
                margin = draft_margin(logits)
                if not keep_drafting(i, margin):
                    break
                margins.append(margin)
            if self.params.is_greedy:  # the canonical greedy row is the one-hot of the argmax: no transform needed
                token = int(np.argmax(logits))
                probs = np.zeros(self.vocab_size, dtype=np.float64)
                probs[token] = 1.0
            else:
                probs = canonical_probs(logits_to_probs(logits, self.params))
                token = sample_token(probs, self.rng)
            tokens.append(token)
            rows.append(probs)
            if i + 1 < k:
                logits = self.sequence.extend([token])[0]
        self._fed_drafts = max(len(tokens) - 1, 0) if len(tokens) == k else len(tokens)
        self._next_logits = logits
        matrix = np.stack(rows) if rows else np.zeros((0, self.vocab_size), dtype=np.float64)
        return tokens, matrix, margins

    def commit(self, drafted: list[int], accepted: int, token: int) -> None:
        """Roll back to the accepted drafts; whatever was committed but never fed becomes pending."""
        if not drafted:
            self.pending.append(token)
            return
        fed = min(accepted, self._fed_drafts)  # a full block's last draft is never fed; a gated block's is
        self.sequence.crop(self._base_length + fed)
        self.pending = drafted[fed:accepted] + [token]

    def catch_up(self, tokens: list[int]) -> list[bool]:
        """Feed tokens the target decoded alone (a burst); returns, for each, whether the drafter's own greedy choice
        would have been that token (free evidence of its acceptance while it is not drafting)."""
        sequence = self.sequence
        before = self._next_logits if not self.pending else None
        fed = self.pending + tokens
        rows = sequence.extend(fed)
        self.pending = []
        self._base_length = self.sequence.length
        self._next_logits = rows[-1]
        offset = len(fed) - len(tokens)  # rows[offset - 1 + j] scores tokens[j]
        scores = [before if j == 0 and offset == 0 else rows[offset - 1 + j] for j in range(len(tokens))]
        return [int(np.argmax(fit_vocab(s, self.vocab_size))) == t for s, t in zip(scores, tokens, strict=True)]
