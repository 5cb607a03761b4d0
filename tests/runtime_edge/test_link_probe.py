"""The link probe routes against a real uvicorn edge on 127.0.0.1 with an API key and a small cap: the sink counts
what it was sent, the source sends exactly what was asked (incompressible), both take the key, and past the cap both
refuse with the one JSON error body naming the limit; /v1/info lists the feature, the cap and the target's image
facts; the device's LinkProbe times all three on one connection."""

from __future__ import annotations

import http.client
import json
import zlib
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from covspec.errors import EdgeError
from covspec.runtime_device.client import EdgeClient, LinkProbe
from covspec.runtime_edge.server import BackgroundServer
from covspec.runtime_edge.settings import EdgeLimits, EdgeSettings

KEY = "probe-key"
CAP = 256 << 10


@pytest.fixture(scope="module")
def server(tiny_pair, loaded_target) -> Iterator[BackgroundServer]:
    settings = EdgeSettings(target=str(tiny_pair("llava").target), port=0, dtype="float64", api_key=KEY,
                            limits=EdgeLimits(max_link_probe_bytes=CAP))  # fmt: skip
    with BackgroundServer(settings, loaded_target("llava")) as running:
        yield running


def _request(server, method: str, path: str, body=None, key: str | None = KEY, headers: dict | None = None):
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        sent = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("content-type")
    finally:
        conn.close()


def _error(payload: bytes) -> dict:
    return json.loads(payload)["error"]


@pytest.mark.e2e
def test_the_sink_counts_and_the_source_sends_exactly_what_was_asked(server) -> None:
    for size in (0, 1, 100_000, CAP):
        status, payload, _ = _request(server, "POST", "/v1/link/sink", b"x" * size)
        assert status == 200 and json.loads(payload) == {"bytes": size}
        status, payload, kind = _request(server, "GET", f"/v1/link/source?bytes={size}")
        assert status == 200 and len(payload) == size and kind == "application/octet-stream"
    _, payload, _ = _request(server, "GET", f"/v1/link/source?bytes={CAP}")
    assert len(zlib.compress(payload)) > 0.99 * CAP  # random: nothing on the way can shrink it


@pytest.mark.e2e
def test_the_probe_routes_take_the_api_key(server) -> None:
    for method, path, body in (("POST", "/v1/link/sink", b"abc"), ("GET", "/v1/link/source?bytes=10", None)):
        for key in (None, "wrong"):
            status, payload, _ = _request(server, method, path, body, key=key)
            assert status == 401 and _error(payload)["code"] == "unauthorized"


@pytest.mark.e2e
def test_past_the_cap_both_refuse_with_a_json_error_naming_the_limit(server) -> None:
    status, payload, _ = _request(server, "POST", "/v1/link/sink", b"x" * (CAP + 1))
    error = _error(payload)
    assert status == 413 and error["code"] == "request_too_large"
    assert str(CAP) in error["message"] and "max_link_probe_bytes" in error["message"]

    def chunks() -> Iterator[bytes]:  # declares no size: refused once the count passes the cap
        for _ in range(CAP // 8192 + 2):
            yield b"y" * 8192

    status, payload, _ = _request(server, "POST", "/v1/link/sink", chunks())  # http.client sends it chunked
    assert status == 413 and "max_link_probe_bytes" in _error(payload)["message"]
    status, payload, _ = _request(server, "GET", f"/v1/link/source?bytes={CAP + 1}")
    assert status == 413 and _error(payload)["code"] == "request_too_large" and str(CAP) in _error(payload)["message"]
    for bad in ("-1", "many"):
        status, payload, _ = _request(server, "GET", f"/v1/link/source?bytes={bad}")
        assert status == 422 and _error(payload)["code"] == "invalid_request"
    status, payload, _ = _request(server, "GET", "/v1/link/source")
    assert status == 422 and "bytes" in _error(payload)["message"]


@pytest.mark.e2e
def test_info_lists_the_feature_the_cap_and_the_targets_image_facts(server, loaded_target) -> None:
    info = EdgeClient(server.url, api_key=KEY).info()
    assert LinkProbe.FEATURE in info["features"] and "batching" in info["features"]
    assert info["limits"]["max_link_probe_bytes"] == CAP
    target = loaded_target("llava")
    assert info["model"]["accepts_images"] is True and info["model"]["image_token_id"] == target.image_token_id


@pytest.mark.e2e
def test_the_device_probe_times_each_route_on_one_connection(server) -> None:
    client = EdgeClient(server.url, api_key=KEY)
    with client.link_probe() as probe:
        assert probe.round_trip() > 0
        assert probe.upload(b"z" * 50_000) > 0
        assert probe.download(50_000) > 0
        with pytest.raises(EdgeError) as caught:
            probe.download(CAP + 1)
        assert caught.value.code == "request_too_large"
    assert client.counter.sent["probe"] > 50_000 and client.counter.received["probe"] > 50_000
    assert client.counter.sent["setup"] == 0 and client.counter.sent["rounds"] == 0  # probes count apart
    with pytest.raises(EdgeError) as refused, EdgeClient(server.url).link_probe() as keyless:
        keyless.upload(b"a")
    assert refused.value.code == "unauthorized"
