"""`vanilla`: the conventional baseline. The device sends its full draft rows; the edge verifies and decides."""

from __future__ import annotations

import numpy as np

from covspec.protocol.messages import RoundRequest, VerifyMode
from covspec.protocol.modes.base import (
    EdgeDecision,
    ModeRules,
    decide_greedy,
    decide_stochastic,
    malformed,
    target_probs_of,
)
from covspec.spec import SamplingParams, from_wire_probs, to_wire_probs


class VanillaRules(ModeRules):
    mode = VerifyMode.VANILLA

    def request(self, round_no, draft, draft_probs, commit, params: SamplingParams) -> RoundRequest:
        return RoundRequest(round_no, np.asarray(draft, dtype=np.int32), commit, draft_probs=to_wire_probs(draft_probs))

    def check_request(self, request: RoundRequest, params: SamplingParams) -> None:
        if request.draft_probs is None:
            raise malformed("vanilla rounds carry the draft rows 'q'")

    def decide(self, round_no, draft, target_logits, request, params, rng) -> EdgeDecision:
        if params.is_greedy:
            return decide_greedy(round_no, draft, target_logits)
        draft_probs = from_wire_probs(np.asarray(request.draft_probs, dtype=np.float32))
        return decide_stochastic(round_no, draft, draft_probs, target_probs_of(target_logits, params), rng)
