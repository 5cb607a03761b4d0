"""Wire messages as dataclasses: the session spec (JSON, HTTP) and the per-round frames (msgpack, WebSocket).

Arrays travel as raw little-endian bytes (int32 token ids, float32 probabilities, float64 draft scalars), not as
msgpack lists, so a round costs what its numbers cost.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from covspec.errors import ProtocolError
from covspec.protocol.errors import shown
from covspec.spec.sampling import SamplingParams


class VerifyMode(str, enum.Enum):
    """What crosses the link in a round (DESIGN.md §2)."""

    VANILLA = "vanilla"  # uplink ids + full draft rows; edge verifies
    DSSD = "dssd"  # uplink ids + q(token) scalars; on rejection one target row comes down, device resamples
    COMPACT = "compact"  # uplink ids (+ q scalars when sparse rows would cost more); the cheapest lossless exchange
    AUTO = "auto"  # resolved before a session opens to the cheapest lossless mode (covspec.protocol.modes)


@dataclass(frozen=True)
class SessionSpec:
    """What the device asks for when it opens a session (the image travels beside it as a file)."""

    prompt: str
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    max_new_tokens: int = 64
    verify_mode: VerifyMode = VerifyMode.COMPACT
    keep_set: tuple[int, ...] | None = None
    request_id: str | None = None  # the device's name for this request: a retried open finds the session it made
    resume_tokens: tuple[int, ...] = ()  # committed before an edge lost the session: prefilled, then continued after
    first_round: int = 1  # the number of the session's first round (rounds keep counting across a resume)
    # lossy, asked for explicitly: the target too reads only the visual tokens this reducer keeps at this budget (a
    # share <= 1 or a count > 1); the output is then that reduced target's, not the full-view target's
    target_reduction: tuple[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}],
            "sampling": {
                "temperature": self.temperature,
                "top_k": self.top_k,
                "top_p": self.top_p,
                "seed": self.seed,
            },
            "max_new_tokens": self.max_new_tokens,
            "verify_mode": self.verify_mode.value,
            "keep_set": list(self.keep_set) if self.keep_set is not None else None,
        }
        if self.request_id is not None:
            data["request_id"] = self.request_id
        if self.resume_tokens or self.first_round != 1:
            data["resume"] = {"tokens": list(self.resume_tokens), "first_round": self.first_round}
        if self.target_reduction is not None:
            data["target_reduction"] = {"reducer": self.target_reduction[0], "keep": self.target_reduction[1]}
        return data

    @classmethod
    def from_dict(cls, data: Any) -> SessionSpec:
        """Validate a decoded JSON body; every problem is a ``ProtocolError('invalid_request')`` naming the field."""
        if not isinstance(data, dict):
            raise _invalid("the session request must be a JSON object")
        prompt = prompt_from_messages(data.get("messages"))
        sampling = data.get("sampling") or {}
        if not isinstance(sampling, dict):
            raise _invalid("'sampling' must be an object")
        temperature = _number(sampling.get("temperature", 0.0), "sampling.temperature", lo=0.0, hi=100.0)
        top_k = _integer(sampling.get("top_k", 0), "sampling.top_k", lo=0, hi=1 << 24)
        top_p = _number(sampling.get("top_p", 1.0), "sampling.top_p", lo=0.0, hi=1.0)
        if top_p <= 0.0:
            raise _invalid("'sampling.top_p' must be > 0")
        seed = sampling.get("seed")
        if seed is not None:
            seed = _integer(seed, "sampling.seed", lo=0, hi=(1 << 63) - 1)
        max_new = _integer(data.get("max_new_tokens", 64), "max_new_tokens", lo=1, hi=1 << 20)
        try:
            mode = VerifyMode(data.get("verify_mode", VerifyMode.COMPACT.value))
        except ValueError:
            raise _invalid(f"'verify_mode' must be one of {[m.value for m in VerifyMode]}") from None
        try:
            SamplingParams(temperature, top_k, top_p, seed).validate()
        except ValueError as exc:
            raise _invalid(f"'sampling': {exc}") from None
        keep = data.get("keep_set")
        if keep is not None:
            if not isinstance(keep, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in keep):
                raise _invalid("'keep_set' must be a list of integer visual-token indices")
            if len(set(keep)) != len(keep) or any(i < 0 for i in keep):
                raise _invalid("'keep_set' must hold distinct non-negative indices")
            keep = tuple(sorted(keep))
        request_id = data.get("request_id")
        if request_id is not None and (not isinstance(request_id, str) or not 0 < len(request_id) <= 64):
            raise _invalid("'request_id' must be a string of 1 to 64 characters")
        tokens, first_round = _resume_of(data.get("resume"), max_new)
        reduction = _target_reduction_of(data.get("target_reduction"))
        return cls(
            prompt, temperature, top_k, top_p, seed, max_new, mode, keep, request_id, tokens, first_round, reduction
        )


def _target_reduction_of(value: Any) -> tuple[str, float] | None:
    """(reducer, keep) of a lossy target reduction; which reducers exist is the edge's to say."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("reducer"), str) or not 0 < len(value["reducer"]) <= 32:
        raise _invalid("'target_reduction' must be an object with 'reducer' (a name) and 'keep' (a number)")
    keep = _number(value.get("keep"), "target_reduction.keep", lo=0.0, hi=1 << 20)
    if keep <= 0 or (keep > 1 and keep != int(keep)):
        raise _invalid("'target_reduction.keep' must be a share in (0, 1] or a whole count above 1")
    return value["reducer"], keep


def _resume_of(resume: Any, max_new_tokens: int) -> tuple[tuple[int, ...], int]:
    """(tokens, first round) of a generation continued on a fresh session; ((), 1) for a new one."""
    if resume is None:
        return (), 1
    if not isinstance(resume, dict):
        raise _invalid("'resume' must be an object with 'tokens' and 'first_round'")
    tokens = resume.get("tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise _invalid("'resume.tokens' must be a list of token ids")
    if len(tokens) >= max_new_tokens or any(t < 0 for t in tokens):
        raise _invalid("'resume.tokens' must hold fewer than max_new_tokens non-negative ids")
    first_round = _integer(resume.get("first_round", 1), "resume.first_round", lo=1, hi=1 << 31)
    return tuple(tokens), first_round


def prompt_from_messages(messages: Any) -> str:
    """The one user turn with at most one image that DESIGN.md §7 renders; its text parts joined."""
    if not isinstance(messages, list) or len(messages) != 1 or not isinstance(messages[0], dict):
        raise _invalid("'messages' must hold exactly one user message")
    message = messages[0]
    if message.get("role") != "user":
        raise _invalid("the message's role must be 'user'")
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid("a message's content must be a string or a list of parts")
    texts: list[str] = []
    images = 0
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image", "image_url"):
            images += 1
        else:
            raise _invalid(f"unsupported content part of type {shown(kind)}")
    if images > 1:
        raise _invalid("at most one image per session")
    return "\n".join(texts)


@dataclass(frozen=True)
class RoundRequest:
    """Uplink: draft block of round ``round`` (1-based), plus what the verify mode needs.

    ``commit`` is the previous round's outcome when the device decided it (dssd rejection, compact sampling):
    (accepted, token). The edge applies it before verifying this block. ``burst`` > 0 asks the edge to decode that
    many tokens with the target alone instead (no draft: ``draft_tokens`` is empty), when drafting does not pay.
    """

    round: int
    draft_tokens: np.ndarray  # [K] int32
    commit: tuple[int, int] | None = None
    draft_probs: np.ndarray | None = None  # [K, V] float32, vanilla
    draft_token_probs: np.ndarray | None = None  # [K] float64, dssd under sampling (and compact's dssd form)
    burst: int = 0


@dataclass(frozen=True)
class Verdict:
    """Downlink: the edge's answer to round ``round``.

    ``accepted``/``token`` are set when the edge decided; ``target_row`` ([V] float32) comes with a dssd rejection
    under sampling (the device samples the correction); ``sparse_rows`` (K+1 rows) come in compact sampling mode, where
    the device verifies and reports its outcome as the next round's ``commit``. ``burst_tokens`` answer a burst
    round: the target's own tokens, all committed. ``verify_s``: the edge's compute seconds for the round (target
    forward and verification, or the burst's decoding), which the device's cost model reads.
    """

    round: int
    accepted: int | None = None
    token: int | None = None
    target_row: np.ndarray | None = None
    sparse_rows: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (ids int32, probs float32)
    burst_tokens: np.ndarray | None = None  # [B] int32
    verify_s: float | None = None


@dataclass(frozen=True)
class Hello:
    """Downlink, first frame of a device connection: the edge's ``/v1/info`` (fingerprint, features, limits), so
    the compatibility check costs no request of its own."""

    info: dict[str, Any]


@dataclass(frozen=True)
class OpenRequest:
    """Uplink: start a generation on the connection. It carries the image, or only its sha256 when this edge already
    holds that image for this device (then no image bytes move)."""

    spec: SessionSpec
    image: bytes | None = None
    image_sha256: bytes | None = None  # 32 bytes


@dataclass(frozen=True)
class Opened:
    """Downlink: the generation's session exists and the target is prefilled; rounds may follow."""

    session_id: str
    prompt_tokens: int
    image_tokens: int
    verify_mode: VerifyMode
    prefill_s: float = 0.0  # the edge's prefill time (the analytical bound's setup)


@dataclass(frozen=True)
class Resume:
    """Uplink, first frame after a reconnect: attach the connection to a session it was running."""

    session_id: str


@dataclass(frozen=True)
class Cancel:
    """Uplink: end the running generation now (the edge drops its session; nothing comes back)."""


@dataclass(frozen=True)
class ErrorFrame:
    """Downlink: the round failed; the socket closes after this frame with the code's close code."""

    round: int
    code: str
    message: str
    retry_after_s: float | None = None  # a refusal for capacity: when to open again


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(message, code="invalid_request")


def _number(value: Any, name: str, *, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (lo <= float(value) <= hi):
        raise _invalid(f"'{name}' must be a number in [{lo}, {hi}]")
    return float(value)


def _integer(value: Any, name: str, *, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (lo <= value <= hi):
        raise _invalid(f"'{name}' must be an integer in [{lo}, {hi}]")
    return value


# One user seed drives both sides; each side draws from its own stream so the device's draft samples and the
# edge's acceptance uniforms are independent (equal streams would correlate them and bias the output).
DEVICE_RNG_STREAM = 0xDE71CE
EDGE_RNG_STREAM = 0xED6E


def session_rng(seed: int | None, stream: int) -> np.random.Generator:
    """The random generator of one side of a session (fresh entropy when no seed is given)."""
    return np.random.default_rng(None if seed is None else [stream, seed])


def round_rng(seed: int, stream: int, round_no: int) -> np.random.Generator:
    """A seeded session's generator for round ``round_no`` of one side: keyed by the round, not by how many draws
    came before, so a generation continued on a fresh session (an edge restart) draws what it would have drawn."""
    return np.random.default_rng([stream, seed, round_no])
