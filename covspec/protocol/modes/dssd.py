"""`dssd`: the device sends q(x) for each draft; the edge accepts on those scalars, and after a rejection sends the
one target row from which the device samples the correction."""

from __future__ import annotations

import numpy as np

from covspec.protocol.messages import RoundRequest, VerifyMode
from covspec.protocol.modes.base import (
    EdgeDecision,
    ModeRules,
    decide_greedy,
    decide_residual,
    malformed,
    target_probs_of,
)
from covspec.spec import SamplingParams


def draft_token_probs(draft: list[int], draft_probs: np.ndarray) -> np.ndarray:
    """[K] float64: q_i(x_i), what the residual form needs from the device."""
    return draft_probs[np.arange(len(draft)), np.asarray(draft, dtype=np.int64)]


class DssdRules(ModeRules):
    mode = VerifyMode.DSSD

    def request(self, round_no, draft, draft_probs, commit, params: SamplingParams) -> RoundRequest:
        tokens = np.asarray(draft, dtype=np.int32)
        if params.is_greedy:
            return RoundRequest(round_no, tokens, commit)
        return RoundRequest(round_no, tokens, commit, draft_token_probs=draft_token_probs(draft, draft_probs))

    def check_request(self, request: RoundRequest, params: SamplingParams) -> None:
        if not params.is_greedy and request.draft_token_probs is None:
            raise malformed("dssd rounds under sampling carry the draft scalars 'x'")

    def decide(self, round_no, draft, target_logits, request, params, rng) -> EdgeDecision:
        if params.is_greedy:
            return decide_greedy(round_no, draft, target_logits)
        target_probs = target_probs_of(target_logits, params)
        return decide_residual(round_no, draft, np.asarray(request.draft_token_probs), target_probs, rng)
