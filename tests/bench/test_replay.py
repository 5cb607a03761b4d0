"""An emulated device replays the real drafter: against a real edge it sends the very rounds the real drafter sends
(same drafts, same acceptance, same output), and no drafter forward falls outside the recording."""

from __future__ import annotations

import pytest

from covspec.bench.replay import ReplayEngine, record_drafts
from covspec.protocol import VerifyMode
from covspec.runtime_device.client import EdgeClient
from covspec.runtime_device.loop import GenerationConfig, generate
from covspec.spec.policy import PolicyKind
from tests.helpers import PROMPTS, image_bytes, pil

MAX_NEW = 14


@pytest.mark.e2e
@pytest.mark.parametrize(
    "policy, k", [(PolicyKind.FIXED, 3), (PolicyKind.MARGIN, 5), (PolicyKind.COST, 5)], ids=["fixed", "margin", "cost"]
)
def test_replayed_drafts_are_the_real_drafters(policy, k, edge_server, loaded_target, derived_drafter_engine) -> None:
    server, target, real = edge_server("llava"), loaded_target("llava"), derived_drafter_engine("llava")
    items = [(image_bytes(500 + i), PROMPTS[i % len(PROMPTS)]) for i in range(4)]
    references = [target.generate(pil(img), prompt, max_new_tokens=MAX_NEW) for img, prompt in items]
    records, times = record_drafts(real, [(*item, ref) for item, ref in zip(items, references, strict=True)], k)
    assert times.step_s > 0 and times.prefill_s > 0
    replay = ReplayEngine(real, records, times)
    config = GenerationConfig(max_new_tokens=MAX_NEW, draft_len=k, verify_mode=VerifyMode.COMPACT, policy=policy)
    accepted = 0
    for (img, prompt), reference in zip(items, references, strict=True):
        alone = generate(real, EdgeClient(server.url), img, prompt, config)
        emulated = generate(replay, EdgeClient(server.url), img, prompt, config)
        assert emulated.tokens == alone.tokens == reference
        if policy is PolicyKind.FIXED:  # the other policies choose K from measured times, which differ
            assert [(o.drafted, o.accepted) for o in emulated.rounds] == [(o.drafted, o.accepted) for o in alone.rounds]
        accepted += sum(o.accepted for o in emulated.rounds)
    assert replay.misses == 0 and accepted > 0
