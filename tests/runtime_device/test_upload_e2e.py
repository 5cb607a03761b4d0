"""The pre-resized upload through a real uvicorn edge: setup uplink bytes shrink by what the image shrank, and the
greedy output is the target's own on the original; a lossy upload gives the target's output on the JPEG's pixels; a
family that cannot be pre-resized sends the original and says why."""

from __future__ import annotations

import httpx
import pytest

from covspec.runtime_device.client import EdgeClient
from covspec.runtime_device.loop import GenerationConfig, GenerationResult, generate, generate_target_only
from covspec.runtime_device.upload import decode_rgb, prepare_upload
from tests.helpers import ARCHS, photo

PROMPT = "Describe the picture."
MAX_NEW = 12
FRAMING = 16  # msgpack and WebSocket length headers: a few bytes more for a larger image


def _run(server, engine, image: bytes, **fields) -> GenerationResult:
    """One generation from a new device: nothing held on the edge, its hello counted alike in every run."""
    client = EdgeClient(server.url)
    try:
        return generate(engine, client, image, PROMPT, GenerationConfig(max_new_tokens=MAX_NEW, **fields))
    finally:
        client.close()


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ARCHS)
def test_resized_upload_shrinks_setup_and_keeps_the_output(arch, edge_server, loaded_target, drafter_engine) -> None:
    server, target, engine = edge_server(arch), loaded_target(arch), drafter_engine(arch)
    info = httpx.get(f"{server.url}/v1/info").json()
    assert "upload.image_processor" in info["features"]
    assert info["model"]["image_processor"]["class"] == type(target.processor.image_processor).__name__
    original = photo(800, 600, seed=21)
    want = target.generate(decode_rgb(original), PROMPT, max_new_tokens=MAX_NEW)
    before, after = _run(server, engine, original, upload_resize=False), _run(server, engine, original)
    assert before.tokens == after.tokens == want
    b, a = before.stats, after.stats
    assert not b["upload_resized"] and b["upload_image_bytes"] == b["upload_original_bytes"] == len(original)
    assert a["upload_resized"] and a["upload_fallback"] is None and a["upload_image_bytes"] < len(original) / 4
    saved = b["upload_image_bytes"] - a["upload_image_bytes"]
    assert abs((b["setup_uplink_bytes"] - a["setup_uplink_bytes"]) - saved) <= FRAMING


@pytest.mark.e2e
def test_target_only_uploads_the_resized_image_too(edge_server, loaded_target) -> None:
    server, target = edge_server("llava"), loaded_target("llava")
    original = photo(800, 600, seed=23)
    want = target.generate(decode_rgb(original), PROMPT, max_new_tokens=MAX_NEW)
    runs = {}
    for resize in (False, True):
        client = EdgeClient(server.url)
        config = GenerationConfig(max_new_tokens=MAX_NEW, upload_resize=resize)
        runs[resize] = generate_target_only(client, original, PROMPT, config)
    assert runs[False].tokens == runs[True].tokens == want
    assert runs[True].stats["upload_resized"] and not runs[False].stats["upload_resized"]
    assert runs[True].stats["setup_uplink_bytes"] < runs[False].stats["setup_uplink_bytes"] / 4


@pytest.mark.e2e
def test_lossy_upload_is_the_target_on_the_jpeg(edge_server, loaded_target, drafter_engine) -> None:
    """LOSSY: the output is the target's on the JPEG's pixels (which may differ from its output on the original)."""
    server, target, engine = edge_server("llava"), loaded_target("llava"), drafter_engine("llava")
    original = photo(800, 600, seed=25)
    lossless, lossy = _run(server, engine, original), _run(server, engine, original, upload_quality=40)
    jpeg = prepare_upload(original, httpx.get(f"{server.url}/v1/info").json()["model"]["image_processor"], quality=40)
    assert lossy.tokens == target.generate(decode_rgb(jpeg.data), PROMPT, max_new_tokens=MAX_NEW)
    assert lossy.stats["upload_quality"] == 40 and lossy.stats["upload_resized"]
    assert lossy.stats["upload_image_bytes"] == len(jpeg.data) < lossless.stats["upload_image_bytes"]


@pytest.mark.e2e
def test_a_family_that_cannot_be_preresized_sends_the_original(edge_server, loaded_target, drafter_engine) -> None:
    """LLaVA-NeXT's anyres tiling reads the original size: the original goes up, the stats say why."""
    server, target, engine = edge_server("llava_next"), loaded_target("llava_next"), drafter_engine("llava_next")
    original = photo(800, 600, seed=27)
    result = _run(server, engine, original)
    assert result.tokens == target.generate(decode_rgb(original), PROMPT, max_new_tokens=MAX_NEW)
    stats = result.stats
    assert not stats["upload_resized"] and stats["upload_image_bytes"] == len(original)
    assert "anyres" in stats["upload_fallback"]
