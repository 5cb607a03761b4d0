"""Round frames: encode/decode round trips and every validation error with its own code."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from covspec.errors import ProtocolError
from covspec.protocol import (
    PROTOCOL_VERSION,
    ErrorFrame,
    RoundRequest,
    Verdict,
    decode_downlink,
    decode_round,
    encode_error,
    encode_round,
    encode_verdict,
)

V = 50


def _decode(frame: bytes, max_draft: int = 8) -> RoundRequest:
    return decode_round(frame, vocab_size=V, max_draft_tokens=max_draft)


def test_round_trip_with_all_fields() -> None:
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(V), size=3).astype(np.float32)
    req = RoundRequest(4, np.array([1, 7, 49], dtype=np.int32), (2, 5), q, np.array([0.5, 0.25, 1.0]))
    got = _decode(encode_round(req))
    assert got.round == 4 and got.commit == (2, 5)
    assert got.draft_tokens.tolist() == [1, 7, 49]
    np.testing.assert_array_equal(got.draft_probs, q)
    np.testing.assert_array_equal(got.draft_token_probs, [0.5, 0.25, 1.0])


def test_ids_only_round_is_small() -> None:
    frame = encode_round(RoundRequest(12, np.array([3, 4, 5, 6], dtype=np.int32)))
    assert len(frame) < 40  # 16 bytes of ids plus a handful of keys
    assert _decode(frame).draft_tokens.tolist() == [3, 4, 5, 6]


def _raw(**fields) -> bytes:
    frame = {"v": PROTOCOL_VERSION, "t": "round", "n": 1, "d": np.array([1, 2], "<i4").tobytes()}
    frame.update(fields)
    return msgpack.packb({k: v for k, v in frame.items() if v is not None}, use_bin_type=True)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\xc1\xff garbage", "malformed_message"),
        (msgpack.packb([1, 2, 3]), "malformed_message"),
        (_raw(v=PROTOCOL_VERSION + 1), "unsupported_version"),
        (_raw(v=None), "unsupported_version"),
        (_raw(t="verdict"), "malformed_message"),
        (_raw(n=0), "malformed_message"),
        (_raw(n="1"), "malformed_message"),
        (_raw(d=b"\x01\x02\x03"), "malformed_message"),
        (_raw(d=np.array([1, V], "<i4").tobytes()), "token_out_of_vocab"),
        (_raw(d=np.array([-1], "<i4").tobytes()), "token_out_of_vocab"),
        (_raw(d=np.arange(9, dtype="<i4").tobytes()), "draft_too_long"),
        (_raw(c=[1]), "malformed_message"),
        (_raw(c=[0, V + 3]), "token_out_of_vocab"),
        (_raw(q=np.ones(V, "<f4").tobytes()), "malformed_message"),  # one row for two tokens
        (_raw(x=np.array([0.5, 0.0]).tobytes()), "malformed_message"),
    ],
)
def test_each_violation_has_its_code(frame: bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        _decode(frame)
    assert info.value.code == code


def test_draft_row_with_zero_probability_for_its_token_is_refused() -> None:
    q = np.full((2, V), 1.0 / (V - 1), dtype=np.float32)
    q[0, 1] = 0.0
    with pytest.raises(ProtocolError, match="zero draft probability"):
        _decode(encode_round(RoundRequest(1, np.array([1, 2], dtype=np.int32), draft_probs=q)))


def test_verdict_round_trip_with_sparse_rows_and_target_row() -> None:
    rows = [
        (np.array([3, 1], np.int32), np.array([0.75, 0.25], np.float32)),
        (np.array([9], np.int32), np.array([1.0], np.float32)),
    ]
    row = np.full(V, 1.0 / V, dtype=np.float32)
    got = decode_downlink(encode_verdict(Verdict(3, 1, None, row, rows)), vocab_size=V)
    assert isinstance(got, Verdict) and got.round == 3 and got.accepted == 1 and got.token is None
    np.testing.assert_array_equal(got.target_row, row)
    assert [r[0].tolist() for r in got.sparse_rows] == [[3, 1], [9]]
    assert [r[1].tolist() for r in got.sparse_rows] == [[0.75, 0.25], [1.0]]


def test_greedy_verdict_is_a_few_bytes_and_checks_the_vocabulary() -> None:
    frame = encode_verdict(Verdict(7, 3, 42))
    assert len(frame) < 24
    assert decode_downlink(frame, vocab_size=V) == Verdict(7, 3, 42)
    with pytest.raises(ProtocolError) as info:
        decode_downlink(frame, vocab_size=40)
    assert info.value.code == "token_out_of_vocab"


def test_error_frame_round_trip() -> None:
    got = decode_downlink(encode_error(ErrorFrame(2, "stale_round", "round 2 is old")), vocab_size=V)
    assert got == ErrorFrame(2, "stale_round", "round 2 is old")
    full = ErrorFrame(0, "too_many_sessions", "full", retry_after_s=2.0)
    assert decode_downlink(encode_error(full), vocab_size=V) == full
    for bad in (-1, "2", 1e9):
        frame = msgpack.packb({"v": PROTOCOL_VERSION, "t": "error", "n": 0, "code": "x", "msg": "y", "ra": bad})
        with pytest.raises(ProtocolError, match="'ra'"):
            decode_downlink(frame, vocab_size=V)


def test_burst_round_and_its_verdict_round_trip() -> None:
    req = _decode(encode_round(RoundRequest(3, np.zeros(0, dtype=np.int32), (1, 4), burst=6)))
    assert req.burst == 6 and req.draft_tokens.size == 0 and req.commit == (1, 4)
    verdict = Verdict(3, burst_tokens=np.array([4, 9, 2], dtype=np.int32), verify_s=0.0125)
    got = decode_downlink(encode_verdict(verdict), vocab_size=V)
    assert got.burst_tokens.tolist() == [4, 9, 2] and got.verify_s == 0.0125


@pytest.mark.parametrize(
    "frame, code",
    [
        ({"d": np.array([1], dtype="<i4").tobytes(), "b": 2}, "malformed_message"),  # a burst with a draft
        ({"d": b"", "b": 0}, "malformed_message"),
        ({"d": b"", "b": 10}, "draft_too_long"),  # over max_draft_tokens + 1
    ],
)
def test_bad_burst_rounds_are_refused(frame, code) -> None:
    data = msgpack.packb({"v": PROTOCOL_VERSION, "t": "round", "n": 1, **frame}, use_bin_type=True)
    with pytest.raises(ProtocolError) as info:
        _decode(data)
    assert info.value.code == code


def test_bad_burst_verdicts_are_refused() -> None:
    for extra in ({"bt": b""}, {"bt": np.array([V], dtype="<i4").tobytes()}, {"vt": -1.0}, {"vt": "fast"}):
        data = msgpack.packb({"v": PROTOCOL_VERSION, "t": "verdict", "n": 1, **extra}, use_bin_type=True)
        with pytest.raises(ProtocolError):
            decode_downlink(data, vocab_size=V)
