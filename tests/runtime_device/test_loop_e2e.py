"""The device-edge loop against a real uvicorn server on 127.0.0.1: lossless greedy output, sampling in
distribution, byte accounting checked by a relay, and reconnect after a dropped connection.

The tiny random drafters are never accepted, so the lossless tests also run drafters the target does accept and check
the acceptance they must see: the target drafting for itself (every draft accepted) and a noisy copy of the target
(``derive_drafter``: accepted part of the time, exactly as often as a slow twin of the loop predicts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from covspec.link.relay import FaultPlan, TcpRelay
from covspec.protocol import VerifyMode
from covspec.runtime_device.client import EdgeClient, RetryPolicy
from covspec.runtime_device.loop import GenerationConfig, generate
from covspec.spec import canonical_probs, logits_to_probs
from covspec.spec.policy import PolicyKind
from tests.helpers import ARCHS, PROMPTS, image_bytes, pil

N_PAIRS = 20
N_ACCEPTED_PAIRS = 6  # fewer prompts for the drafters the target accepts: each of their runs checks acceptance too
MAX_NEW = 14
DRAFT_LENS = (1, 3, 6)
# the derived drafter's acceptance over the prompts; measured 0.30-0.80 greedy (every family and K) and 0.67-0.76
# (mean over the seeds) under seeded sampling (llava, every verify mode)
ALPHA_BAND = (0.2, 0.9)


def _pairs(n: int) -> list[tuple[bytes, str]]:
    return [(image_bytes(100 + i), PROMPTS[i % len(PROMPTS)]) for i in range(n)]


def _reference(target, pairs, max_new):
    return [target.generate(pil(img), prompt, max_new_tokens=max_new) for img, prompt in pairs]


def _fixed_k(k: int, mode: VerifyMode, **fields) -> GenerationConfig:
    """K drafted every round (capped at max_new_tokens - generated - 1): the K-exact acceptance checks assume it, so
    the fixed policy is named (the default, ``cost``, adapts K and may burst)."""
    return GenerationConfig(draft_len=k, verify_mode=mode, policy=PolicyKind.FIXED, **fields)


def _rounds_if_all_accepted(generated: int, k: int) -> int:
    """Every round commits K + 1 tokens (K accepted + the bonus) but the last, which EOS or max_new_tokens may cut."""
    return -(-generated // (k + 1))


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_output_equals_target_generate(arch, edge_server, loaded_target, drafter_engine) -> None:
    server, target, engine = edge_server(arch), loaded_target(arch), drafter_engine(arch)
    pairs = _pairs(N_PAIRS)
    expected = _reference(target, pairs, MAX_NEW)
    client = EdgeClient(server.url)
    for k in DRAFT_LENS:
        for mode in VerifyMode:
            config = _fixed_k(k, mode, max_new_tokens=MAX_NEW)
            for (img, prompt), want in zip(pairs, expected, strict=True):
                result = generate(engine, client, img, prompt, config)
                assert result.tokens == want, (arch, k, mode.value, prompt)
                assert result.text == target.decode(want)
                stats = result.stats
                assert stats["generated_tokens"] == len(want)
                assert stats["rounds"] >= _rounds_if_all_accepted(len(want), k)


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_self_drafter_has_every_draft_accepted(arch, edge_server, loaded_target, self_drafter_engine) -> None:
    """The target drafting for itself: the output is the target's and every draft is accepted, in every mode and K."""
    server, target, engine = edge_server(arch), loaded_target(arch), self_drafter_engine(arch)
    pairs = _pairs(N_ACCEPTED_PAIRS)
    expected = _reference(target, pairs, MAX_NEW)
    client = EdgeClient(server.url)
    for k in DRAFT_LENS:
        for mode in VerifyMode:
            config = _fixed_k(k, mode, max_new_tokens=MAX_NEW)
            for (img, prompt), want in zip(pairs, expected, strict=True):
                result = generate(engine, client, img, prompt, config)
                where = (arch, k, mode.value, prompt)
                assert result.tokens == want, where
                assert result.stats["acceptance_rate"] == 1.0, where
                assert result.stats["rounds"] == _rounds_if_all_accepted(len(want), k), where


@dataclass(frozen=True)
class TwinCount:
    rounds: int
    drafted: int
    accepted: int


def _greedy_twin(engine, target, img: bytes, prompt: str, want: list[int], k_max: int, max_new: int) -> TwinCount:
    """What fixed-K greedy speculative decoding must count, from a slow twin of the loop: each round re-prefills the
    drafter on the committed tokens (no KV rollback to get wrong), drafts greedily and keeps the longest prefix that
    the target's greedy path agrees with. The path runs past an EOS, as the edge verifies the whole block."""
    path = list(want)
    if len(path) < max_new:
        sequence = target.start(pil(img), prompt)
        logits = sequence.extend(path)[-1]
        while len(path) < max_new:
            path.append(int(np.argmax(logits)))
            logits = sequence.extend(path[-1:])[0]
    drafter = engine.start(pil(img), prompt)
    count, position = TwinCount(0, 0, 0), 0
    while position < len(want):
        k = min(k_max, max_new - position - 1)
        drafter.crop(drafter.prompt_length)
        logits = drafter.extend(want[:position])[-1] if position else drafter.prefill_logits
        draft: list[int] = []
        for i in range(k):
            draft.append(int(np.argmax(logits)))
            if i + 1 < k:
                logits = drafter.extend(draft[-1:])[0]
        accepted = next((i for i, t in enumerate(draft) if t != path[position + i]), k)
        count = TwinCount(count.rounds + 1, count.drafted + k, count.accepted + accepted)
        position += accepted + 1
    return count


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_derived_drafter_sees_the_acceptance_it_must(
    arch, edge_server, loaded_target, derived_drafter_engine
) -> None:
    """A noisy copy of the target: the output is the target's, each run's rounds and acceptance are the twin's, and
    the acceptance over the prompts is neither all nor nothing."""
    server, target, engine = edge_server(arch), loaded_target(arch), derived_drafter_engine(arch)
    pairs = _pairs(N_ACCEPTED_PAIRS)
    expected = _reference(target, pairs, MAX_NEW)
    client = EdgeClient(server.url)
    for k in DRAFT_LENS:
        twins = [
            _greedy_twin(engine, target, img, prompt, want, k, MAX_NEW)
            for (img, prompt), want in zip(pairs, expected, strict=True)
        ]
        alpha = sum(t.accepted for t in twins) / sum(t.drafted for t in twins)
        assert ALPHA_BAND[0] < alpha < ALPHA_BAND[1], (arch, k, alpha)
        for mode in VerifyMode:
            config = _fixed_k(k, mode, max_new_tokens=MAX_NEW)
            for (img, prompt), want, twin in zip(pairs, expected, twins, strict=True):
                result = generate(engine, client, img, prompt, config)
                where = (arch, k, mode.value, prompt)
                assert result.tokens == want, where
                assert result.stats["rounds"] == twin.rounds, where
                assert result.stats["acceptance_rate"] == pytest.approx(twin.accepted / twin.drafted), where


def _first_token_counts(engine, client, img, prompt, mode, runs, top_k):
    counts: dict[int, int] = {}
    rejected = 0
    for seed in range(runs):
        config = _fixed_k(3, mode, max_new_tokens=4, temperature=1.0, top_k=top_k, seed=seed)
        result = generate(engine, client, img, prompt, config)
        counts[result.tokens[0]] = counts.get(result.tokens[0], 0) + 1
        rejected += result.stats["acceptance_rate"] < 1.0
    return counts, rejected


@pytest.mark.e2e
@pytest.mark.parametrize("mode", list(VerifyMode))
def test_sampling_first_token_matches_target_distribution(mode, edge_server, loaded_target, drafter_engine) -> None:
    arch, runs, top_k = "llava", 300, 4
    server, target, engine = edge_server(arch), loaded_target(arch), drafter_engine(arch)
    img, prompt = image_bytes(7), PROMPTS[0]
    exact = canonical_probs(
        logits_to_probs(
            target.start(pil(img), prompt).prefill_logits, GenerationConfig(temperature=1.0, top_k=top_k).params
        )
    )
    counts, rejected = _first_token_counts(engine, EdgeClient(server.url), img, prompt, mode, runs, top_k)
    assert rejected > runs // 10, "the rejection path was hardly exercised; the test would prove little"
    support = set(np.flatnonzero(exact).tolist())
    assert set(counts) <= support, "a token outside the target's support was committed"
    for token, p in enumerate(exact):
        if p == 0:
            continue
        freq = counts.get(token, 0) / runs
        bound = 5 * np.sqrt(p * (1 - p) / runs) + 1 / runs  # 5 sigma: a false alarm about once in 10^6 tokens
        assert abs(freq - p) <= bound, (mode.value, token, freq, p, bound)


def _assert_within_target_top_k(target, img: bytes, prompt: str, tokens: list[int], top_k: int) -> None:
    """Each committed token is one the target's top-k sampling could give at its place."""
    sequence = target.start(pil(img), prompt)
    rows = [sequence.prefill_logits, *sequence.extend(tokens[:-1])] if len(tokens) > 1 else [sequence.prefill_logits]
    for i, (row, token) in enumerate(zip(rows, tokens, strict=True)):
        assert token in np.argsort(row)[-top_k:], (i, token, tokens)


@pytest.mark.e2e
@pytest.mark.parametrize("mode", list(VerifyMode))
def test_sampling_with_drafters_the_target_accepts(
    mode, edge_server, loaded_target, self_drafter_engine, derived_drafter_engine
) -> None:
    """Seeded sampling: a drafter equal to the target is always accepted (min(1, p/q) = 1); the derived drafter part
    of the time; either way every committed token is within the target's top-k."""
    arch, top_k, k, seeds = "llava", 8, 3, 6
    target, client = loaded_target(arch), EdgeClient(edge_server(arch).url)
    derived_rates = []
    for seed in range(seeds):
        img, prompt = image_bytes(7 + seed), PROMPTS[seed % len(PROMPTS)]
        config = _fixed_k(k, mode, max_new_tokens=16, temperature=1.0, top_k=top_k, seed=seed)
        own = generate(self_drafter_engine(arch), client, img, prompt, config)
        assert own.stats["acceptance_rate"] == 1.0, (mode.value, seed)
        assert own.stats["rounds"] == _rounds_if_all_accepted(len(own.tokens), k), (mode.value, seed)
        _assert_within_target_top_k(target, img, prompt, own.tokens, top_k)
        derived = generate(derived_drafter_engine(arch), client, img, prompt, config)
        _assert_within_target_top_k(target, img, prompt, derived.tokens, top_k)
        derived_rates.append(derived.stats["acceptance_rate"])
    assert ALPHA_BAND[0] < np.mean(derived_rates) < ALPHA_BAND[1], (mode.value, derived_rates)


@pytest.mark.e2e
@pytest.mark.parametrize("mode", list(VerifyMode))
def test_byte_counts_agree_with_a_relay(mode, edge_server, drafter_engine) -> None:
    arch = "qwen2_vl"
    server, engine = edge_server(arch), drafter_engine(arch)
    host, port = server.settings.host, server.settings.port
    with TcpRelay(host, port) as relay:
        client = EdgeClient(relay.url)
        result = generate(
            engine,
            client,
            image_bytes(3),
            PROMPTS[1],
            GenerationConfig(max_new_tokens=24, temperature=0.8, top_k=8, seed=1, draft_len=4, verify_mode=mode),
        )
        stats = result.stats
        up = stats["uplink_bytes"] + stats["setup_uplink_bytes"]
        down = stats["downlink_bytes"] + stats["setup_downlink_bytes"]
        # the relay forwards asynchronously: wait until it has seen what the device counted
        import time

        deadline = time.monotonic() + 5
        while (relay.counters.uplink < up or relay.counters.downlink < down) and time.monotonic() < deadline:
            time.sleep(0.01)
        # the info request happens before the generation's own counters start: include it via client.counter
        total_up = client.counter.sent["setup"] + client.counter.sent["rounds"]
        total_down = client.counter.received["setup"] + client.counter.received["rounds"]
    assert stats["uplink_bytes"] > 0 and stats["downlink_bytes"] > 0
    assert abs(total_up - relay.counters.uplink) <= 0.01 * relay.counters.uplink
    assert abs(total_down - relay.counters.downlink) <= 0.01 * relay.counters.downlink


def _setup_bytes(server, engine, config, img, prompt) -> tuple[int, int]:
    """(up, down) bytes before the first round of a generation on a new connection: WebSocket upgrade, hello, open."""
    stats = generate(engine, EdgeClient(server.url), img, prompt, config).stats
    return stats["setup_uplink_bytes"], stats["setup_downlink_bytes"]


def _generate_through_faulty_relay(server, engine, fault, config, img, prompt):
    with TcpRelay(server.settings.host, server.settings.port, fault=fault) as relay:
        client = EdgeClient(relay.url, retry=RetryPolicy(attempts=5, first_delay_s=0.05, timeout_s=20))
        result = generate(engine, client, img, prompt, config)
    return result, relay


# the tiny random drafter (never accepted) and the target drafting for itself (always accepted)
DRAFTERS = {"random": "drafter_engine", "self": "self_drafter_engine"}


@pytest.mark.e2e
@pytest.mark.parametrize("drafter", list(DRAFTERS))
@pytest.mark.parametrize("direction", ["uplink", "downlink"])
def test_dropped_connection_resumes_the_same_session(direction, drafter, request, edge_server, loaded_target) -> None:
    arch, k = "llava", 2
    server, target = edge_server(arch), loaded_target(arch)
    engine = request.getfixturevalue(DRAFTERS[drafter])(arch)
    img, prompt = image_bytes(11), PROMPTS[2]
    want = target.generate(pil(img), prompt, max_new_tokens=30)
    config = _fixed_k(k, VerifyMode.COMPACT, max_new_tokens=30)
    # one connection carries everything: cut it in the rounds, a few frames after the setup
    setup = dict(zip(("uplink", "downlink"), _setup_bytes(server, engine, config, img, prompt), strict=True))
    fault = FaultPlan(connection_index=0, **{f"cut_{direction}_after": setup[direction] + 60})
    result, relay = _generate_through_faulty_relay(server, engine, fault, config, img, prompt)
    assert relay.counters.cuts == 1 and fault.fired
    assert result.stats["reconnects"] >= 1
    assert result.tokens == want
    if drafter == "self":  # the drafter resumed in step with the edge: still every draft accepted, no round twice
        assert result.stats["acceptance_rate"] == 1.0
        assert result.stats["rounds"] == _rounds_if_all_accepted(len(want), k)


@pytest.mark.e2e
@pytest.mark.parametrize("drafter", list(DRAFTERS))
def test_dropped_connection_under_sampling_keeps_the_seeded_output(drafter, request, edge_server) -> None:
    """A retried round is answered from the edge's stored verdict: the seeded output is the one without a drop."""
    arch, k = "llava", 3
    server = edge_server(arch)
    engine = request.getfixturevalue(DRAFTERS[drafter])(arch)
    img, prompt = image_bytes(12), PROMPTS[3]
    config = _fixed_k(k, VerifyMode.DSSD, max_new_tokens=30, temperature=1.0, top_k=6, seed=42)
    clean = generate(engine, EdgeClient(server.url), img, prompt, config)
    # past the setup and into the rounds: the self drafter's whole round downlink is ~200 B
    fault = FaultPlan(connection_index=0, cut_downlink_after=_setup_bytes(server, engine, config, img, prompt)[1] + 40)
    dropped, relay = _generate_through_faulty_relay(server, engine, fault, config, img, prompt)
    assert relay.counters.cuts == 1
    assert dropped.tokens == clean.tokens
    if drafter == "self":
        for result in (clean, dropped):
            assert result.stats["acceptance_rate"] == 1.0
            assert result.stats["rounds"] == _rounds_if_all_accepted(len(result.tokens), k)


@pytest.mark.e2e
def test_text_only_drafter_with_a_vlm_target(edge_server, loaded_target, tmp_path) -> None:
    """A text-only causal LM sharing the target's tokenizer drafts without seeing the image; output stays the
    target's."""
    from covspec.models.tiny import build_tiny_text_drafter
    from covspec.runtime_device.engines import load_engine

    arch = "llava"
    server, target = edge_server(arch), loaded_target(arch)
    engine = load_engine("torch", str(build_tiny_text_drafter(tmp_path / "text", seed=0)), dtype="float64")
    assert not engine.accepts_images
    client = EdgeClient(server.url)
    for i in range(4):
        img, prompt = image_bytes(60 + i), PROMPTS[i]
        want = target.generate(pil(img), prompt, max_new_tokens=MAX_NEW)
        for mode in VerifyMode:
            result = generate(
                engine, client, img, prompt, GenerationConfig(max_new_tokens=MAX_NEW, draft_len=3, verify_mode=mode)
            )
            assert result.tokens == want, (i, mode.value)


@pytest.mark.e2e
def test_drafter_with_another_tokenizer_is_refused(edge_server, drafter_engine) -> None:
    from covspec.errors import IncompatiblePairError

    server = edge_server("llava")
    with pytest.raises(IncompatiblePairError, match="do not pair: token id"):
        generate(drafter_engine("idefics3"), EdgeClient(server.url), image_bytes(1), PROMPTS[0], GenerationConfig())
