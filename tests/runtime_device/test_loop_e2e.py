"""The device-edge loop against a real uvicorn server on 127.0.0.1: lossless greedy output, sampling in
distribution, byte accounting checked by a relay, and reconnect after a dropped connection."""

from __future__ import annotations

import numpy as np
import pytest

from covspec.link.relay import FaultPlan, TcpRelay
from covspec.protocol import VerifyMode
from covspec.runtime_device.client import EdgeClient, RetryPolicy
from covspec.runtime_device.loop import GenerationConfig, generate
from covspec.spec import canonical_probs, logits_to_probs
from tests.helpers import ARCHS, PROMPTS, image_bytes, pil

N_PAIRS = 20
MAX_NEW = 14


def _reference(target, pairs, max_new):
    return [target.generate(pil(img), prompt, max_new_tokens=max_new) for img, prompt in pairs]


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_output_equals_target_generate(arch, edge_server, loaded_target, drafter_engine) -> None:
    server, target, engine = edge_server(arch), loaded_target(arch), drafter_engine(arch)
    pairs = [(image_bytes(100 + i), PROMPTS[i % len(PROMPTS)]) for i in range(N_PAIRS)]
    expected = _reference(target, pairs, MAX_NEW)
    client = EdgeClient(server.url)
    for k in (1, 3, 6):
        for mode in VerifyMode:
            config = GenerationConfig(max_new_tokens=MAX_NEW, draft_len=k, verify_mode=mode)
            for (img, prompt), want in zip(pairs, expected, strict=True):
                result = generate(engine, client, img, prompt, config)
                assert result.tokens == want, (arch, k, mode.value, prompt)
                assert result.text == target.decode(want)
                stats = result.stats
                assert stats["generated_tokens"] == len(want)
                assert stats["rounds"] >= -(-len(want) // (k + 1))


def _first_token_counts(engine, client, img, prompt, mode, runs, top_k):
    counts: dict[int, int] = {}
    rejected = 0
    for seed in range(runs):
        config = GenerationConfig(
            max_new_tokens=4, temperature=1.0, top_k=top_k, seed=seed, draft_len=3, verify_mode=mode
        )
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


def _generate_through_faulty_relay(server, engine, fault, config, img, prompt):
    with TcpRelay(server.settings.host, server.settings.port, fault=fault) as relay:
        client = EdgeClient(relay.url, retry=RetryPolicy(attempts=5, first_delay_s=0.05, timeout_s=20))
        result = generate(engine, client, img, prompt, config)
    return result, relay


@pytest.mark.e2e
@pytest.mark.parametrize("direction", ["uplink", "downlink"])
def test_dropped_connection_resumes_the_same_session(direction, edge_server, loaded_target, drafter_engine) -> None:
    arch = "llava"
    server, target, engine = edge_server(arch), loaded_target(arch), drafter_engine(arch)
    img, prompt = image_bytes(11), PROMPTS[2]
    want = target.generate(pil(img), prompt, max_new_tokens=30)
    # connections: 0 = GET /v1/info, 1 = POST /v1/sessions, 2 = the round WebSocket (handshake ~ 200 B each way)
    fault = FaultPlan(connection_index=2, **{f"cut_{direction}_after": 400})
    config = GenerationConfig(max_new_tokens=30, draft_len=2, verify_mode=VerifyMode.COMPACT)
    result, relay = _generate_through_faulty_relay(server, engine, fault, config, img, prompt)
    assert relay.counters.cuts == 1 and fault.fired
    assert result.stats["reconnects"] >= 1
    assert result.tokens == want


@pytest.mark.e2e
def test_dropped_connection_under_sampling_keeps_the_seeded_output(edge_server, drafter_engine) -> None:
    """A retried round is answered from the edge's stored verdict: the seeded output is the one without a drop."""
    arch = "llava"
    server, engine = edge_server(arch), drafter_engine(arch)
    img, prompt = image_bytes(12), PROMPTS[3]
    config = GenerationConfig(
        max_new_tokens=30, temperature=1.0, top_k=6, seed=42, draft_len=3, verify_mode=VerifyMode.DSSD
    )
    clean = generate(engine, EdgeClient(server.url), img, prompt, config)
    fault = FaultPlan(connection_index=2, cut_downlink_after=500)
    dropped, relay = _generate_through_faulty_relay(server, engine, fault, config, img, prompt)
    assert relay.counters.cuts == 1
    assert dropped.tokens == clean.tokens


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
    with pytest.raises(IncompatiblePairError, match="do not share a tokenizer"):
        generate(drafter_engine("idefics3"), EdgeClient(server.url), image_bytes(1), PROMPTS[0], GenerationConfig())
