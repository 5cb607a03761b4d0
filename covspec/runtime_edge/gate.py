"""What every request passes before the app reads a byte of its body or accepts its WebSocket: the API key (every
path but ``/healthz``: the docs, the schema and the WebSocket handshakes included) and the body's size, declared
and counted. Plus uvicorn's protocols adjusted: a deadline on each HTTP request head (clients that send slowly),
and a WebSocket handshake refused with an HTTP response counted as done."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from covspec.errors import CovspecError, LimitError
from covspec.runtime_edge.auth import check_bearer
from covspec.runtime_edge.replies import refuse
from covspec.runtime_edge.settings import EdgeSettings

OPEN_PATHS = frozenset({"/healthz"})


class EdgeGate:
    """ASGI middleware, outermost: refuses before anything is read, with the one error body."""

    def __init__(self, app: ASGIApp, settings: EdgeSettings) -> None:
        self.app = app
        self.api_key = settings.api_key
        self.max_body_bytes = settings.limits.max_body_bytes
        self.idle_timeout_s = settings.limits.idle_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            if scope["path"] not in OPEN_PATHS:
                check_bearer(self.api_key, _header(scope, b"authorization"))
            if scope["type"] == "http":
                self._check_declared_size(_header(scope, b"content-length"))
        except CovspecError as exc:
            await refuse(scope, send, _service(scope), exc)
            return
        if scope["type"] == "http":
            receive = self._bounded(receive)
        await self.app(scope, receive, send)

    def _check_declared_size(self, declared: str | None) -> None:
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            raise LimitError(
                f"the body declares {declared[:20]} bytes; the server accepts at most {self.max_body_bytes}",
                code="request_too_large",
            )

    def _bounded(self, receive: Receive) -> Receive:
        """``receive`` that counts body bytes (a chunked body declares none) and gives up on a stalled body."""
        seen = 0

        async def bounded_receive() -> Message:
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), self.idle_timeout_s)
            except TimeoutError:
                raise LimitError(
                    f"no body bytes arrived for {self.idle_timeout_s:g} s", code="invalid_request"
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise LimitError(
                        f"the body passed {self.max_body_bytes} bytes, the most the server accepts",
                        code="request_too_large",
                    )
            return message

        return bounded_receive


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline on each request head. uvicorn stops its keep-alive timer at a
    client's first byte, so a client sending a header byte a second held its connection for ever."""

    head_timeout_s = 10.0  # set per server by :func:`head_deadline_protocol`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        if self._head_deadline is None and self.conn.their_state is h11.IDLE:
            self._arm_head_deadline()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self._head_deadline is not None:
            self._head_deadline.cancel()  # the head is in (or the connection failed): the app takes over
            self._head_deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # closed already, or upgraded to a WebSocket
        if self.conn.their_state is h11.IDLE:
            self.transport.close()


class RefusingWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, told that a handshake refused with an HTTP response (the gate's 401)
    is complete, so it does not log the refusal as an application error."""

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True


def head_deadline_protocol(timeout_s: float) -> type[HeadDeadlineProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with this server's head deadline."""
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"head_timeout_s": float(timeout_s)})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _service(scope: Scope) -> Any:
    app = scope.get("app")
    return getattr(getattr(app, "state", None), "service", None)
