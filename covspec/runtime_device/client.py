"""The device's side of the link: HTTP control (stdlib http.client) and one WebSocket of rounds, both on counting
sockets, with reconnect-and-retry of the round in flight when the connection drops."""

from __future__ import annotations

import http.client
import json
import logging
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from covspec.errors import CovspecError, EdgeUnavailableError
from covspec.protocol import (
    ErrorFrame,
    RoundRequest,
    SessionSpec,
    Verdict,
    decode_downlink,
    encode_round,
)
from covspec.protocol.errors import WS_CLOSE_TO_CODE
from covspec.runtime_device.counting import ByteCounter, CountingSocket

log = logging.getLogger(__name__)


class EdgeError(CovspecError):
    """The edge answered with a documented error (its code is the edge's)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the device tries to get a round through a broken connection before giving up."""

    attempts: int = 6
    first_delay_s: float = 0.1
    max_delay_s: float = 2.0
    timeout_s: float = 60.0


class EdgeClient:
    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        retry: RetryPolicy = RetryPolicy(),
        counter: ByteCounter | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise EdgeError(f"edge URL must look like http://HOST:PORT, got {url!r}", code="bad_config")
        self.host, self.port = parts.hostname, parts.port or 80
        self.base_path = parts.path.rstrip("/")
        self.api_key = api_key
        self.retry = retry
        self.counter = counter or ByteCounter()

    # ---- HTTP control -------------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Any:
        for attempt in range(self.retry.attempts):
            conn = _CountingHTTPConnection(self.host, self.port, self.counter, self.retry.timeout_s)
            try:
                self.counter.phase = "setup"
                conn.request(method, self.base_path + path, body=body, headers={**self._headers(), **(headers or {})})
                response = conn.getresponse()
                payload = response.read()
                status = response.status
                break
            except (ConnectionError, OSError, http.client.HTTPException) as exc:
                if attempt + 1 == self.retry.attempts:
                    raise EdgeUnavailableError(
                        f"edge {self.host}:{self.port} unreachable after {self.retry.attempts} attempts: {exc}"
                    ) from None
                time.sleep(self._delay(attempt))
            finally:
                conn.close()
        try:
            data = json.loads(payload) if payload else {}
        except json.JSONDecodeError:
            data = {"error": {"code": "internal_error", "message": payload[:200].decode(errors="replace")}}
        if status >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise EdgeError(
                f"edge answered {status}: {error.get('message', data)}", code=error.get("code", "internal_error")
            )
        return data

    def info(self) -> dict[str, Any]:
        return self._request("GET", "/v1/info")

    def open_session(self, spec: SessionSpec, image_bytes: bytes, filename: str = "image") -> dict[str, Any]:
        boundary = uuid.uuid4().hex
        body = _multipart(boundary, json.dumps(spec.to_dict()).encode(), image_bytes, filename)
        return self._request(
            "POST", "/v1/sessions", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )

    def delete_session(self, session_id: str) -> None:
        self._request("DELETE", f"/v1/sessions/{session_id}")

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/chat/completions (target only, non-streaming), on the same counting socket."""
        return self._request(
            "POST", "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )

    def rounds(self, session_id: str, vocab_size: int) -> RoundChannel:
        return RoundChannel(self, session_id, vocab_size)

    def _delay(self, attempt: int) -> float:
        return min(self.retry.max_delay_s, self.retry.first_delay_s * (2**attempt))


class RoundChannel:
    """Sends rounds and returns verdicts; a dropped connection is reopened and the same round sent again (the edge
    answers a retried round from its stored verdict)."""

    def __init__(self, client: EdgeClient, session_id: str, vocab_size: int) -> None:
        self.client = client
        self.session_id = session_id
        self.vocab_size = vocab_size
        self.reconnects = 0
        self._ws: ClientConnection | None = None
        self._stack = ExitStack()

    def _open(self) -> ClientConnection:
        c = self.client
        c.counter.phase = "setup"  # the opening handshake is control traffic
        sock = CountingSocket.connect_to(c.host, c.port, c.counter, c.retry.timeout_s)
        stack = ExitStack()
        try:
            ws = stack.enter_context(
                connect(
                    f"ws://{c.host}:{c.port}{c.base_path}/v1/sessions/{self.session_id}/rounds",
                    sock=sock,
                    additional_headers=c._headers(),
                    compression=None,
                    max_size=None,
                    ping_interval=None,
                    open_timeout=c.retry.timeout_s,
                )
            )
        except BaseException:
            sock.close()
            raise
        c.counter.phase = "rounds"
        self._stack = stack
        return ws

    def exchange(self, request: RoundRequest) -> Verdict:
        frame = encode_round(request)
        for attempt in range(self.client.retry.attempts):
            try:
                if self._ws is None:
                    self._ws = self._open()
                self.client.counter.phase = "rounds"
                self._ws.send(frame)
                reply = self._ws.recv(timeout=self.client.retry.timeout_s)
            except ConnectionClosed as exc:
                self._raise_if_edge_refused(exc)
                self._drop(f"connection closed ({exc})", attempt)
                continue
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                if isinstance(exc, InvalidStatus) and exc.response.status_code < 500:
                    raise EdgeError(
                        f"edge refused the round channel: HTTP {exc.response.status_code}", code="internal_error"
                    ) from None
                self._drop(f"{type(exc).__name__}: {exc}", attempt)
                continue
            if isinstance(reply, str):
                raise EdgeError("edge sent a text frame", code="malformed_message")
            message = decode_downlink(reply, vocab_size=self.vocab_size)
            if isinstance(message, ErrorFrame):
                self.close()
                raise EdgeError(f"edge rejected round {message.round}: {message.message}", code=message.code)
            if message.round != request.round:
                raise EdgeError(
                    f"verdict for round {message.round} answered round {request.round}", code="malformed_message"
                )
            return message
        raise EdgeUnavailableError(
            f"round {request.round} could not reach the edge after {self.client.retry.attempts} attempts"
        )

    def _raise_if_edge_refused(self, exc: ConnectionClosed) -> None:
        close = exc.rcvd
        if close is not None and 4000 <= close.code < 5000:
            code = WS_CLOSE_TO_CODE.get(close.code, "internal_error")
            raise EdgeError(f"edge closed the round channel: {close.reason or code}", code=code) from None

    def _drop(self, why: str, attempt: int) -> None:
        log.warning("round channel lost (%s); reconnecting", why)
        self.close()
        self.reconnects += 1
        if attempt + 1 < self.client.retry.attempts:
            time.sleep(self.client._delay(attempt))

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._stack.close()
            except Exception:  # closing a broken connection may raise; it is being dropped either way
                pass
            self._ws = None


class _CountingHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, counter: ByteCounter, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._counter = counter

    def connect(self) -> None:
        self.sock = CountingSocket.connect_to(self.host, self.port, self._counter, self.timeout)


def _multipart(boundary: str, request_json: bytes, image: bytes, filename: str) -> bytes:
    b = boundary.encode()
    return b"".join(
        [
            b"--" + b + b'\r\nContent-Disposition: form-data; name="request"\r\n'
            b"Content-Type: application/json\r\n\r\n" + request_json + b"\r\n",
            b"--"
            + b
            + b'\r\nContent-Disposition: form-data; name="image"; filename="'
            + filename.encode("ascii", "replace").replace(b'"', b"_")
            + b'"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + image + b"\r\n",
            b"--" + b + b"--\r\n",
        ]
    )
