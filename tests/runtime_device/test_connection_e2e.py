"""One connection per device across generations, against a real uvicorn server on 127.0.0.1: one round trip to
start a generation, none to finish it, images named by sha256 once the edge holds them, cancel, and every byte
counted (the compatibility check included)."""

from __future__ import annotations

import re
import time
from dataclasses import replace

import httpx
import pytest

from covspec.link.presets import LinkProfile
from covspec.link.relay import TcpRelay
from covspec.protocol import VerifyMode
from covspec.runtime_device.client import EdgeClient
from covspec.runtime_device.counting import ByteCounter
from covspec.runtime_device.loop import GenerationConfig, generate
from covspec.spec.policy import PolicyKind
from tests.helpers import PROMPTS, image_bytes, pil

ARCH = "llava"
CONFIG = GenerationConfig(max_new_tokens=12, draft_len=3, verify_mode=VerifyMode.COMPACT, policy=PolicyKind.FIXED)


class RecordingCounter(ByteCounter):
    """Counts as usual and keeps the order of (direction, phase, time) events: the socket's own view of round trips."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str, float]] = []

    def add(self, direction: str, n: int) -> None:
        super().add(direction, n)
        if n:
            self.events.append((direction, self.phase, time.monotonic()))


def _sessions_active(server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return float(re.search(r"^covspec_sessions_active (\S+)$", text, re.M).group(1))


@pytest.mark.e2e
def test_a_generation_on_an_open_connection_costs_no_round_trip_to_start_and_none_to_finish(
    edge_server, loaded_target, drafter_engine
) -> None:
    """The open frame goes up and the first round follows it without waiting for ``opened``: through a link of 0.4 s
    one way, the first round leaves long before any answer could have come back, and after the last verdict nothing
    goes up."""
    server, target, engine = edge_server(ARCH), loaded_target(ARCH), drafter_engine(ARCH)
    counter = RecordingCounter()
    one_way = 0.4
    with TcpRelay(server.settings.host, server.settings.port) as relay:
        client = EdgeClient(relay.url, counter=counter)
        img = image_bytes(21)
        first = generate(engine, client, img, PROMPTS[0], CONFIG)
        relay.set_link(LinkProfile("slow", one_way_delay_s=one_way))
        mark = len(counter.events)
        second = generate(engine, client, image_bytes(22), PROMPTS[1], replace(CONFIG, max_new_tokens=3))
        events = counter.events[mark:]
        client.close()
    assert first.tokens == target.generate(pil(img), PROMPTS[0], max_new_tokens=12)
    assert relay.counters.connections == 1  # the compatibility check and both generations: one TCP connection
    sends = [(phase, t) for direction, phase, t in events if direction == "sent"]
    assert [phase for phase, _ in sends[:2]] == ["setup", "rounds"]  # the open, then at once the first round
    assert sends[1][1] - sends[0][1] < 2 * one_way  # sent before any answer to the open could have arrived
    assert all(phase == "rounds" for phase, _ in sends[1:])
    assert events[-1][0] == "received"  # nothing goes up after the last verdict
    # the first generation paid for the connection: the WebSocket upgrade and the edge's hello (its info)
    assert first.stats["setup_downlink_bytes"] > second.stats["setup_downlink_bytes"] + 500
    assert second.stats["setup_downlink_bytes"] > 0  # the opened frame is setup, wherever it crossed the socket


@pytest.mark.e2e
def test_an_image_the_edge_holds_is_named_by_its_hash(edge_server, loaded_target, drafter_engine) -> None:
    server, target, engine = edge_server(ARCH), loaded_target(ARCH), drafter_engine(ARCH)
    client = EdgeClient(server.url)
    img = image_bytes(23, size=(96, 80))
    first = generate(engine, client, img, PROMPTS[2], CONFIG)
    again = generate(engine, client, img, PROMPTS[3], CONFIG)
    assert first.stats["setup_uplink_bytes"] > len(img)
    assert again.stats["setup_uplink_bytes"] < 400  # the open frame: request and a 32-byte sha256, no image
    assert again.tokens == target.generate(pil(img), PROMPTS[3], max_new_tokens=12)
    # another device (its own id) holds nothing: it sends the bytes
    other = generate(engine, EdgeClient(server.url), img, PROMPTS[3], CONFIG)
    assert other.stats["setup_uplink_bytes"] > len(img) and other.tokens == again.tokens
    client.close()


@pytest.mark.e2e
def test_an_image_the_edge_let_go_is_sent_again(tiny_pair, loaded_target, drafter_engine) -> None:
    from covspec.runtime_edge.server import BackgroundServer
    from covspec.runtime_edge.settings import EdgeLimits, EdgeSettings

    settings = EdgeSettings(target=str(tiny_pair(ARCH).target), port=0, limits=EdgeLimits(images_per_device=1))
    with BackgroundServer(settings, loaded_target(ARCH)) as server:
        client = EdgeClient(server.url)
        engine = drafter_engine(ARCH)
        a, b = image_bytes(24), image_bytes(25)
        generate(engine, client, a, PROMPTS[0], CONFIG)
        generate(engine, client, b, PROMPTS[0], CONFIG)  # the edge holds one image per device: a is gone
        result = generate(engine, client, a, PROMPTS[0], CONFIG)
        assert result.tokens == loaded_target(ARCH).generate(pil(a), PROMPTS[0], max_new_tokens=12)
        assert result.stats["setup_uplink_bytes"] > len(a)  # named by hash, refused, then sent
        client.close()


@pytest.mark.e2e
def test_finished_and_cancelled_generations_leave_no_session(tiny_pair, loaded_target, drafter_engine) -> None:
    from covspec.protocol import SessionSpec
    from covspec.runtime_edge.server import BackgroundServer
    from covspec.runtime_edge.settings import EdgeSettings

    with BackgroundServer(EdgeSettings(target=str(tiny_pair(ARCH).target), port=0), loaded_target(ARCH)) as server:
        client = EdgeClient(server.url)
        for i in range(3):
            generate(drafter_engine(ARCH), client, image_bytes(30 + i), PROMPTS[i], CONFIG)
            assert _sessions_active(server) <= 1  # the next open drops the finished one
        connection = client.connection()
        connection.open_generation(SessionSpec(PROMPTS[0], max_new_tokens=8), image_bytes(40))
        assert _sessions_active(server) == 1
        connection.cancel()
        deadline = time.monotonic() + 5
        while _sessions_active(server) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _sessions_active(server) == 0
        client.close()
