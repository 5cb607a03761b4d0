"""OpenAI-compatible chat completions (target only): schemas and the wire <-> domain conversion."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from covspec.errors import ProtocolError
from covspec.protocol import prompt_from_messages


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)  # non-standard; clients pass it in extra_body
    seed: int | None = Field(default=None, ge=0)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None


def split_chat_request(request: ChatCompletionRequest) -> tuple[str, str | None]:
    """(prompt text, image data URI or None) of the single user turn DESIGN.md §7 renders."""
    messages = [m for m in request.messages if m.get("role") != "system" or m.get("content")]
    if any(m.get("role") == "system" for m in messages):
        raise ProtocolError(
            "system messages are not supported: the prompt is rendered with no system turn", code="invalid_request"
        )
    prompt = prompt_from_messages(messages)
    image_url = None
    content = messages[0].get("content")
    if isinstance(content, list):
        for part in content:
            if part.get("type") == "image_url":
                url = part.get("image_url")
                image_url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(image_url, str):
                    raise ProtocolError("image_url.url must be a string", code="invalid_request")
    return prompt, image_url


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion_body(cid: str, model: str, text: str, finish: str, prompt_tokens: int, tokens: list[int]) -> dict:
    """A ``chat.completion``; the extra ``covspec.token_ids`` lets benchmarks compare token streams exactly."""
    completion_tokens = len(tokens)
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}
        ],
        "usage": usage(prompt_tokens, completion_tokens),
        "covspec": {"token_ids": list(tokens)},
    }


def chunk_body(cid: str, model: str, created: int, delta: dict, finish: str | None) -> dict:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


FinishReason = Literal["stop", "length"]
