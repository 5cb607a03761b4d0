"""Bad input against a real server: each gets its documented error, the server stays up, and a healthy session
running at the same time produces exactly the target's output."""

from __future__ import annotations

import json
import threading

import httpx
import msgpack
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from covspec.protocol import PROTOCOL_VERSION, RoundRequest, SessionSpec, VerifyMode, encode_round
from covspec.runtime_device.client import EdgeClient
from covspec.runtime_device.loop import GenerationConfig, generate
from covspec.runtime_edge.server import BackgroundServer
from covspec.runtime_edge.settings import EdgeLimits, EdgeSettings
from tests.helpers import PROMPTS, image_bytes, pil

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
ARCH = "llava"


@pytest.fixture(scope="module")
def strict_server(tiny_pair, loaded_target):
    limits = EdgeLimits(max_sessions=4, max_image_bytes=20_000, max_draft_tokens=8, session_ttl_s=60)
    settings = EdgeSettings(target=str(tiny_pair(ARCH).target), port=0, api_key=KEY, limits=limits)
    with BackgroundServer(settings, loaded_target(ARCH)) as server:
        yield server


def _open(server, image: bytes | None = None, spec: SessionSpec | None = None, headers=AUTH) -> httpx.Response:
    spec = spec or SessionSpec(PROMPTS[0], max_new_tokens=12)
    files = {"image": ("img.png", image if image is not None else image_bytes(1), "image/png")}
    return httpx.post(
        f"{server.url}/v1/sessions",
        data={"request": json.dumps(spec.to_dict())},
        files=files,
        headers=headers,
        timeout=30,
    )


def _ws(server, session_id: str, headers=AUTH):
    url = server.url.replace("http://", "ws://") + f"/v1/sessions/{session_id}/rounds"
    return connect(url, additional_headers=headers, compression=None, open_timeout=10)


def _expect_close(ws, frame: bytes | str) -> tuple[int, dict]:
    """Send ``frame``; the edge answers with an error frame and then closes with a code."""
    ws.send(frame)
    error = msgpack.unpackb(ws.recv(timeout=10))
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=10)
    return info.value.rcvd.code, error


def _expect_refusal(ws) -> tuple[int, str]:
    """The edge refuses the channel itself: an error frame, then the close code."""
    error = msgpack.unpackb(ws.recv(timeout=10))
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=10)
    return info.value.rcvd.code, error["code"]


def _error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


def test_http_errors_have_their_codes(strict_server) -> None:
    url = strict_server.url
    assert httpx.get(f"{url}/healthz").status_code == 200  # open without a key
    r = httpx.get(f"{url}/v1/info")
    assert r.status_code == 401 and _error_code(r) == "unauthorized"
    r = httpx.get(f"{url}/v1/info", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and "wrong" in r.json()["error"]["message"]
    assert httpx.get(f"{url}/metrics").status_code == 401
    r = _open(strict_server, headers={})
    assert r.status_code == 401
    r = _open(strict_server, image=b"\x89PNG but not really an image")
    assert r.status_code == 415 and _error_code(r) == "invalid_image"
    r = _open(strict_server, image=image_bytes(2, size=(400, 400), fmt="BMP"))
    assert r.status_code == 413 and _error_code(r) == "image_too_large"
    r = httpx.delete(f"{url}/v1/sessions/not-a-session", headers=AUTH)
    assert r.status_code == 404 and _error_code(r) == "unknown_session"
    r = httpx.post(f"{url}/v1/sessions", json={"x": 1}, headers=AUTH)
    assert r.status_code == 422 and _error_code(r) == "invalid_request"
    r = _open(strict_server, spec=SessionSpec(PROMPTS[0], keep_set=(0, 999)))
    assert r.status_code == 422 and "keep_set" in r.json()["error"]["message"]
    r = _open(strict_server, spec=SessionSpec(PROMPTS[0], keep_set=(0, 2, 5)))
    assert r.status_code == 200 and r.json()["keep_set_size"] == 3
    httpx.delete(f"{url}/v1/sessions/{r.json()['session_id']}", headers=AUTH)
    bad = SessionSpec(PROMPTS[0]).to_dict()
    bad["sampling"]["top_p"] = 3
    r = httpx.post(
        f"{url}/v1/sessions",
        data={"request": json.dumps(bad)},
        files={"image": ("i.png", image_bytes(1))},
        headers=AUTH,
    )
    assert r.status_code == 422 and "top_p" in r.json()["error"]["message"]


def test_too_many_sessions(strict_server) -> None:
    opened = []
    try:
        for _ in range(4):
            r = _open(strict_server)
            assert r.status_code == 200
            opened.append(r.json()["session_id"])
        r = _open(strict_server)
        assert r.status_code == 503 and _error_code(r) == "too_many_sessions"
        assert r.headers["retry-after"] == "2"  # one status for capacity, with when to come back
    finally:
        for sid in opened:
            httpx.delete(f"{strict_server.url}/v1/sessions/{sid}", headers=AUTH)
    assert _open(strict_server).status_code == 200  # capacity is back once sessions are deleted


def _round(n: int, tokens: list[int], **kw) -> bytes:
    return encode_round(RoundRequest(n, np.asarray(tokens, dtype=np.int32), **kw))


def test_round_errors_have_their_close_codes(strict_server, loaded_target) -> None:
    vocab = loaded_target(ARCH).vocab_size
    cases = [
        (b"\xc1 not msgpack", 4400, "malformed_message"),
        ("a text frame", 4400, "malformed_message"),
        (msgpack.packb({"v": PROTOCOL_VERSION + 1, "t": "round", "n": 1, "d": b""}), 4426, "unsupported_version"),
        (_round(3, [1]), 4410, "future_round"),
        (_round(1, [vocab]), 4422, "token_out_of_vocab"),
        (_round(1, list(range(9))), 4413, "draft_too_long"),
    ]
    sid = _open(strict_server).json()["session_id"]
    for frame, close_code, code in cases:
        with _ws(strict_server, sid) as ws:
            got_close, error = _expect_close(ws, frame)
        assert (got_close, error["code"]) == (close_code, code), frame
    # the session survived all of that: rounds 1 and 2 verify, then 1 is stale (2 is a retry, answered again)
    with _ws(strict_server, sid) as ws:
        ws.send(_round(1, [5]))
        first = ws.recv(timeout=10)
        ws.send(_round(2, [6]))
        second = ws.recv(timeout=10)
        ws.send(_round(2, [6]))
        assert ws.recv(timeout=10) == second != first
        got_close, error = _expect_close(ws, _round(1, [5]))
    assert (got_close, error["code"]) == (4409, "stale_round")
    with _ws(strict_server, "no-such-session") as ws:
        assert _expect_refusal(ws) == (4404, "unknown_session")
    for path in (f"/v1/sessions/{sid}/rounds", "/v1/connect?device=d"):  # refused before the handshake completes
        with pytest.raises(InvalidStatus) as refused:
            connect(strict_server.url.replace("http://", "ws://") + path, open_timeout=10)
        response = refused.value.response
        assert response.status_code == 401, path
        assert json.loads(response.body)["error"]["code"] == "unauthorized", path
    httpx.delete(f"{strict_server.url}/v1/sessions/{sid}", headers=AUTH)


def test_healthy_session_is_untouched_by_concurrent_abuse(strict_server, loaded_target, drafter_engine) -> None:
    target, engine = loaded_target(ARCH), drafter_engine(ARCH)
    img, prompt = image_bytes(21), PROMPTS[4]
    want = target.generate(pil(img), prompt, max_new_tokens=40)
    results: list = []

    def healthy() -> None:
        client = EdgeClient(strict_server.url, api_key=KEY)
        results.append(
            generate(
                engine,
                client,
                img,
                prompt,
                GenerationConfig(max_new_tokens=40, draft_len=2, verify_mode=VerifyMode.VANILLA),
            )
        )

    thread = threading.Thread(target=healthy)
    thread.start()
    vocab = target.vocab_size
    while thread.is_alive():
        r = _open(strict_server, image=b"garbage")
        assert r.status_code == 415
        sid = _open(strict_server).json()["session_id"]
        with _ws(strict_server, sid) as ws:
            assert _expect_close(ws, _round(1, [vocab + 7]))[0] == 4422
        httpx.delete(f"{strict_server.url}/v1/sessions/{sid}", headers=AUTH)
    thread.join()
    assert results and results[0].tokens == want
    assert httpx.get(f"{strict_server.url}/healthz").json() == {"status": "ok"}
    metrics = httpx.get(f"{strict_server.url}/metrics", headers=AUTH).text
    assert 'covspec_errors_total{code="token_out_of_vocab"}' in metrics
    assert "covspec_rounds_total" in metrics


def test_info_states_the_fingerprint(strict_server, loaded_target) -> None:
    info = httpx.get(f"{strict_server.url}/v1/info", headers=AUTH).json()
    fp = loaded_target(ARCH).fingerprint
    assert info["protocol_version"] == PROTOCOL_VERSION
    assert info["model"]["tokenizer_hash"] == fp.tokenizer_hash
    assert info["model"]["vocab_size"] == fp.vocab_size
    assert set(info["verify_modes"]) == {m.value for m in VerifyMode}
    assert info["limits"]["max_sessions"] == 4
