"""Every error a peer can see, with its HTTP status and WebSocket close code.

One table, used by the edge to answer and by the device to explain; codes are stable strings (documented in
README "Errors"), never renamed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    code: str
    http_status: int
    ws_close: int
    description: str


_CODES = [
    ErrorCode("malformed_message", 400, 4400, "the frame is not msgpack, or not a map with the fields of its type"),
    ErrorCode("unsupported_version", 400, 4426, "the message's protocol version is not the server's"),
    ErrorCode("stale_round", 409, 4409, "the round number is older than the last verified round"),
    ErrorCode("future_round", 409, 4410, "the round number skips ahead of the next expected round"),
    ErrorCode("token_out_of_vocab", 422, 4422, "a token id is negative or >= the target's vocabulary size"),
    ErrorCode("draft_too_long", 413, 4413, "more draft tokens in one round than the server allows"),
    ErrorCode("generation_limit", 422, 4423, "the round would pass max_new_tokens, or the generation has ended"),
    ErrorCode("bad_commit", 422, 4424, "the device's commit does not fit the last verdict (count or token)"),
    ErrorCode("invalid_request", 422, 4400, "a field of the request is missing or out of range"),
    ErrorCode("invalid_image", 415, 4400, "the uploaded bytes are not a decodable image"),
    ErrorCode("image_too_large", 413, 4400, "the image is larger than the server's byte or pixel limit"),
    ErrorCode("prompt_too_long", 413, 4400, "the rendered prompt is longer than the server allows"),
    ErrorCode("unauthorized", 401, 4401, "the API key is missing or wrong"),
    ErrorCode("unknown_session", 404, 4404, "no session with that id (never created, deleted, or expired)"),
    ErrorCode(
        "unknown_image", 404, 4405, "an open frame named an image by sha256 this edge does not hold for the device"
    ),
    ErrorCode("no_generation", 409, 4411, "a round or cancel arrived on a connection with no generation running"),
    # capacity is the server's state, not the client's request rate: 503 for both caps (RFC 9110 15.6.4, with
    # Retry-After), which load balancers read as "try another replica"; 429 (RFC 6585) would say this client asks
    # too often, a per-client rate limit the edge does not have
    ErrorCode("too_many_sessions", 503, 4503, "the server holds its maximum number of sessions"),
    ErrorCode("kv_memory_exhausted", 503, 4503, "admitting the session would pass the server's KV-cache memory cap"),
    ErrorCode("round_conflict", 409, 4412, "a resent round differs from the round of that number already verified"),
    ErrorCode("session_moved", 409, 4408, "another connection resumed this session; this one no longer serves it"),
    ErrorCode("request_too_large", 413, 4414, "the request body or frame is larger than any valid one can be"),
    ErrorCode("not_found", 404, 4400, "no such endpoint"),
    ErrorCode("method_not_allowed", 405, 4400, "the endpoint does not take this HTTP method"),
    ErrorCode("internal_error", 500, 1011, "the server failed; the session may be unusable"),
]

ERROR_CODES: dict[str, ErrorCode] = {e.code: e for e in _CODES}
WS_CLOSE_TO_CODE: dict[int, str] = {}
for _e in _CODES:
    WS_CLOSE_TO_CODE.setdefault(_e.ws_close, _e.code)


MAX_MESSAGE_CHARS = 300  # an error message is for people: bounded, whatever the client sent
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's reason, UTF-8 encoded


def shown(value: object, limit: int = 40) -> str:
    """A client's value as an error message may quote it: bounded before it is rendered (a 60 MB string is never
    copied into a reply), containers by type and size only."""
    if isinstance(value, str):
        return repr(value[:limit]) + ("…" if len(value) > limit else "")
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (list, tuple, dict, set)):
        return f"<{type(value).__name__} of {len(value)}>"
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        text = str(value) if value.bit_length() <= 128 else f"<a {value.bit_length()}-bit integer>"
        return text
    return f"<{type(value).__name__}>"


def bounded_message(message: str) -> str:
    """``message`` cut to :data:`MAX_MESSAGE_CHARS` characters."""
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


def close_reason(code: str, message: str) -> str:
    """``"code: message"`` cut on a character boundary so that it fits a WebSocket close frame."""
    reason = f"{code}: {message}"
    if len(reason.encode()) <= MAX_CLOSE_REASON_BYTES:
        return reason
    cut = reason.encode()[: MAX_CLOSE_REASON_BYTES - len("…".encode())].decode(errors="ignore")
    return cut + "…"


def error_code(code: str) -> ErrorCode:
    """The table row for ``code`` (``internal_error`` for anything unknown)."""
    return ERROR_CODES.get(code, ERROR_CODES["internal_error"])
