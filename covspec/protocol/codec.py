"""msgpack encode/decode of round frames, with every check a peer needs before trusting a frame.

Frame keys are short on purpose (a round is tens of bytes): v version, t type, n round, d draft ids, c commit,
q draft rows, x draft scalars, a accepted, k token, p target row, si/sp/so sparse ids/probs/row offsets.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from covspec.errors import ProtocolError
from covspec.protocol.messages import ErrorFrame, RoundRequest, Verdict
from covspec.protocol.version import PROTOCOL_VERSION

_I32 = np.dtype("<i4")
_F32 = np.dtype("<f4")
_F64 = np.dtype("<f8")


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
    return msgpack.packb(frame, use_bin_type=True)


def decode_round(data: bytes, *, vocab_size: int, max_draft_tokens: int) -> RoundRequest:
    """Decode an uplink frame; raises ``ProtocolError`` with the code of the first violation."""
    frame = _unpack(data, expected_type="round")
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
    return RoundRequest(n, draft, commit, q, x)


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
    return msgpack.packb(frame, use_bin_type=True)


def encode_error(error: ErrorFrame) -> bytes:
    frame = {"v": PROTOCOL_VERSION, "t": "error", "n": int(error.round), "code": error.code, "msg": error.message}
    return msgpack.packb(frame, use_bin_type=True)


def decode_downlink(data: bytes, *, vocab_size: int) -> Verdict | ErrorFrame:
    """Decode what the edge sent: a verdict (validated against ``vocab_size``) or an error frame."""
    frame = _unpack(data, expected_type=None)
    kind = frame.get("t")
    n = _int_field(frame, "n", lo=0)
    if kind == "error":
        code, msg = frame.get("code"), frame.get("msg")
        if not isinstance(code, str) or not isinstance(msg, str):
            raise ProtocolError("error frame without code/msg", code="malformed_message")
        return ErrorFrame(n, code, msg)
    if kind != "verdict":
        raise ProtocolError(f"unexpected frame type {kind!r}", code="malformed_message")
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
    return Verdict(n, accepted, token, row, rows)


def _unpack(data: bytes, *, expected_type: str | None) -> dict[str, Any]:
    try:
        frame = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=1 << 30)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"frame is not valid msgpack ({type(exc).__name__})", code="malformed_message") from None
    if not isinstance(frame, dict):
        raise ProtocolError("frame must be a msgpack map", code="malformed_message")
    version = frame.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {version!r} is not supported; this peer speaks {PROTOCOL_VERSION}",
            code="unsupported_version",
        )
    if expected_type is not None and frame.get("t") != expected_type:
        raise ProtocolError(f"expected a {expected_type!r} frame, got {frame.get('t')!r}", code="malformed_message")
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
