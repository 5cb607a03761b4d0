"""The device's side of the link: one WebSocket to the edge kept open across generations (hello, open, rounds) and
plain HTTP for the rest (stdlib http.client), both on counting sockets, with reconnect-resume-retry of the round
in flight when the connection drops."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from covspec.errors import EdgeError, EdgeUnavailableError, IncompatiblePairError, ProtocolError
from covspec.models.vocabulary import Vocabulary
from covspec.protocol import (
    ErrorFrame,
    Hello,
    Opened,
    OpenRequest,
    Resume,
    RoundRequest,
    SessionSpec,
    Verdict,
    decode_downlink,
    encode_cancel,
    encode_open,
    encode_resume,
    encode_round,
)
from covspec.protocol.errors import WS_CLOSE_TO_CODE
from covspec.runtime_device.counting import ByteCounter, CountingSocket

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the device tries to get a round through a broken connection before giving up: at least ``attempts``
    tries, and for ``reconnect_window_s`` seconds (longer than an edge takes to restart), backing off exponentially
    from ``first_delay_s`` to ``max_delay_s`` between tries."""

    attempts: int = 6
    first_delay_s: float = 0.1
    max_delay_s: float = 2.0
    timeout_s: float = 60.0
    reconnect_window_s: float = 60.0
    admission_window_s: float = 60.0  # how long an open refused for capacity is tried again, at the edge's Retry-After


class EdgeClient:
    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        retry: RetryPolicy = RetryPolicy(),
        counter: ByteCounter | None = None,
        device_id: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise EdgeError(f"edge URL must look like http://HOST:PORT, got {url!r}", code="bad_config")
        self.host, self.port = parts.hostname, parts.port or 80
        self.base_path = parts.path.rstrip("/")
        self.api_key = api_key
        self.retry = retry
        self.counter = counter or ByteCounter()
        self.device_id = device_id or uuid.uuid4().hex[:16]  # names this device's held images on the edge
        self._connection: EdgeConnection | None = None
        self._vocabularies: dict[str, Vocabulary] = {}
        self._info: dict[str, Any] | None = None

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

    def edge_info(self) -> dict[str, Any]:
        """The edge's info as this client last learnt it: the hello of its open connection, else ``GET /v1/info``
        once (what the target-only path needs of it, e.g. the image processor, does not change while it runs)."""
        if self._connection is not None and self._connection.info is not None:
            return self._connection.info
        if self._info is None:
            self._info = self.info()
        return self._info

    def target_vocabulary(self, tokenizer_hash: str) -> Vocabulary:
        """The target's vocabulary (``GET /v1/vocabulary``), fetched once per tokenizer hash."""
        if tokenizer_hash not in self._vocabularies:
            data = self._request("GET", "/v1/vocabulary")
            try:
                self._vocabularies[tokenizer_hash] = Vocabulary.from_dict(data)
            except (TypeError, ValueError) as exc:
                raise EdgeError(f"the edge's vocabulary is malformed: {exc}", code="malformed_message") from None
        return self._vocabularies[tokenizer_hash]

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/chat/completions (target only, non-streaming), on the same counting socket."""
        return self._request(
            "POST", "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )

    def link_probe(self) -> LinkProbe:
        """One kept-alive HTTP connection for timing the link (``covspec pair``); the caller closes it."""
        return LinkProbe(self)

    def connection(self) -> EdgeConnection:
        """The device's one connection to this edge, kept open across generations (opened on first use)."""
        if self._connection is None:
            self._connection = EdgeConnection(self)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _delay(self, attempt: int) -> float:
        return min(self.retry.max_delay_s, self.retry.first_delay_s * (2**attempt))


class LinkProbe:
    """Times requests on one kept-alive HTTP connection to the edge, from the request's first byte to the response's
    last: ``/healthz`` for the round trip, ``/v1/link/sink`` and ``/v1/link/source`` (feature ``link.probe``) for each
    direction's throughput. Its bytes count under the counter's ``probe`` phase; a refusal raises ``EdgeError``."""

    FEATURE = "link.probe"  # what an edge with these routes lists in /v1/info "features"

    def __init__(self, client: EdgeClient) -> None:
        self.client = client
        self._conn = _CountingHTTPConnection(client.host, client.port, client.counter, client.retry.timeout_s)

    def round_trip(self) -> float:
        """Seconds of one ``GET /healthz`` (the cheapest route: no key, no body)."""
        return self._timed("GET", "/healthz", None)[0]

    def upload(self, data: bytes) -> float:
        """Seconds to send ``data`` to the sink and read its count back (checked against what was sent)."""
        seconds, body = self._timed("POST", "/v1/link/sink", data, {"Content-Type": "application/octet-stream"})
        received = json.loads(body).get("bytes")
        if received != len(data):
            raise EdgeError(f"the edge's sink counted {received} of {len(data)} bytes", code="malformed_message")
        return seconds

    def download(self, n_bytes: int) -> float:
        """Seconds to ask the source for ``n_bytes`` and read all of them."""
        seconds, body = self._timed("GET", f"/v1/link/source?bytes={int(n_bytes)}", None)
        if len(body) != n_bytes:
            raise EdgeError(f"the edge's source sent {len(body)} of {n_bytes} bytes", code="malformed_message")
        return seconds

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> LinkProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _timed(self, method: str, path: str, body: bytes | None, headers: dict | None = None) -> tuple[float, bytes]:
        counter = self.client.counter
        previous, counter.phase = counter.phase, "probe"
        try:
            if self._conn.sock is None:
                self._conn.connect()  # the connection's own setup is not part of any timing
            started = time.perf_counter()
            self._conn.request(
                method, self.client.base_path + path, body=body, headers={**self.client._headers(), **(headers or {})}
            )
            response = self._conn.getresponse()
            payload = response.read()
            seconds = time.perf_counter() - started
        except (ConnectionError, OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise EdgeUnavailableError(f"link probe {method} {path} failed: {exc}") from None
        finally:
            counter.phase = previous
        if response.status >= 400:
            code, message = _refusal(response.status, payload, payload[:200].decode(errors="replace"))
            raise EdgeError(f"edge answered {response.status} to {method} {path}: {message}", code=code)
        return seconds, payload


class EdgeConnection:
    """The device's WebSocket to ``/v1/connect``: the edge's hello (its info) on connect, then per generation one
    ``open`` frame, whose ``opened`` answer is read together with the first round's verdict (the open costs no round
    trip of its own), then rounds. A dropped connection is reopened, the generation resumed (or opened again if its
    ``opened`` never came) and the round in flight sent again (the edge answers a retried round from its stored
    verdict)."""

    def __init__(self, client: EdgeClient) -> None:
        self.client = client
        self.info: dict[str, Any] | None = None
        self.vocab_size = 0
        self.reconnects = 0
        self.admission_waits = 0  # opens refused for capacity and sent again after the edge's Retry-After
        self._admission_deadline: float | None = None
        self.last_exchange_bytes = (0, 0)  # (uplink, downlink) of the last round, for the drafting policy
        self.opened: Opened | None = None
        self.open_sent_at: float | None = None  # perf_counter() when the last open frame went up
        self.policies: dict[Any, Any] = {}  # the device loop's drafting policies, kept across generations
        self.session_id: str | None = None
        # the edge's answer to the last handshake (lower-case names): a scaled-out edge names the replica serving
        # this connection in it (x-covspec-replica)
        self.handshake_headers: dict[str, str] = {}
        # the running generation (request, image, its sha256), reopened if the edge loses it; awaiting its opened
        self._generation: tuple[SessionSpec, bytes | None, bytes | None] | None = None
        self._awaiting_opened = False
        self._open_on: ClientConnection | None = None  # the connection the open frame last went up on
        self._setup_mark = 0
        self._held_images: set[bytes] = set()  # sha256 of images this edge holds for this device
        self._ws: ClientConnection | None = None
        self._stack = ExitStack()

    def hello(self) -> dict[str, Any]:
        """The edge's info, from the hello of the open connection (connecting if needed: the retry policy's attempts,
        not its reconnect window, which is for a generation under way)."""
        if self._ws is None:
            self._with_retries("the connection", lambda: None, window=False)
        assert self.info is not None
        return self.info

    def start_generation(self, spec: SessionSpec, image: bytes | None) -> None:
        """Send the open frame (the image, or its sha256 when the edge holds it); do not wait for ``opened``."""
        digest = hashlib.sha256(image).digest() if image is not None else None
        self._generation, self._awaiting_opened = (spec, image, digest), True
        self._admission_deadline = None
        self.opened, self.session_id, self._open_on = None, None, None
        self._with_retries("the generation's open frame", lambda: None)  # the open goes up once connected

    def open_generation(self, spec: SessionSpec, image: bytes | None) -> Opened:
        """Start a generation and wait for its ``opened`` (one round trip)."""
        self.start_generation(spec, image)
        return self._with_retries("the generation's open frame", self._await_opened)

    def exchange(self, request: RoundRequest) -> Verdict:
        counter = self.client.counter
        before = (counter.sent["rounds"], counter.received["rounds"])
        frame = encode_round(request)
        reply = self._with_retries(f"round {request.round}", lambda: self._round_trip(frame))
        if isinstance(reply, ErrorFrame):
            self.close()
            raise EdgeError(f"edge rejected round {reply.round}: {reply.message}", code=reply.code)
        if not isinstance(reply, Verdict) or reply.round != request.round:
            raise EdgeError(f"the edge's answer does not fit round {request.round}", code="malformed_message")
        self.last_exchange_bytes = (counter.sent["rounds"] - before[0], counter.received["rounds"] - before[1])
        return reply

    def reopen(self, committed: list[int], next_round: int) -> None:
        """Continue the running generation on a fresh session, when the edge no longer knows its own (it restarted,
        or the session expired): the edge prefills the prompt and ``committed``, and rounds go on from
        ``next_round``. The open rides in front of that round, as a generation's first open does."""
        if self._generation is None:
            raise EdgeError("no generation to continue on this connection", code="no_generation")
        spec, image, _ = self._generation
        log.warning("the edge lost session %s; continuing after %d committed tokens", self.session_id, len(committed))
        resumed = replace(spec, request_id=uuid.uuid4().hex, resume_tokens=tuple(committed), first_round=next_round)
        self.start_generation(resumed, image)

    def _with_retries(self, what: str, call: Callable[[], T], window: bool = True) -> T:
        """``call`` on a live connection: a dropped one is reopened, the generation's open frame sent on it (or a
        ``resume``), and ``call`` tried again, for the retry policy's attempts and (``window``) its window."""
        retry = self.client.retry
        deadline = time.monotonic() + (retry.reconnect_window_s if window else 0.0)
        attempt = 0
        while attempt < retry.attempts or time.monotonic() < deadline:
            try:
                if self._ws is None:
                    self._connect()
                    if not self._awaiting_opened and self.session_id is not None:
                        self._send(encode_resume(Resume(self.session_id)))
                if self._awaiting_opened and self._open_on is not self._ws:
                    self._send_open()
                return call()
            except (ConnectionClosed, OSError, InvalidHandshake, TimeoutError) as exc:
                self._reconnect_or_raise(exc, attempt)
                attempt += 1
        raise EdgeUnavailableError(f"{what} could not reach the edge in {attempt} attempts")

    def prefill_wait(self, sent: float) -> float:
        """How long a first round sent at ``sent`` (right behind the open frame) waited for the edge's prefill."""
        if self.opened is None or self.open_sent_at is None:
            return 0.0
        return max(0.0, self.opened.prefill_s - (sent - self.open_sent_at))

    def _await_opened(self) -> Opened:
        while not self._read_opened():
            pass
        assert self.opened is not None
        return self.opened

    def _round_trip(self, frame: bytes) -> Verdict | ErrorFrame | Opened | Hello:
        while True:  # the first round rides behind the open frame; a refused open is sent again first
            self._send(frame, phase="rounds")
            if not self._awaiting_opened or self._read_opened():
                return self._recv()

    def _send_open(self) -> None:
        assert self._generation is not None
        spec, image, digest = self._generation
        held = digest is not None and digest in self._held_images
        self._setup_mark = self.client.counter.received["setup"]
        self.open_sent_at = time.perf_counter()
        self._open_on = self._ws  # at most once per connection, unless the edge asks for the image again
        self._send(encode_open(OpenRequest(spec, None if held else image, digest if held else None)), phase="setup")

    def _read_opened(self) -> bool:
        """Read the answer to the open frame: True once ``opened`` came; False when the edge let go of the image
        named by hash, and the open went out again with its bytes (the edge drops rounds until that open)."""
        assert self._generation is not None
        _, _, digest = self._generation
        raw = self._recv_raw()
        reply = decode_downlink(raw, vocab_size=self.vocab_size)
        if isinstance(reply, ErrorFrame):
            if reply.code == "unknown_image" and digest in self._held_images:
                self._held_images.discard(digest)
                self._send_open()
                return False
            if reply.retry_after_s is not None and self._admission_wait(reply.retry_after_s):
                self._send_open()  # the edge was full: it said when to ask again, and the window is not over
                return False
            self._awaiting_opened = False
            raise EdgeError(f"edge refused the generation: {reply.message}", code=reply.code)
        if not isinstance(reply, Opened):
            raise EdgeError(f"edge answered an open with {type(reply).__name__}", code="malformed_message")
        self._count_as_setup(len(raw) + (2 if len(raw) < 126 else 4))
        if digest is not None:
            self._held_images.add(digest)
        self._awaiting_opened, self.opened, self.session_id = False, reply, reply.session_id
        return True

    def _admission_wait(self, retry_after_s: float) -> bool:
        """Wait the edge's Retry-After before opening again, while the admission window of this generation lasts;
        False once it is over."""
        now = time.monotonic()
        if self._admission_deadline is None:
            self._admission_deadline = now + self.client.retry.admission_window_s
        if now + retry_after_s > self._admission_deadline:
            return False
        log.info("the edge is at capacity; opening again in %.1f s", retry_after_s)
        self.admission_waits += 1
        time.sleep(retry_after_s)
        return True

    def _count_as_setup(self, frame_bytes: int) -> None:
        """The ``opened`` frame may cross the socket after the first round went up: count it as setup all the same."""
        counter = self.client.counter
        late = frame_bytes - (counter.received["setup"] - self._setup_mark)
        if late > 0:
            moved = min(late, counter.received["rounds"])
            counter.received["rounds"] -= moved
            counter.received["setup"] += moved

    def cancel(self) -> None:
        """End the running generation on the edge now (no answer comes back)."""
        if self._ws is not None and (self.session_id is not None or self._awaiting_opened):
            try:
                self._send(encode_cancel())
            except (ConnectionClosed, OSError):
                pass
        self.session_id, self._awaiting_opened, self._generation = None, False, None

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._stack.close()
            except Exception:  # closing a broken connection may raise; it is being dropped either way
                pass
            self._ws = None

    def _send(self, frame: bytes, phase: str = "rounds") -> None:
        assert self._ws is not None
        self.client.counter.phase = phase
        self._ws.send(frame)

    def _recv_raw(self) -> bytes:
        assert self._ws is not None
        reply = self._ws.recv(timeout=self.client.retry.timeout_s)
        if isinstance(reply, str):
            raise EdgeError("edge sent a text frame", code="malformed_message")
        return reply

    def _recv(self) -> Verdict | ErrorFrame | Opened | Hello:
        return decode_downlink(self._recv_raw(), vocab_size=self.vocab_size)

    def _connect(self) -> None:
        c = self.client
        c.counter.phase = "setup" if self.session_id is None else "rounds"  # a reconnect mid-generation: round cost
        sock = CountingSocket.connect_to(c.host, c.port, c.counter, c.retry.timeout_s)
        stack = ExitStack()
        try:
            ws = stack.enter_context(
                connect(
                    f"ws://{c.host}:{c.port}{c.base_path}/v1/connect?device={c.device_id}",
                    sock=sock,
                    additional_headers=c._headers(),
                    compression=None,
                    max_size=None,
                    ping_interval=None,
                    open_timeout=c.retry.timeout_s,
                )
            )
            hello = self._read_hello(ws)
        except BaseException as exc:
            stack.close()
            sock.close()
            if isinstance(exc, InvalidStatus) and exc.response.status_code < 500:  # refused: retrying cannot help
                code, message = _refusal(exc.response.status_code, exc.response.body)
                raise EdgeError(f"edge refused the connection: {message}", code=code) from None
            raise
        self._ws, self._stack, self.info = ws, stack, hello
        self.handshake_headers = {name.lower(): value for name, value in ws.response.headers.raw_items()}
        self.vocab_size = int(hello.get("model", {}).get("vocab_size", 0))

    def _read_hello(self, ws: ClientConnection) -> dict[str, Any]:
        reply = ws.recv(timeout=self.client.retry.timeout_s)
        try:
            frame = decode_downlink(reply, vocab_size=0) if isinstance(reply, bytes) else None
        except ProtocolError as exc:
            if exc.code == "unsupported_version":
                raise IncompatiblePairError(f"the edge speaks another protocol: {exc.message}") from None
            raise
        if isinstance(frame, ErrorFrame):
            raise EdgeError(f"edge refused the connection: {frame.message}", code=frame.code)
        if not isinstance(frame, Hello):
            raise EdgeError("the edge's first frame is not a hello", code="malformed_message")
        return frame.info

    def _reconnect_or_raise(self, exc: BaseException, attempt: int) -> None:
        if isinstance(exc, ConnectionClosed) and exc.rcvd is not None and 4000 <= exc.rcvd.code < 5000:
            code = WS_CLOSE_TO_CODE.get(exc.rcvd.code, "internal_error")
            raise EdgeError(f"edge closed the connection: {exc.rcvd.reason or code}", code=code) from None
        log.warning("connection to the edge lost (%s: %s); reconnecting", type(exc).__name__, exc)
        self.close()
        self.reconnects += 1
        time.sleep(self.client._delay(attempt))


def _refusal(status: int, body: bytes | None, fallback: str | None = None) -> tuple[str, str]:
    """(code, message) of a refused request or WebSocket handshake, from the edge's JSON error body when it sent one;
    else ``internal_error`` with ``fallback`` (``HTTP <status>`` when None)."""
    try:
        error = json.loads(body or b"")["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        return "internal_error", f"HTTP {status}" if fallback is None else fallback


class _CountingHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, counter: ByteCounter, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._counter = counter

    def connect(self) -> None:
        self.sock = CountingSocket.connect_to(self.host, self.port, self._counter, self.timeout)
