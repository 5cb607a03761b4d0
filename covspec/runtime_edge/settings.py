"""Typed settings of the edge server; `covspec serve` flags map one to one onto these fields."""

from __future__ import annotations

from dataclasses import dataclass

from covspec.runtime_edge.schedules import Schedule


@dataclass(frozen=True)
class EdgeLimits:
    """Documented limits; each violation has its own error code (covspec.protocol.errors)."""

    max_sessions: int = 64  # too_many_sessions
    session_ttl_s: float = 300.0  # idle time before a session is dropped (unknown_session afterwards)
    max_kv_bytes: int = 4 << 30  # KV-cache memory reserved by all sessions together (kv_memory_exhausted)
    max_image_bytes: int = 8 << 20  # image_too_large
    max_image_pixels: int = 4096 * 4096  # image_too_large
    max_image_side: int = 8192  # image_too_large: no side longer (a processor resizes the short side up)
    max_image_aspect: float = 20.0  # image_too_large: long side / short side (a 1 x 1,000,000 image is absurd)
    max_prompt_tokens: int = 8192  # prompt_too_long (rendered prompt, image tokens included)
    max_prompt_chars: int = 32768  # prompt_too_long, checked before any tokenization
    max_draft_tokens: int = 32  # draft_too_long (per round)
    max_burst_tokens: int = 128  # draft_too_long (target tokens one burst round may ask for)
    max_new_tokens: int = 4096  # invalid_request above it
    images_per_device: int = 8  # images held per device by sha256 (a device names a held image, sends no bytes)
    image_cache_bytes: int = 256 << 20  # all devices' held images together
    retry_after_s: int = 2  # the Retry-After of a refusal for capacity (503 too_many_sessions / kv_memory_exhausted)
    header_timeout_s: float = 10.0  # a connection must deliver its request head within this (slow clients)
    idle_timeout_s: float = 30.0  # an idle keep-alive HTTP connection is closed after this
    max_link_probe_bytes: int = 8 << 20  # request_too_large: the most one link probe (/v1/link/sink, source) moves

    def to_dict(self) -> dict[str, float | int]:
        return {**self.__dict__, "max_body_bytes": self.max_body_bytes}

    @property
    def max_body_bytes(self) -> int:
        """The largest HTTP body a valid request can have (request_too_large past it, before it is read): the
        largest image base64-encoded, the longest prompt JSON-escaped (6 bytes a character at worst), 1 MiB for
        the rest."""
        return self.max_image_bytes * 4 // 3 + 4 + self.max_prompt_chars * 6 + (1 << 20)

    def max_frame_bytes(self, vocab_size: int) -> int:
        """The largest WebSocket frame a valid device can send: an open frame carrying the largest image and
        prompt, or a vanilla round of ``max_draft_tokens`` full draft rows."""
        vanilla_round = self.max_draft_tokens * (vocab_size * 4 + 4 + 8) + 4096
        return max(self.max_body_bytes, vanilla_round)


@dataclass(frozen=True)
class BatchSettings:
    """How the scheduler forms batches (``covspec.runtime_edge.scheduler``)."""

    max_batch: int = 32  # forwards (rounds, completion tokens) in one batched target forward; 1: one at a time
    window_s: float = 0.0  # how long a batch may wait from its oldest forward for more to arrive
    schedule: Schedule = Schedule.FCFS  # which forwards go first when more wait than a batch holds

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.window_s < 0:
            raise ValueError("max_batch must be >= 1 and window_s >= 0")

    def to_dict(self) -> dict[str, float | int | str]:
        return {"max_batch": self.max_batch, "window_s": self.window_s, "schedule": self.schedule.value}


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
    batching: BatchSettings = BatchSettings()
