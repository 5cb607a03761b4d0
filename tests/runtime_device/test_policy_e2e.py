"""Drafting policies through a real uvicorn server on 127.0.0.1: every policy commits the target's own greedy
output (bursts and a link whose delay changes mid-generation included), a burst-heavy run is still lossless under
sampling, and the cost policy bursts when drafting cannot pay and drafts when it does."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from covspec.link.presets import LinkProfile
from covspec.link.relay import TcpRelay
from covspec.protocol import VerifyMode
from covspec.runtime_device.client import EdgeClient
from covspec.runtime_device.loop import GenerationConfig, generate
from covspec.spec import canonical_probs, logits_to_probs
from covspec.spec.policy import CostConfig, FixedPolicy, PolicyKind, RoundObservation, RoundPlan, make_policy
from tests.helpers import PROMPTS, image_bytes, pil

ARCH = "llava"
MAX_NEW = 16


class AlternatingPolicy(FixedPolicy):
    """Burst, draft, burst, ...: every round kind and the hand-over between them, deterministically."""

    def __init__(self, draft_len: int, burst: int) -> None:
        super().__init__(draft_len)
        self.burst, self.rounds = burst, 0

    def plan(self, remaining: int, first_round: bool = False) -> RoundPlan:
        self.rounds += 1
        if self.rounds % 2:
            return RoundPlan(True, min(self.burst, remaining))
        return super().plan(remaining)

    def observe(self, observation: RoundObservation) -> None:
        if observation.burst:  # the drafter caught up on the burst, unless it ended the generation
            assert observation.committed >= 1 and len(observation.shadow_matches) in (0, observation.committed)


@pytest.mark.e2e
@pytest.mark.parametrize("policy", list(PolicyKind))
def test_every_policy_commits_the_targets_greedy_output(policy, edge_server, loaded_target, derived_drafter_engine):
    server, target, engine = edge_server(ARCH), loaded_target(ARCH), derived_drafter_engine(ARCH)
    client = EdgeClient(server.url)
    accepted = drafted = 0
    for i in range(4):
        img, prompt = image_bytes(70 + i), PROMPTS[i]
        config = GenerationConfig(max_new_tokens=MAX_NEW, draft_len=5, policy=policy, verify_mode=VerifyMode.AUTO)
        result = generate(engine, client, img, prompt, config)
        assert result.tokens == target.generate(pil(img), prompt, max_new_tokens=MAX_NEW), (policy, i)
        assert result.stats["policy"] == policy.value and result.stats["verify_mode"] == "compact"
        draft_rounds = [o for o in result.rounds if not o.burst]
        accepted += sum(o.accepted for o in draft_rounds)
        drafted += sum(o.drafted for o in draft_rounds)
    assert drafted and 0 < accepted < drafted  # a drafter that is accepted part of the time was really exercised
    client.close()


@pytest.mark.e2e
@pytest.mark.parametrize("mode", [VerifyMode.VANILLA, VerifyMode.DSSD, VerifyMode.COMPACT])
def test_bursts_and_drafts_interleaved_commit_the_targets_greedy_output(
    mode, edge_server, loaded_target, self_drafter_engine
) -> None:
    server, target, engine = edge_server(ARCH), loaded_target(ARCH), self_drafter_engine(ARCH)
    client = EdgeClient(server.url)
    img, prompt = image_bytes(80), PROMPTS[4]
    policy = AlternatingPolicy(draft_len=3, burst=4)
    result = generate(engine, client, img, prompt, GenerationConfig(max_new_tokens=MAX_NEW, verify_mode=mode), policy)
    want = target.generate(pil(img), prompt, max_new_tokens=MAX_NEW)
    assert result.tokens == want
    bursts = [o for o in result.rounds if o.burst]
    drafts = [o for o in result.rounds if not o.burst]
    assert bursts and drafts and result.stats["bursts"] == len(bursts)
    # the drafter caught up on every burst: the target as its own drafter matches every burst token and is accepted
    assert all(all(o.shadow_matches) for o in bursts)
    assert all(o.accepted == o.drafted for o in drafts)
    client.close()


class LinkChangingCostPolicy:
    """The cost policy, with the link's delay raised after its third round (the relay changes under a running
    generation); records the plans it made."""

    uses_margins = True

    def __init__(self, relay: TcpRelay, link: LinkProfile) -> None:
        self.policy = make_policy(PolicyKind.COST, draft_len=5, cost=CostConfig(max_burst=4))  # short: many rounds
        self.relay, self.link, self.rounds, self.plans = relay, link, 0, []

    def plan(self, remaining: int, first_round: bool = False) -> RoundPlan:
        self.plans.append(self.policy.plan(remaining))
        return self.plans[-1]

    def keep_drafting(self, position: int, margin: float) -> bool:
        return self.policy.keep_drafting(position, margin)

    def observe(self, observation: RoundObservation) -> None:
        self.policy.observe(observation)
        self.rounds += 1
        if self.rounds == 3:
            self.relay.set_link(self.link)


@pytest.mark.e2e
def test_a_link_whose_delay_changes_mid_generation(edge_server, loaded_target, derived_drafter_engine) -> None:
    server, target, engine = edge_server(ARCH), loaded_target(ARCH), derived_drafter_engine(ARCH)
    img, prompt = image_bytes(81), PROMPTS[5]
    with TcpRelay(server.settings.host, server.settings.port) as relay:
        client = EdgeClient(relay.url)
        policy = LinkChangingCostPolicy(relay, LinkProfile("slow", one_way_delay_s=0.03))
        result = generate(engine, client, img, prompt, GenerationConfig(max_new_tokens=40), policy)
        client.close()
    assert result.tokens == target.generate(pil(img), prompt, max_new_tokens=40)
    link_s = [o.exchange_s - o.verify_s for o in result.rounds]
    assert max(link_s[:3]) < 0.05 <= min(link_s[4:])  # the delay really changed while it ran, and stayed
    assert len(result.rounds) >= 5


@pytest.mark.e2e
def test_bursts_under_sampling_keep_the_targets_first_token_distribution(edge_server, loaded_target, drafter_engine):
    server, target, engine = edge_server(ARCH), loaded_target(ARCH), drafter_engine(ARCH)
    img, prompt, runs, top_k = image_bytes(7), PROMPTS[0], 200, 4
    config = GenerationConfig(max_new_tokens=4, temperature=1.0, top_k=top_k, verify_mode=VerifyMode.COMPACT)
    exact = canonical_probs(logits_to_probs(target.start(pil(img), prompt).prefill_logits, config.params))
    client = EdgeClient(server.url)
    counts: dict[int, int] = {}
    for seed in range(runs):
        policy = AlternatingPolicy(draft_len=2, burst=2)  # the first token always comes from a burst
        result = generate(engine, client, img, prompt, replace(config, seed=seed), policy)
        counts[result.tokens[0]] = counts.get(result.tokens[0], 0) + 1
    client.close()
    assert set(counts) <= set(np.flatnonzero(exact).tolist())
    for token, p in enumerate(exact):
        if p > 0:
            bound = 5 * np.sqrt(p * (1 - p) / runs) + 1 / runs
            assert abs(counts.get(token, 0) / runs - p) <= bound, (token, counts.get(token, 0) / runs, p)


@pytest.mark.e2e
def test_cost_policy_bursts_when_drafts_are_never_accepted(
    edge_server, loaded_target, drafter_engine, self_drafter_engine
) -> None:
    server, target = edge_server(ARCH), loaded_target(ARCH)
    client = EdgeClient(server.url)
    img, prompt = image_bytes(82), PROMPTS[6]
    config = GenerationConfig(max_new_tokens=60, draft_len=4, policy=PolicyKind.COST)
    want = target.generate(pil(img), prompt, max_new_tokens=60)
    weak = generate(drafter_engine(ARCH), client, img, prompt, config)  # random weights: never accepted
    # the target as its own drafter is always accepted but drafts as slowly as the target decodes: whether a burst or
    # a draft round is faster is then a matter of measurement noise (the choice on constructed timings is in
    # tests/spec/test_policy.py); it must draft its measuring rounds and find every draft accepted
    eager = make_policy(PolicyKind.COST, draft_len=4, cost=CostConfig(draft_margin=0.0))
    strong = generate(self_drafter_engine(ARCH), client, img, prompt, config, eager)
    assert len(client.connection().policies) == 1  # the weak drafter's, kept across generations
    client.close()
    assert weak.tokens == want and strong.tokens == want
    assert weak.stats["acceptance_rate"] < 0.1 and weak.stats["burst_tokens"] > len(want) / 2
    assert strong.stats["acceptance_rate"] == 1.0 and strong.stats["draft_rounds"] >= 3
