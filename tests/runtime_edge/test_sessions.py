"""The session store's TTL, count cap and KV-memory cap, on a controlled clock."""

from __future__ import annotations

import pytest

from covspec.errors import LimitError, SessionNotFoundError
from covspec.runtime_edge.sessions import SessionStore
from covspec.runtime_edge.settings import EdgeLimits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _admit(store: SessionStore, kv: int = 10):
    store.begin_admission()
    try:
        return store.add(object(), kv)  # the store never looks inside the state
    finally:
        store.end_admission()


def test_idle_sessions_expire_and_used_ones_stay() -> None:
    clock = Clock()
    store = SessionStore(EdgeLimits(session_ttl_s=10), clock)
    a, b = _admit(store), _admit(store)
    clock.now += 6
    store.get(a.id)
    clock.now += 6
    with pytest.raises(SessionNotFoundError):
        store.get(b.id)
    assert store.get(a.id) is a


def test_count_and_kv_caps() -> None:
    store = SessionStore(EdgeLimits(max_sessions=2, max_kv_bytes=100), Clock())
    _admit(store, 60)
    with pytest.raises(LimitError) as info:
        _admit(store, 50)
    assert info.value.code == "kv_memory_exhausted"
    _admit(store, 40)
    with pytest.raises(LimitError) as info:
        _admit(store, 1)
    assert info.value.code == "too_many_sessions"


def test_remove_unknown_session() -> None:
    with pytest.raises(SessionNotFoundError):
        SessionStore(EdgeLimits()).remove("nope")
