"""No session stalls another: a long non-streamed completion, bursts of target tokens and a prompt at the token
limit run beside a session's rounds, and each of its rounds waits through a bounded number of target forwards
(counted by the edge's scheduler, not timed): the long jobs' tokens ride in the same batches as the rounds."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import msgpack
import numpy as np
import pytest
from websockets.sync.client import connect

from covspec.protocol import RoundRequest, SessionSpec, encode_open, encode_round
from covspec.protocol.messages import OpenRequest
from covspec.runtime_edge.server import BackgroundServer
from covspec.runtime_edge.settings import EdgeLimits, EdgeSettings
from tests.helpers import PROMPTS, image_bytes

pytestmark = pytest.mark.e2e
ARCH = "llava"
COMPLETION_TOKENS = 300  # the tiny target writes this many without an end-of-sequence token
ROUNDS = 30
# a round waits at most for the batch in progress and one prefill, however many long jobs run beside it
MAX_WAIT_FORWARDS = 2


@pytest.fixture(scope="module")
def server(tiny_pair, loaded_target):
    limits = EdgeLimits(max_prompt_tokens=400)
    settings = EdgeSettings(target=str(tiny_pair(ARCH).target), port=0, dtype="float64", limits=limits)
    with BackgroundServer(settings, loaded_target(ARCH)) as running:
        yield running


@contextmanager
def _session(server, max_new_tokens: int) -> Iterator[Any]:
    url = server.url.replace("http://", "ws://") + "/v1/connect?device=stall"
    with connect(url, compression=None, open_timeout=10, max_size=None) as ws:
        assert msgpack.unpackb(ws.recv(timeout=10))["t"] == "hello"
        ws.send(encode_open(OpenRequest(SessionSpec(PROMPTS[1], max_new_tokens=max_new_tokens), image_bytes(5))))
        assert msgpack.unpackb(ws.recv(timeout=60))["t"] == "opened"
        yield ws


def _verdict(ws, request: RoundRequest) -> dict:
    ws.send(encode_round(request))
    reply = msgpack.unpackb(ws.recv(timeout=120))
    assert reply["t"] == "verdict", reply
    return reply


def _histogram(server, kind: str) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics").text
    found = re.findall(r'covspec_model_wait_steps_bucket\{kind="' + kind + r'",le="([^"]+)"\} ([0-9.e+]+)', text)
    return {le: float(count) for le, count in found}


def _batches(server) -> tuple[float, float]:
    """(batched forwards run, rows they held) so far."""
    text = httpx.get(f"{server.url}/metrics").text
    count = sum(float(x) for x in re.findall(r"covspec_batch_size_count\{[^}]*\} ([0-9.e+]+)", text))
    rows = sum(float(x) for x in re.findall(r"covspec_batch_size_sum\{[^}]*\} ([0-9.e+]+)", text))
    return count, rows


def _chat(server, prompt: str, max_tokens: int) -> dict:
    uri = "data:image/png;base64," + base64.b64encode(image_bytes(4)).decode()
    content = [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": prompt}]
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0}
    reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=300)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_rounds_wait_a_bounded_number_of_forwards_beside_long_jobs(server) -> None:
    completions: list[dict] = []
    bursts: list[int] = []
    rounds_started = threading.Event()

    def complete() -> None:
        completions.append(_chat(server, PROMPTS[2], COMPLETION_TOKENS))

    def burst() -> None:
        with _session(server, 300) as ws:
            rounds_started.wait(60)
            for n in (1, 2):
                reply = _verdict(ws, RoundRequest(n, np.zeros(0, dtype=np.int32), burst=128))
                bursts.append(len(np.frombuffer(reply["bt"], dtype="<i4")))

    with _session(server, 200) as ws:
        jobs = [threading.Thread(target=complete), threading.Thread(target=burst)]
        before = _histogram(server, "completion").get("+Inf", 0.0)
        batches_before = _batches(server)
        for job in jobs:
            job.start()
        while _histogram(server, "prefill").get("+Inf", 0.0) < 3:  # the rounds' session, the burst's, the chat's
            pass
        rounds_started.set()
        for n in range(1, ROUNDS + 1):
            _verdict(ws, RoundRequest(n, np.asarray([7], dtype=np.int32)))
        for job in jobs:
            job.join(timeout=300)
    assert len(completions[0]["covspec"]["token_ids"]) == COMPLETION_TOKENS and bursts == [128, 128]
    rounds = _histogram(server, "round")
    assert rounds["+Inf"] == ROUNDS and _histogram(server, "burst")["+Inf"] == 2
    assert rounds[f"{float(MAX_WAIT_FORWARDS)}"] == rounds["+Inf"], rounds  # every round: at most 2 forwards
    # the long jobs shared batches with each other and the rounds: fewer forwards than rows
    count, rows = (a - b for a, b in zip(_batches(server), batches_before, strict=True))
    assert rows >= COMPLETION_TOKENS - 1 + 2 * 128 - 1 + ROUNDS and count < rows - 100, (count, rows)
    assert _histogram(server, "completion")["+Inf"] == before + 1


def test_a_prompt_at_the_token_limit_is_one_step(server) -> None:
    """A prefill is one forward of at most ``max_prompt_tokens``, alone: a round behind it waits for it and at most
    one batch."""
    prompt = " ".join(["word"] * 80)  # near the limit of 400 tokens, image tokens included
    answers: list[dict] = []
    with _session(server, 50) as ws:
        waiting = threading.Thread(target=lambda: answers.append(_chat(server, prompt, 1)))
        before = _histogram(server, "round")
        waiting.start()
        for n in range(1, 11):
            _verdict(ws, RoundRequest(n, np.asarray([7], dtype=np.int32)))
        waiting.join(timeout=120)
    assert answers[0]["usage"]["prompt_tokens"] > 300
    after = _histogram(server, "round")
    assert after["+Inf"] - before.get("+Inf", 0.0) == 10
    assert after["2.0"] - before.get("2.0", 0.0) == 10
