"""The edge under hostile input (issue 11): each input class found by trying, answered 4xx (or a 44xx close) with
the one error body, checked before the work it would cost, and counted; a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import msgpack
import numpy as np
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from covspec.protocol import PROTOCOL_VERSION, RoundRequest, SessionSpec, encode_open, encode_round
from covspec.protocol.errors import ERROR_CODES, MAX_CLOSE_REASON_BYTES, MAX_MESSAGE_CHARS
from covspec.protocol.messages import OpenRequest
from covspec.runtime_edge.server import BackgroundServer
from covspec.runtime_edge.settings import EdgeLimits, EdgeSettings
from tests.helpers import PROMPTS, image_bytes

pytestmark = pytest.mark.e2e
KEY = "hostile-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ARCH = "llava"
LIMITS = EdgeLimits(
    max_sessions=16,
    max_image_bytes=200_000,
    max_prompt_chars=4000,
    max_prompt_tokens=300,
    header_timeout_s=1.0,
    idle_timeout_s=1.0,
)


@pytest.fixture(scope="module")
def server(tiny_pair, loaded_target):
    settings = EdgeSettings(target=str(tiny_pair(ARCH).target), port=0, api_key=KEY, limits=LIMITS)
    with BackgroundServer(settings, loaded_target(ARCH)) as running:
        yield running


def _metric(server, name: str, label: str = "") -> float:
    text = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    pattern = re.escape(name) + (r"\{[^}]*" + re.escape(label) + r"[^}]*\}" if label else "") + r" ([0-9.e+-]+)"
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def _documented(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and code in ERROR_CODES, error
    assert len(error["message"]) <= MAX_MESSAGE_CHARS
    return error["message"]


def _open_http(server, spec: dict | str, image: bytes | None = None) -> httpx.Response:
    body = spec if isinstance(spec, str) else json.dumps(spec)
    return httpx.post(
        f"{server.url}/v1/sessions",
        data={"request": body},
        files={"image": ("i.png", image if image is not None else image_bytes(1), "image/png")},
        headers=AUTH,
        timeout=30,
    )


def _chat(server, body: dict | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**AUTH, "Content-Type": "application/json"}
    return httpx.post(f"{server.url}/v1/chat/completions", content=content, headers=headers, timeout=60)


def _chat_body(prompt: str, **extra) -> dict:
    uri = "data:image/png;base64," + base64.b64encode(image_bytes(3)).decode()
    content = [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": prompt}]
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


@contextmanager
def _device(server) -> Iterator[Any]:
    url = server.url.replace("http://", "ws://") + "/v1/connect?device=hostile"
    with connect(url, additional_headers=AUTH, compression=None, open_timeout=10, max_size=None) as ws:
        assert msgpack.unpackb(ws.recv(timeout=10))["t"] == "hello"
        yield ws


def _closed_with(ws, frame: bytes) -> tuple[int, str, dict]:
    """Send ``frame``; the edge answers with an error frame, then closes: (close code, reason, error frame)."""
    ws.send(frame)
    error = msgpack.unpackb(ws.recv(timeout=10))
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    return closed.value.rcvd.code, closed.value.rcvd.reason, error


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(out, format="PNG")
    return out.getvalue()


def test_a_first_round_with_a_commit_is_a_bad_commit(server) -> None:
    with _device(server) as ws:
        ws.send(encode_open(OpenRequest(SessionSpec(PROMPTS[0], max_new_tokens=8), image_bytes(1))))
        assert msgpack.unpackb(ws.recv(timeout=30))["t"] == "opened"
        frame = encode_round(RoundRequest(1, np.asarray([3], dtype=np.int32), commit=(0, 5)))
        code, _, error = _closed_with(ws, frame)
    assert (code, error["code"]) == (4424, "bad_commit")


def test_client_values_are_never_echoed_whole(server) -> None:
    """A close reason fits its 123 bytes once UTF-8 encoded; an error message quotes a client's value bounded."""
    for version in ("é" * 300, "x" * 1_000_000):
        with _device(server) as ws:
            code, reason, error = _closed_with(ws, msgpack.packb({"v": version, "t": "round", "n": 1}))
        assert (code, error["code"]) == (4426, "unsupported_version")
        assert len(reason.encode()) <= MAX_CLOSE_REASON_BYTES and reason.startswith("unsupported_version")
        assert len(error["msg"]) <= MAX_MESSAGE_CHARS
    r = _open_http(server, {"messages": [{"role": "user", "content": [{"type": "é" * 100_000}]}]})
    assert len(r.content) < 1000 and _documented(r, 422, "invalid_request")


def test_frames_are_bounded_in_structure_and_size(server) -> None:
    many = msgpack.packb({"v": PROTOCOL_VERSION, "t": "open", "req": {str(i): i for i in range(100_000)}})
    with _device(server) as ws:
        code, _, error = _closed_with(ws, many)
    assert (code, error["code"]) == (4400, "malformed_message") and "max_map_len" in error["msg"]
    too_big = b"\x00" * (LIMITS.max_body_bytes + 1)  # past the largest valid frame: the server's frame limit
    with _device(server) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.send(too_big)
            ws.recv(timeout=10)
    # "message too big", before the frame is buffered whole; or the server cut the connection while it was still
    # being sent (then the close frame may not have made it back)
    assert closed.value.rcvd is None or closed.value.rcvd.code == 1009


@pytest.mark.parametrize("shape", [(1, 5000), (5000, 1), (300, 10)])
def test_absurd_image_shapes_are_refused_before_the_processor(server, shape) -> None:
    r = _open_http(server, SessionSpec(PROMPTS[0]).to_dict(), image=_png(*shape))
    assert "image is" in _documented(r, 413, "image_too_large")
    uri = "data:image/png;base64," + base64.b64encode(_png(*shape)).decode()
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}}]}]}
    _documented(_chat(server, body), 413, "image_too_large")


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [("describe <image> twice", "special token"), ("end </s> here", "special token"), ("a \ud800 b", "Unicode")],
)
def test_prompts_the_tokenizer_would_refuse_are_refused_first(server, prompt, needle) -> None:
    errors_before = _metric(server, "covspec_errors_total", 'code="invalid_request"')
    r = _open_http(server, json.dumps(SessionSpec(prompt).to_dict()))  # json.dumps escapes the surrogate
    assert needle in _documented(r, 422, "invalid_request")
    _documented(_chat(server, json.dumps(_chat_body(prompt)).encode()), 422, "invalid_request")
    assert _metric(server, "covspec_errors_total", 'code="invalid_request"') == errors_before + 2
    frame = msgpack.packb(
        {"v": PROTOCOL_VERSION, "t": "open", "n": 0, "req": SessionSpec(prompt).to_dict(), "img": image_bytes(1)},
        unicode_errors="surrogatepass",  # a lone surrogate can only come as bytes that are not UTF-8
    )
    with _device(server) as ws:
        ws.send(frame)
        error = msgpack.unpackb(ws.recv(timeout=10))
        if "Unicode" not in needle:  # a refused open: the connection stays for the next one
            assert _opened(ws, SessionSpec(PROMPTS[0], max_new_tokens=4))["t"] == "opened"
    want = "malformed_message" if "Unicode" in needle else "invalid_request"
    assert error["t"] == "error" and error["code"] == want


def test_nested_json_and_malformed_bodies_get_the_error_body(server) -> None:
    nested = "[" * 100_000 + "]" * 100_000
    _documented(_open_http(server, nested), 422, "invalid_request")
    assert _chat(server, nested.encode()).status_code == 422
    r = httpx.post(f"{server.url}/v1/sessions", files=[("a", b"1")] * 3 + [("image", b"2")] * 2, headers=AUTH)
    _documented(r, 422, "invalid_request")  # the multipart parser's refusal, in the one error body
    _documented(httpx.get(f"{server.url}/no/such/path", headers=AUTH), 404, "not_found")
    _documented(httpx.put(f"{server.url}/v1/info", headers=AUTH), 405, "method_not_allowed")


@pytest.mark.parametrize("temperature", [5e-324, 1e-9, 0.0009])
def test_sampling_that_could_give_nan_is_refused(server, temperature) -> None:
    spec = SessionSpec(PROMPTS[0]).to_dict()
    spec["sampling"]["temperature"] = temperature
    assert "temperature" in _documented(_open_http(server, spec), 422, "invalid_request")
    _documented(_chat(server, _chat_body(PROMPTS[0], temperature=temperature)), 422, "invalid_request")
    _documented(_chat(server, _chat_body(PROMPTS[0], temperature=temperature, stream=True)), 422, "invalid_request")
    with _device(server) as ws:  # an open refused as it is decoded: an error frame, and the connection stays
        ws.send(msgpack.packb({"v": PROTOCOL_VERSION, "t": "open", "n": 0, "req": spec, "img": image_bytes(1)}))
        error = msgpack.unpackb(ws.recv(timeout=10))
        assert (error["t"], error["code"]) == ("error", "invalid_request") and "temperature" in error["msg"]
        assert _opened(ws, SessionSpec(PROMPTS[0], max_new_tokens=4))["t"] == "opened"


def test_long_prompts_are_refused_before_their_prefill(server) -> None:
    prompt = " ".join(["word"] * 600)  # under the character limit, over the token limit
    prefills = _metric(server, "covspec_prefill_seconds_count")
    assert "tokens" in _documented(_open_http(server, SessionSpec(prompt).to_dict()), 413, "prompt_too_long")
    _documented(_chat(server, _chat_body(prompt)), 413, "prompt_too_long")
    _documented(_chat(server, _chat_body("x" * 5000)), 413, "prompt_too_long")  # the character limit: chat too
    assert _metric(server, "covspec_prefill_seconds_count") == prefills  # no prefill was paid for


def _answer_to_head(server, authorization: str, length: int) -> str:
    """Send only the head of a POST declaring ``length`` body bytes, and read what the edge answers to it."""
    with socket.create_connection(("127.0.0.1", server.settings.port), timeout=10) as sock:
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{authorization}"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
        sock.sendall(head.encode())  # and not one byte of the body
        answer = b""
        while b"}}" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    return answer.decode()


def test_bodies_past_the_limit_are_refused_before_they_are_read(server) -> None:
    answer = _answer_to_head(server, f"Authorization: Bearer {KEY}\r\n", 200 << 20)
    assert answer.startswith("HTTP/1.1 413") and '"request_too_large"' in answer
    answer = _answer_to_head(server, "", 100 << 20)  # without the key: refused before the size even matters
    assert answer.startswith("HTTP/1.1 401") and '"unauthorized"' in answer

    def chunks():
        for _ in range(LIMITS.max_body_bytes // (1 << 20) + 2):
            yield b" " * (1 << 20)

    r = httpx.post(f"{server.url}/v1/chat/completions", content=chunks(), headers=AUTH, timeout=60)
    _documented(r, 413, "request_too_large")  # a chunked body declares nothing: it is counted as it comes


def test_everything_but_healthz_needs_the_key(server) -> None:
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    for path in ("/docs", "/redoc", "/openapi.json", "/v1/info", "/metrics", "/v1/models"):
        _documented(httpx.get(f"{server.url}{path}"), 401, "unauthorized")
    assert httpx.get(f"{server.url}/openapi.json", headers=AUTH).status_code == 200


def test_capacity_refusals_say_when_to_retry(server) -> None:
    opened = []
    try:
        for _ in range(LIMITS.max_sessions - int(_metric(server, "covspec_sessions_active"))):
            r = _open_http(server, SessionSpec(PROMPTS[0], max_new_tokens=4).to_dict())
            opened.append(r.json()["session_id"])
        r = _open_http(server, SessionSpec(PROMPTS[0], max_new_tokens=4).to_dict())
        _documented(r, 503, "too_many_sessions")
        assert r.headers["retry-after"] == str(LIMITS.retry_after_s)
    finally:
        for sid in opened:
            httpx.delete(f"{server.url}/v1/sessions/{sid}", headers=AUTH)


def test_a_stalled_body_is_refused(server) -> None:
    """A body that stops arriving holds its request for the idle timeout (1 s here), then gets the error body."""
    with socket.create_connection(("127.0.0.1", server.settings.port), timeout=10) as sock:
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"messages": [')  # and then nothing more
        answer = b""
        while b"}}" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 422") and b"no body bytes arrived" in answer


def test_a_client_sending_its_head_slowly_is_cut_off(server) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.settings.port), timeout=10) as sock:
        sent = 0
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.25)
            answer = sock.recv(100)
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
    assert answer == b"" and sent < len(head)  # closed after the 1 s head deadline, long before the head was in


def _opened(ws, spec: SessionSpec) -> dict:
    ws.send(encode_open(OpenRequest(spec, image_bytes(1))))
    reply = msgpack.unpackb(ws.recv(timeout=30))
    assert reply["t"] == "opened", reply
    return reply


def test_a_resent_round_must_repeat_the_round(server) -> None:
    with _device(server) as ws:
        _opened(ws, SessionSpec(PROMPTS[0], max_new_tokens=12))
        ws.send(encode_round(RoundRequest(1, np.asarray([3, 4], dtype=np.int32))))
        first = ws.recv(timeout=10)
        ws.send(encode_round(RoundRequest(1, np.asarray([3, 4], dtype=np.int32))))
        assert ws.recv(timeout=10) == first  # the same round again: its stored verdict
        code, _, error = _closed_with(ws, encode_round(RoundRequest(1, np.asarray([5, 4], dtype=np.int32))))
    assert (code, error["code"]) == (4412, "round_conflict")


def test_a_session_is_served_on_one_connection(server) -> None:
    """A second connection resuming a session takes it over; the first one's next round is refused."""
    with _device(server) as first, _device(server) as second:
        session_id = _opened(first, SessionSpec(PROMPTS[0], max_new_tokens=12))["s"]
        second.send(msgpack.packb({"v": PROTOCOL_VERSION, "t": "resume", "n": 0, "s": session_id}))
        second.send(encode_round(RoundRequest(1, np.asarray([3], dtype=np.int32))))
        assert msgpack.unpackb(second.recv(timeout=10))["t"] == "verdict"
        code, _, error = _closed_with(first, encode_round(RoundRequest(2, np.asarray([3], dtype=np.int32))))
    assert (code, error["code"]) == (4408, "session_moved")


def test_a_retried_open_finds_the_session_it_made(server) -> None:
    """The same request id, sent again after its answer was lost, gets the same session: no orphan holds a slot."""
    spec = SessionSpec(PROMPTS[0], max_new_tokens=12, request_id="retry-me-1")
    with _device(server) as first:
        session_id = _opened(first, spec)["s"]
    active = _metric(server, "covspec_sessions_active")
    with _device(server) as second:
        assert _opened(second, spec)["s"] == session_id
    assert _metric(server, "covspec_sessions_active") == active
    http_spec = SessionSpec(PROMPTS[0], max_new_tokens=12, request_id="retry-me-2").to_dict()
    ids = {_open_http(server, http_spec).json()["session_id"] for _ in range(2)}
    assert len(ids) == 1
    httpx.delete(f"{server.url}/v1/sessions/{ids.pop()}", headers=AUTH)
