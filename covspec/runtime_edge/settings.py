"""Typed settings of the edge server; `covspec serve` flags map one to one onto these fields."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EdgeLimits:
    """Documented limits; each violation has its own error code (covspec.protocol.errors)."""

    max_sessions: int = 64  # too_many_sessions
    session_ttl_s: float = 300.0  # idle time before a session is dropped (unknown_session afterwards)
    max_kv_bytes: int = 4 << 30  # KV-cache memory reserved by all sessions together (kv_memory_exhausted)
    max_image_bytes: int = 8 << 20  # image_too_large
    max_image_pixels: int = 4096 * 4096  # image_too_large
    max_prompt_tokens: int = 8192  # prompt_too_long (rendered prompt, image tokens included)
    max_prompt_chars: int = 32768  # prompt_too_long, checked before any tokenization
    max_draft_tokens: int = 32  # draft_too_long (per round)
    max_burst_tokens: int = 128  # draft_too_long (target tokens one burst round may ask for)
    max_new_tokens: int = 4096  # invalid_request above it
    images_per_device: int = 8  # images held per device by sha256 (a device names a held image, sends no bytes)
    image_cache_bytes: int = 256 << 20  # all devices' held images together

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class EdgeSettings:
    target: str
    host: str = "127.0.0.1"
    port: int = 8000
    dtype: str = "auto"
    api_key: str | None = None
    limits: EdgeLimits = EdgeLimits()
    model_name: str | None = None  # served name in /v1/info and /v1/models (defaults to the target path/id)
    threads: int | None = None  # torch intra-op threads; None: one per CPU this process may use (covspec.cpus)
