"""Target-only generation through the OpenAI-compatible endpoint, called by the official `openai` client."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest

from tests.helpers import PROMPTS, image_bytes, pil


def _messages(img: bytes, prompt: str) -> list[dict]:
    uri = "data:image/png;base64," + base64.b64encode(img).decode()
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": prompt}],
        }
    ]


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_streamed_completion_equals_target_greedy_output(arch, edge_server, loaded_target) -> None:
    server, target = edge_server(arch), loaded_target(arch)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    img, prompt = image_bytes(31), PROMPTS[5]
    want = target.generate(pil(img), prompt, max_new_tokens=20)
    stream = client.chat.completions.create(
        model="tiny",
        messages=_messages(img, prompt),
        max_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == target.decode(want)
    assert finish == ("stop" if want[-1] in target.eos_token_ids else "length")
    assert usage is not None and usage.completion_tokens == len(want)

    full = client.chat.completions.create(model="tiny", messages=_messages(img, prompt), max_tokens=20, temperature=0)
    assert full.choices[0].message.content == target.decode(want)
    assert full.usage.completion_tokens == len(want)


@pytest.mark.e2e
def test_openai_errors_are_json(edge_server) -> None:
    server = edge_server("llava")
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": _messages(b"notanimage", "x")})
    assert r.status_code == 415 and r.json()["error"]["code"] == "invalid_image"
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [], "temperature": 9})
    assert r.status_code == 422
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["data"][0]["object"] == "model"
