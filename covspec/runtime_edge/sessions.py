"""Session store: ids, idle TTL, a maximum count, and a KV-cache memory cap that admission reserves against."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from covspec.errors import LimitError, SessionNotFoundError
from covspec.protocol import RoundRequest
from covspec.protocol.errors import shown
from covspec.runtime_edge.settings import EdgeLimits
from covspec.runtime_edge.verifier import TargetState
from covspec.spec.cost_model import expected_committed
from covspec.spec.estimators import PositionAcceptance

ACCEPTANCE_POSITIONS = 32  # draft positions whose acceptance a session tracks (later ones share the last one's)


def _session_acceptance() -> PositionAcceptance:
    # a weak prior at one half, forgetting over tens of rounds: what the priority schedule expects of a round
    return PositionAcceptance(ACCEPTANCE_POSITIONS, prior_rate=0.5, prior_weight=2.0, decay=0.95)


@dataclass
class EdgeSession:
    id: str
    state: TargetState
    kv_reserved: int
    created: float
    last_used: float
    prefill_s: float = 0.0  # the target's prefill, reported to the device in ``opened``
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    request_key: str | None = None  # (caller, request id): a retried request finds this session again
    owner: object | None = None  # the connection serving its rounds; another one resuming it takes it over
    acceptance: PositionAcceptance = field(default_factory=_session_acceptance)

    def observe_acceptance(self, drafted: int, accepted: int) -> None:
        if drafted > 0:
            self.acceptance.record(drafted, accepted)

    def expected_tokens(self, request: RoundRequest) -> float:
        """What the round's next forward is expected to commit, from the session's past acceptance: a burst's
        forward one token, a draft round 1 + the expected accepted drafts (the schedule's ``value``)."""
        drafted = int(np.asarray(request.draft_tokens).size)
        if request.burst or drafted == 0:
            return 1.0
        probs = self.acceptance.probabilities()
        return expected_committed(np.concatenate([probs, np.full(max(drafted - probs.size, 0), probs[-1])])[:drafted])


class SessionStore:
    """Holds sessions; expired ones vanish on the next access or sweep."""

    def __init__(self, limits: EdgeLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._sessions: dict[str, EdgeSession] = {}
        self._by_request: dict[str, str] = {}  # request key -> session id
        self._admitting = 0

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def kv_reserved(self) -> int:
        return sum(s.kv_reserved for s in self._sessions.values())

    def check_capacity(self) -> None:
        """Refuse early, before the prefill is paid for, when the count is already at its cap."""
        self.sweep()
        if len(self._sessions) + self._admitting >= self._limits.max_sessions:
            raise LimitError(
                f"the server holds its maximum of {self._limits.max_sessions} sessions", code="too_many_sessions"
            )

    def begin_admission(self) -> None:
        self.check_capacity()
        self._admitting += 1

    def end_admission(self) -> None:
        self._admitting -= 1

    def find_request(self, request_key: str) -> EdgeSession | None:
        """The live session a request with this key made, if any (a retried request must not make a second)."""
        session_id = self._by_request.get(request_key)
        return self._sessions.get(session_id) if session_id is not None else None

    def add(self, state: TargetState, kv_reserved: int, request_key: str | None = None) -> EdgeSession:
        """Register a prefilled session; the caller holds an admission slot."""
        if self.kv_reserved + kv_reserved > self._limits.max_kv_bytes:
            raise LimitError(
                f"the session needs {kv_reserved} KV bytes; {self._limits.max_kv_bytes - self.kv_reserved} of "
                f"{self._limits.max_kv_bytes} are free",
                code="kv_memory_exhausted",
            )
        now = self._clock()
        session = EdgeSession(secrets.token_urlsafe(16), state, kv_reserved, now, now, request_key=request_key)
        self._sessions[session.id] = session
        if request_key is not None:
            self._by_request[request_key] = session.id
        return session

    def get(self, session_id: str) -> EdgeSession:
        self.sweep()
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionNotFoundError(f"no session {shown(session_id)} (never created, deleted, or expired)")
        session.last_used = self._clock()
        return session

    def remove(self, session_id: str) -> EdgeSession:
        session = self._pop(session_id)
        if session is None:
            raise SessionNotFoundError(f"no session {shown(session_id)} (never created, deleted, or expired)")
        return session

    def discard(self, session_id: str) -> None:
        self._pop(session_id)

    def _pop(self, session_id: str) -> EdgeSession | None:
        session = self._sessions.pop(session_id, None)
        if session is not None and session.request_key is not None:
            self._by_request.pop(session.request_key, None)
        return session

    def sweep(self) -> list[str]:
        """Drop sessions idle for longer than the TTL (a session busy in a round is never dropped)."""
        deadline = self._clock() - self._limits.session_ttl_s
        expired = [sid for sid, s in self._sessions.items() if s.last_used < deadline and not s.lock.locked()]
        for sid in expired:
            self._pop(sid)
        return expired
