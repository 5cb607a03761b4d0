"""`compact`: the cheapest lossless exchange. Greedy: ids up, the edge's (accepted, correction) down.

Under sampling the round takes whichever form costs fewer bytes: the K+1 target rows in sparse form (exactly the
support the target's own top-k/top-p leaves; the device verifies), or the residual form of ``dssd`` (q(x) scalars
up, one dense row down after a rejection). Without top-k or top-p the sparse rows are dense (6 MB per round at a
152k vocabulary), so the residual form wins; with a small top-k the sparse rows do. The device sends the scalars
unless the sparse rows are cheap for certain (top-k small); the edge, which sees the actual supports, then picks.
"""

from __future__ import annotations

import numpy as np

from covspec.protocol.messages import RoundRequest, VerifyMode
from covspec.protocol.modes.base import (
    EdgeDecision,
    ModeRules,
    decide_greedy,
    decide_residual,
    decide_sparse,
    sparse_row_bytes,
    target_probs_of,
)
from covspec.protocol.modes.dssd import draft_token_probs
from covspec.spec import SamplingParams

_F32 = 4


def sparse_rows_surely_cheaper(draft_len: int, vocab_size: int, top_k: int) -> bool:
    """Whether K+1 sparse rows of at most ``top_k`` entries cost no more than the one dense row a rejection sends."""
    return 0 < top_k and (draft_len + 1) * top_k * 8 <= vocab_size * _F32


class CompactRules(ModeRules):
    mode = VerifyMode.COMPACT

    def request(self, round_no, draft, draft_probs, commit, params: SamplingParams) -> RoundRequest:
        tokens = np.asarray(draft, dtype=np.int32)
        if params.is_greedy or sparse_rows_surely_cheaper(len(draft), draft_probs.shape[1], params.top_k):
            return RoundRequest(round_no, tokens, commit)
        return RoundRequest(round_no, tokens, commit, draft_token_probs=draft_token_probs(draft, draft_probs))

    def decide(self, round_no, draft, target_logits, request, params, rng) -> EdgeDecision:
        if params.is_greedy:
            return decide_greedy(round_no, draft, target_logits)
        target_probs = target_probs_of(target_logits, params)
        dense_row_bytes = target_probs.shape[1] * _F32
        if request.draft_token_probs is not None and sparse_row_bytes(target_probs) > dense_row_bytes:
            return decide_residual(round_no, draft, np.asarray(request.draft_token_probs), target_probs, rng)
        return decide_sparse(round_no, draft, target_probs)
