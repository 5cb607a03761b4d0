"""Admission past capacity, seen from a device: its open is refused for capacity with the edge's Retry-After, it
waits that long and opens again, and once a slot is free it is served with the target's exact output; past its
admission window it gives up with the refusal's code. The admitted session keeps its service throughout."""

from __future__ import annotations

import threading
import time

import msgpack
import numpy as np
import pytest
from websockets.sync.client import connect

from covspec.errors import EdgeError
from covspec.protocol import RoundRequest, SessionSpec, encode_cancel, encode_open, encode_round
from covspec.protocol.messages import OpenRequest
from covspec.runtime_device.client import EdgeClient, RetryPolicy
from covspec.runtime_device.loop import GenerationConfig, generate
from covspec.runtime_edge.server import BackgroundServer
from covspec.runtime_edge.settings import EdgeLimits, EdgeSettings
from tests.helpers import PROMPTS, image_bytes, pil

pytestmark = pytest.mark.e2e
RETRY_AFTER_S = 1


@pytest.fixture(scope="module")
def full_edge(tiny_pair, loaded_target):
    limits = EdgeLimits(max_sessions=1, retry_after_s=RETRY_AFTER_S)
    settings = EdgeSettings(target=str(tiny_pair("llava").target), port=0, dtype="float64", limits=limits)
    with BackgroundServer(settings, loaded_target("llava")) as running:
        yield running


def _holder(server, release: threading.Event, rounds_done: list[int]) -> None:
    """A device holding the only slot: rounds keep coming until ``release``, then it cancels its generation."""
    url = server.url.replace("http://", "ws://") + "/v1/connect?device=holder"
    with connect(url, compression=None, open_timeout=10, max_size=None) as ws:
        msgpack.unpackb(ws.recv(timeout=10))
        ws.send(encode_open(OpenRequest(SessionSpec(PROMPTS[0], max_new_tokens=200), image_bytes(9))))
        assert msgpack.unpackb(ws.recv(timeout=60))["t"] == "opened"
        n = 0
        while not release.is_set():
            n += 1
            ws.send(encode_round(RoundRequest(n, np.asarray([5], dtype=np.int32))))
            assert msgpack.unpackb(ws.recv(timeout=60))["t"] == "verdict"
            rounds_done.append(n)
            time.sleep(0.05)
        ws.send(encode_cancel())  # its generation ends: the slot is free
        time.sleep(0.2)


def _wait_for(rounds_done: list[int]) -> None:
    deadline = time.monotonic() + 60
    while not rounds_done:
        assert time.monotonic() < deadline, "the holder never got its session"
        time.sleep(0.01)


def test_a_refused_device_waits_retry_after_and_is_served(full_edge, loaded_target, self_drafter_engine) -> None:
    release, rounds_done = threading.Event(), []
    holder = threading.Thread(target=_holder, args=(full_edge, release, rounds_done))
    holder.start()
    _wait_for(rounds_done)
    threading.Timer(2.5 * RETRY_AFTER_S, release.set).start()  # the slot frees after two refusals or so
    img, prompt = image_bytes(31), PROMPTS[3]
    client = EdgeClient(full_edge.url)
    try:
        result = generate(self_drafter_engine("llava"), client, img, prompt, GenerationConfig(16))
    finally:
        client.close()  # its connection holds the finished session's slot until it closes
    holder.join(timeout=60)
    assert result.tokens == loaded_target("llava").generate(pil(img), prompt, max_new_tokens=16)
    assert result.stats["admission_waits"] >= 2 and result.stats["acceptance_rate"] == 1.0
    assert len(rounds_done) >= 20  # the admitted session was served all along


def test_past_its_admission_window_a_device_gives_up(full_edge, self_drafter_engine) -> None:
    release, rounds_done = threading.Event(), []
    holder = threading.Thread(target=_holder, args=(full_edge, release, rounds_done))
    holder.start()
    try:
        _wait_for(rounds_done)
        client = EdgeClient(full_edge.url, retry=RetryPolicy(admission_window_s=1.5 * RETRY_AFTER_S))
        started = time.monotonic()
        with pytest.raises(EdgeError) as refused:
            generate(self_drafter_engine("llava"), client, image_bytes(32), PROMPTS[1], GenerationConfig(8))
        assert refused.value.code == "too_many_sessions"
        assert time.monotonic() - started >= RETRY_AFTER_S  # it waited once before giving up
    finally:
        release.set()
        holder.join(timeout=60)
