"""Session specs: the JSON the device sends and the edge validates."""

from __future__ import annotations

import pytest

from covspec.errors import ProtocolError
from covspec.protocol import ERROR_CODES, SessionSpec, VerifyMode, session_rng


def test_session_spec_round_trip() -> None:
    spec = SessionSpec("What colour?", 0.7, 5, 0.9, 11, 20, VerifyMode.DSSD, (0, 3, 4))
    assert SessionSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(messages=[]),
        lambda d: d.update(messages=[{"role": "assistant", "content": "x"}]),
        lambda d: d["messages"][0]["content"].append({"type": "image"}),
        lambda d: d["sampling"].update(temperature=-1),
        lambda d: d["sampling"].update(top_p=0),
        lambda d: d["sampling"].update(top_k=1.5),
        lambda d: d.update(max_new_tokens=0),
        lambda d: d.update(verify_mode="fast"),
        lambda d: d.update(keep_set=[1, 1]),
        lambda d: d.update(keep_set=[-2]),
    ],
)
def test_invalid_fields_are_named(mutate) -> None:
    data = SessionSpec("hi").to_dict()
    mutate(data)
    with pytest.raises(ProtocolError) as info:
        SessionSpec.from_dict(data)
    assert info.value.code == "invalid_request"


def test_error_table_codes_are_unique_and_mapped() -> None:
    assert all(row.code == code for code, row in ERROR_CODES.items())
    assert all(400 <= row.http_status < 600 for row in ERROR_CODES.values())


def test_device_and_edge_streams_differ_for_one_seed() -> None:
    a = session_rng(5, 1).random(4)
    b = session_rng(5, 2).random(4)
    assert not (a == b).any()
    assert (session_rng(5, 1).random(4) == a).all()


def test_a_lossy_target_reduction_round_trips_and_bad_ones_are_named() -> None:
    spec = SessionSpec("hi", target_reduction=("covspec", 0.25))
    assert SessionSpec.from_dict(spec.to_dict()) == spec
    assert "target_reduction" not in SessionSpec("hi").to_dict()  # absent unless asked for
    assert SessionSpec.from_dict(
        {**spec.to_dict(), "target_reduction": {"reducer": "pool", "keep": 64}}
    ).target_reduction == ("pool", 64.0)
    for bad in (
        {"reducer": "pool"},
        {"reducer": "", "keep": 0.5},
        {"reducer": "pool", "keep": 0},
        {"reducer": "pool", "keep": 2.5},
        "pool",
    ):
        with pytest.raises(ProtocolError, match="target_reduction") as caught:
            SessionSpec.from_dict({**spec.to_dict(), "target_reduction": bad})
        assert caught.value.code == "invalid_request"
