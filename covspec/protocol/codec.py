"""msgpack encode/decode of round frames, with every check a peer needs before trusting a frame.

Frame types: ``hello`` (edge, first frame of a device connection), ``open`` / ``opened`` (a generation starts),
``round`` / ``verdict``, ``resume`` (after a reconnect), ``cancel``, ``error``.
Frame keys are short on purpose (a round is tens of bytes): v version, t type, n round, d draft ids, c commit,
q draft rows, x draft scalars, b burst length, a accepted, k token, p target row, si/sp/so sparse ids/probs/row
offsets, bt burst tokens, vt the edge's verify seconds.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from covspec.errors import ProtocolError
from covspec.protocol.errors import shown
from covspec.protocol.messages import (
    Cancel,
    ErrorFrame,
    Hello,
    Opened,
    OpenRequest,
    Resume,
    RoundRequest,
    SessionSpec,
    Verdict,
    VerifyMode,
)
from covspec.protocol.version import PROTOCOL_VERSION

_I32 = np.dtype("<i4")
_F32 = np.dtype("<f4")
_F64 = np.dtype("<f8")
# Structure caps applied while unpacking, before any object is built: a frame is a small map (the open frame's
# request a few small maps and lists; its keep_set the longest list), so a frame of millions of tiny entries fails at
# its first header instead of costing seconds of CPU and gigabytes of objects.
MAX_MAP_ENTRIES = 32
MAX_ARRAY_ITEMS = 1 << 16
MAX_STRING_BYTES = 1 << 20


def encode_round(request: RoundRequest) -> bytes:
    frame: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "t": "round",
        "n": int(request.round),
        "d": np.asarray(request.draft_tokens, dtype=_I32).tobytes(),
    }
    if request.commit is not None:
        frame["c"] = [int(request.commit[0]), int(request.commit[1])]
    if request.draft_probs is not None:
        frame["q"] = np.asarray(request.draft_probs, dtype=_F32).tobytes()
    if request.draft_token_probs is not None:
        frame["x"] = np.asarray(request.draft_token_probs, dtype=_F64).tobytes()
    if request.burst:
        frame["b"] = int(request.burst)
    return msgpack.packb(frame, use_bin_type=True)


def encode_hello(hello: Hello) -> bytes:
    return msgpack.packb({"v": PROTOCOL_VERSION, "t": "hello", "n": 0, "info": hello.info}, use_bin_type=True)


def encode_open(request: OpenRequest) -> bytes:
    frame: dict[str, Any] = {"v": PROTOCOL_VERSION, "t": "open", "n": 0, "req": request.spec.to_dict()}
    if request.image is not None:
        frame["img"] = bytes(request.image)
    if request.image_sha256 is not None:
        frame["ih"] = bytes(request.image_sha256)
    return msgpack.packb(frame, use_bin_type=True)


def encode_opened(opened: Opened) -> bytes:
    frame = {"v": PROTOCOL_VERSION, "t": "opened", "n": 0, "s": opened.session_id, "pt": opened.prompt_tokens,
             "it": opened.image_tokens, "m": opened.verify_mode.value, "pf": float(opened.prefill_s)}  # fmt: skip
    return msgpack.packb(frame, use_bin_type=True)


def encode_resume(resume: Resume) -> bytes:
    return msgpack.packb({"v": PROTOCOL_VERSION, "t": "resume", "n": 0, "s": resume.session_id}, use_bin_type=True)


def encode_cancel() -> bytes:
    return msgpack.packb({"v": PROTOCOL_VERSION, "t": "cancel", "n": 0}, use_bin_type=True)


def decode_uplink(
    data: bytes, *, vocab_size: int, max_draft_tokens: int, max_burst_tokens: int
) -> RoundRequest | OpenRequest | Resume | Cancel:
    """Decode any frame a device sends on its connection; ``ProtocolError`` with the first violation's code."""
    frame = _unpack(data, expected_type=None)
    kind = frame.get("t")
    if kind == "round":
        return _round_from(frame, vocab_size, max_draft_tokens, max_burst_tokens)
    if kind == "open":
        return _open_from(frame)
    if kind == "resume":
        session_id = frame.get("s")
        if not isinstance(session_id, str) or not 0 < len(session_id) <= 128:
            raise ProtocolError("'resume' carries the session id 's'", code="malformed_message")
        return Resume(session_id)
    if kind == "cancel":
        return Cancel()
    raise ProtocolError(f"unexpected frame type {shown(kind)}", code="malformed_message")


class InvalidOpenRequest(ProtocolError):
    """A well-formed open frame whose request is invalid: the generation is refused, the connection is not."""


def _open_from(frame: dict[str, Any]) -> OpenRequest:
    try:
        spec = SessionSpec.from_dict(frame.get("req"))
    except ProtocolError as exc:
        raise InvalidOpenRequest(exc.message, code=exc.code) from None
    image, digest = frame.get("img"), frame.get("ih")
    if image is not None and not isinstance(image, bytes):
        raise ProtocolError("'img' must be the image file's bytes", code="malformed_message")
    if digest is not None and (not isinstance(digest, bytes) or len(digest) != 32):
        raise ProtocolError("'ih' must be the image's 32-byte sha256", code="malformed_message")
    if image is not None and digest is not None:
        raise ProtocolError("an open frame carries the image or its sha256, not both", code="malformed_message")
    return OpenRequest(spec, image, digest)


def decode_round(
    data: bytes, *, vocab_size: int, max_draft_tokens: int, max_burst_tokens: int | None = None
) -> RoundRequest:
    """Decode a round frame; raises ``ProtocolError`` with the code of the first violation. ``max_burst_tokens``
    defaults to ``max_draft_tokens + 1`` (a round's most committed tokens)."""
    burst_cap = max_draft_tokens + 1 if max_burst_tokens is None else max_burst_tokens
    return _round_from(_unpack(data, expected_type="round"), vocab_size, max_draft_tokens, burst_cap)


def _round_from(frame: dict[str, Any], vocab_size: int, max_draft_tokens: int, max_burst_tokens: int) -> RoundRequest:
    n = _int_field(frame, "n", lo=1)
    draft = _array_field(frame, "d", _I32)
    if draft.size > max_draft_tokens:
        raise ProtocolError(
            f"{draft.size} draft tokens in one round; the server allows {max_draft_tokens}", code="draft_too_long"
        )
    _check_ids(draft, vocab_size)
    commit = None
    if "c" in frame:
        c = frame["c"]
        if not (isinstance(c, list) and len(c) == 2 and all(_is_int(x) for x in c)):
            raise ProtocolError("'c' must be [accepted, token]", code="malformed_message")
        if c[0] < 0:
            raise ProtocolError("'c' accepted count must be >= 0", code="malformed_message")
        _check_ids(np.asarray([c[1]]), vocab_size)
        commit = (int(c[0]), int(c[1]))
    q = None
    if "q" in frame:
        q = _array_field(frame, "q", _F32)
        if q.size != draft.size * vocab_size:
            raise ProtocolError(
                f"'q' holds {q.size} values; {draft.size} rows of {vocab_size} expected", code="malformed_message"
            )
        q = q.reshape(draft.size, vocab_size)
        if not np.all(np.isfinite(q)) or np.any(q < 0):
            raise ProtocolError("'q' rows must be finite and non-negative", code="malformed_message")
        if draft.size and np.any(q[np.arange(draft.size), draft] <= 0):
            raise ProtocolError("a drafted token has zero draft probability in 'q'", code="malformed_message")
    x = None
    if "x" in frame:
        x = _array_field(frame, "x", _F64)
        if x.size != draft.size or not np.all((x > 0) & (x <= 1.0 + 1e-9)):
            raise ProtocolError("'x' must hold one probability in (0, 1] per draft token", code="malformed_message")
    burst = _int_field(frame, "b", lo=1) if "b" in frame else 0
    if burst and (draft.size or q is not None or x is not None):
        raise ProtocolError("a burst round carries no draft", code="malformed_message")
    if burst > max_burst_tokens:
        raise ProtocolError(
            f"a burst of {burst} tokens; the server allows {max_burst_tokens} per round", code="draft_too_long"
        )
    return RoundRequest(n, draft, commit, q, x, burst)


def encode_verdict(verdict: Verdict) -> bytes:
    frame: dict[str, Any] = {"v": PROTOCOL_VERSION, "t": "verdict", "n": int(verdict.round)}
    if verdict.accepted is not None:
        frame["a"] = int(verdict.accepted)
    if verdict.token is not None:
        frame["k"] = int(verdict.token)
    if verdict.target_row is not None:
        frame["p"] = np.asarray(verdict.target_row, dtype=_F32).tobytes()
    if verdict.sparse_rows:
        ids = [np.asarray(i, dtype=_I32) for i, _ in verdict.sparse_rows]
        probs = [np.asarray(p, dtype=_F32) for _, p in verdict.sparse_rows]
        offsets = np.cumsum([0] + [len(i) for i in ids]).astype(_I32)
        frame["si"] = np.concatenate(ids).tobytes()
        frame["sp"] = np.concatenate(probs).tobytes()
        frame["so"] = offsets.tobytes()
    if verdict.burst_tokens is not None:
        frame["bt"] = np.asarray(verdict.burst_tokens, dtype=_I32).tobytes()
    if verdict.verify_s is not None:
        frame["vt"] = float(verdict.verify_s)
    return msgpack.packb(frame, use_bin_type=True)


def encode_error(error: ErrorFrame) -> bytes:
    frame = {"v": PROTOCOL_VERSION, "t": "error", "n": int(error.round), "code": error.code, "msg": error.message}
    if error.retry_after_s is not None:
        frame["ra"] = float(error.retry_after_s)
    return msgpack.packb(frame, use_bin_type=True)


def decode_downlink(data: bytes, *, vocab_size: int) -> Verdict | ErrorFrame | Opened | Hello:
    """Decode what the edge sent: a verdict (validated against ``vocab_size``), an error, opened or hello frame."""
    frame = _unpack(data, expected_type=None)
    kind = frame.get("t")
    n = _int_field(frame, "n", lo=0)
    if kind == "error":
        code, msg = frame.get("code"), frame.get("msg")
        if not isinstance(code, str) or not isinstance(msg, str):
            raise ProtocolError("error frame without code/msg", code="malformed_message")
        retry_after = frame.get("ra")
        if retry_after is not None and (
            isinstance(retry_after, bool) or not isinstance(retry_after, (int, float)) or not 0 <= retry_after <= 3600
        ):
            raise ProtocolError("field 'ra' must be seconds in [0, 3600]", code="malformed_message")
        return ErrorFrame(n, code, msg, None if retry_after is None else float(retry_after))
    if kind == "hello":
        if not isinstance(frame.get("info"), dict):
            raise ProtocolError("hello frame without 'info'", code="malformed_message")
        return Hello(frame["info"])
    if kind == "opened":
        return _opened_from(frame)
    if kind != "verdict":
        raise ProtocolError(f"unexpected frame type {shown(kind)}", code="malformed_message")
    accepted = _int_field(frame, "a", lo=0) if "a" in frame else None
    token = _int_field(frame, "k", lo=0) if "k" in frame else None
    if token is not None:
        _check_ids(np.asarray([token]), vocab_size)
    row = None
    if "p" in frame:
        row = _array_field(frame, "p", _F32)
        if row.size != vocab_size:
            raise ProtocolError(f"target row has {row.size} values, vocab is {vocab_size}", code="malformed_message")
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    if "so" in frame:
        ids, probs, offsets = (_array_field(frame, k, t) for k, t in (("si", _I32), ("sp", _F32), ("so", _I32)))
        if ids.size != probs.size or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != ids.size:
            raise ProtocolError("sparse rows do not line up", code="malformed_message")
        _check_ids(ids, vocab_size)
        rows = [(ids[a:b], probs[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    burst = None
    if "bt" in frame:
        burst = _array_field(frame, "bt", _I32)
        if burst.size == 0:
            raise ProtocolError("a burst verdict carries no token", code="malformed_message")
        _check_ids(burst, vocab_size)
    verify_s = frame.get("vt")
    if verify_s is not None and (isinstance(verify_s, bool) or not isinstance(verify_s, (int, float)) or verify_s < 0):
        raise ProtocolError("'vt' must be a non-negative number of seconds", code="malformed_message")
    return Verdict(n, accepted, token, row, rows, burst, None if verify_s is None else float(verify_s))


def _opened_from(frame: dict[str, Any]) -> Opened:
    session_id, mode = frame.get("s"), frame.get("m")
    if not isinstance(session_id, str) or mode not in {m.value for m in VerifyMode}:
        raise ProtocolError("opened frame without session id or verify mode", code="malformed_message")
    prefill_s = frame.get("pf", 0.0)
    if isinstance(prefill_s, bool) or not isinstance(prefill_s, (int, float)) or prefill_s < 0:
        raise ProtocolError("'pf' must be a non-negative number of seconds", code="malformed_message")
    pt, it = _int_field(frame, "pt", lo=0), _int_field(frame, "it", lo=0)
    return Opened(session_id, pt, it, VerifyMode(mode), float(prefill_s))


def _unpack(data: bytes, *, expected_type: str | None) -> dict[str, Any]:
    try:
        frame = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_map_len=MAX_MAP_ENTRIES,
            max_array_len=MAX_ARRAY_ITEMS,
            max_str_len=MAX_STRING_BYTES,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for garbage, ValueError past a structure cap
        raise ProtocolError(
            f"frame is not valid msgpack within the structure limits ({type(exc).__name__}: {str(exc)[:80]})",
            code="malformed_message",
        ) from None
    if not isinstance(frame, dict):
        raise ProtocolError("frame must be a msgpack map", code="malformed_message")
    version = frame.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {shown(version)} is not supported; this peer speaks {PROTOCOL_VERSION}",
            code="unsupported_version",
        )
    if expected_type is not None and frame.get("t") != expected_type:
        got = shown(frame.get("t"))
        raise ProtocolError(f"expected a {expected_type!r} frame, got {got}", code="malformed_message")
    return frame


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_field(frame: dict[str, Any], key: str, *, lo: int) -> int:
    value = frame.get(key)
    if not _is_int(value) or value < lo:
        raise ProtocolError(f"field '{key}' must be an integer >= {lo}", code="malformed_message")
    return int(value)


def _array_field(frame: dict[str, Any], key: str, dtype: np.dtype) -> np.ndarray:
    raw = frame.get(key)
    if not isinstance(raw, bytes) or len(raw) % dtype.itemsize:
        raise ProtocolError(f"field '{key}' must be raw {dtype} bytes", code="malformed_message")
    return np.frombuffer(raw, dtype=dtype)


def _check_ids(ids: np.ndarray, vocab_size: int) -> None:
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        bad = int(ids.max()) if int(ids.max()) >= vocab_size else int(ids.min())
        raise ProtocolError(f"token id {bad} is outside the vocabulary [0, {vocab_size})", code="token_out_of_vocab")
