"""A transparent TCP relay between device and edge: counts bytes each way, and can cut connections on cue.

It is the independent witness for byte accounting and the fault injector for reconnect tests; the emulated links of
the link presets (delay, jitter, bandwidth, loss as retransmission delay: covspec.link.emulation) build on it, and
``set_link`` changes the link under running connections (a link whose delay changes mid-generation). ``shared``
makes it one cell: every connection's bytes share one uplink and one downlink (``SharedMedium``), as N phones on
one Wi-Fi or cellular cell do; otherwise each connection has the link's rate to itself.
"""

from __future__ import annotations

import queue
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from covspec.link.emulation import LinkClock, SharedMedium
from covspec.link.presets import LinkProfile


@dataclass
class FaultPlan:
    """Cut the ``connection_index``-th connection (0-based, counting every accepted one) once its client-to-server
    bytes pass ``cut_uplink_after`` (the crossing chunk is not forwarded) or its server-to-client bytes pass
    ``cut_downlink_after`` (likewise). ``refuse_after_cut`` makes the relay stop accepting: the edge is gone."""

    connection_index: int | None = None
    cut_uplink_after: int | None = None
    cut_downlink_after: int | None = None
    refuse_after_cut: bool = False
    fired: bool = False


@dataclass
class RelayCounters:
    uplink: int = 0  # client -> server bytes forwarded
    downlink: int = 0  # server -> client bytes forwarded
    connections: int = 0
    cuts: int = 0
    lost_segments: int = 0  # emulated losses (each delayed by a retransmission timeout), both directions
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {
                "uplink": self.uplink,
                "downlink": self.downlink,
                "connections": self.connections,
                "cuts": self.cuts,
                "lost_segments": self.lost_segments,
            }


class TcpRelay:
    """Listens on ``host:port`` (port 0: a free one, see ``.port``) and relays each connection to the upstream."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fault: FaultPlan | None = None,
        link: LinkProfile | None = None,
        seed: int = 0,
        shared: bool = False,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        # a shared cell: one uplink and one downlink medium for every connection (else each has the link to itself)
        self.media = {"up": SharedMedium(), "down": SharedMedium()} if shared else None
        self.fault = fault or FaultPlan()
        self.seed = seed
        self._link_lock = threading.Lock()
        self._link = link if link is not None and link.shaped else None
        self.counters = RelayCounters()
        self._listener = socket.create_server((host, port))
        self.host, self.port = self._listener.getsockname()[:2]
        self._stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._sockets_lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name="covspec-relay", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def link(self) -> LinkProfile | None:
        """The emulated link new bytes meet; None when unshaped."""
        with self._link_lock:
            return self._link

    def set_link(self, link: LinkProfile | None) -> None:
        """Change the link under running and future connections: bytes read from now on get its delay, bandwidth
        and loss; bytes already scheduled keep theirs; order is kept (a shorter delay waits behind a longer one)."""
        with self._link_lock:
            self._link = link if link is not None and link.shaped else None

    def start(self) -> TcpRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._sockets_lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def __enter__(self) -> TcpRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.counters.lock:
                index = self.counters.connections
                self.counters.connections += 1
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                _close(client)
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._sockets_lock:
                self._sockets.update((client, server))
            pair = _Pair(self, index, client, server)
            threading.Thread(target=pair.pump, args=("up",), daemon=True).start()
            threading.Thread(target=pair.pump, args=("down",), daemon=True).start()

    def _cut(self, pair: _Pair) -> None:
        with self.counters.lock:
            self.counters.cuts += 1
        self.fault.fired = True
        pair.close()
        if self.fault.refuse_after_cut:
            self.stop_listening()

    def _forget(self, *sockets: socket.socket) -> None:
        with self._sockets_lock:
            self._sockets.difference_update(sockets)

    def stop_listening(self) -> None:
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass


class _Shaper:
    """One direction of an emulated link: pieces leave at the times the LinkClock gives, in order, from a sender
    thread started on the first shaped chunk; the reading side never sleeps."""

    def __init__(self, dst: socket.socket, clock: LinkClock, aborted: threading.Event, on_done: Callable[[], None]):
        self.dst, self.clock, self.aborted, self.on_done = dst, clock, aborted, on_done
        self.queue: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0  # pieces queued or being sent
        self.failed = False
        self.started = False

    def idle(self) -> bool:
        """Nothing queued or in flight: the reader may send directly without overtaking."""
        with self._lock:
            return self._pending == 0

    def put(self, data: bytes, link: LinkProfile, direction: str) -> int:
        """Schedule ``data``; returns how many of its segments the link lost (and will deliver late)."""
        if not self.started:
            self.started = True
            threading.Thread(target=self._send_loop, daemon=True).start()
        lost_before = self.clock.lost_segments
        pieces = self.clock.schedule(len(data), time.monotonic(), link, direction)
        with self._lock:
            self._pending += len(pieces)
        for piece in pieces:
            self.queue.put((piece.due, data[piece.start : piece.end]))
        return self.clock.lost_segments - lost_before

    def close(self) -> None:
        self.queue.put(None)

    def _send_loop(self) -> None:
        try:
            self._send_all()
        finally:
            self.on_done()

    def _send_all(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                break
            due, data = item
            wait = due - time.monotonic()
            if wait > 0 and self.aborted.wait(wait):
                self.failed = True
                return
            try:
                self.dst.sendall(data)
            except OSError:
                self.failed = True
                return
            with self._lock:
                self._pending -= 1
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class _Pair:
    def __init__(self, relay: TcpRelay, index: int, client: socket.socket, server: socket.socket) -> None:
        self.relay, self.index, self.client, self.server = relay, index, client, server
        self.sent = {"up": 0, "down": 0}
        self.aborted = threading.Event()
        self._done: set[str] = set()
        self._done_lock = threading.Lock()
        self.shapers = {
            direction: _Shaper(
                dst,
                LinkClock(
                    random.Random(f"{relay.seed}/{index}/{direction}"),
                    medium=relay.media[direction] if relay.media is not None else None,
                ),
                self.aborted,
                lambda d=direction: self._finished(d),
            )
            for direction, dst in (("up", server), ("down", client))
        }

    def pump(self, direction: str) -> None:
        src, dst = (self.client, self.server) if direction == "up" else (self.server, self.client)
        fault, counters = self.relay.fault, self.relay.counters
        limit = fault.cut_uplink_after if direction == "up" else fault.cut_downlink_after
        armed = limit is not None and fault.connection_index == self.index
        shaper = self.shapers[direction]
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if armed and not fault.fired and self.sent[direction] + len(data) > limit:
                self.relay._cut(self)
                return
            link, lost = self.relay.link, 0
            if link is None and shaper.idle():
                try:
                    dst.sendall(data)
                except OSError:
                    break
            else:  # an unshaped chunk behind shaped ones still queues, with no delay: order is kept
                lost = shaper.put(data, link or _UNSHAPED, direction)
                if shaper.failed:
                    break
            self.sent[direction] += len(data)
            with counters.lock:
                counters.lost_segments += lost
                if direction == "up":
                    counters.uplink += len(data)
                else:
                    counters.downlink += len(data)
        if shaper.started:
            shaper.close()  # the sender half-closes once the queue has drained
            return
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._finished(direction)

    def _finished(self, direction: str) -> None:
        """Both directions half-closed: the pair is over; close it so that a long-running relay holds no sockets."""
        with self._done_lock:
            self._done.add(direction)
            if len(self._done) < 2:
                return
        for sock in (self.client, self.server):
            _close(sock)
        self.relay._forget(self.client, self.server)

    def close(self) -> None:
        self.aborted.set()
        for sock in (self.client, self.server):
            _close(sock, abort=True)
        self.relay._forget(self.client, self.server)


_UNSHAPED = LinkProfile("unshaped")


def _close(sock: socket.socket, abort: bool = False) -> None:
    try:
        if abort:  # no goodbye, as a dropped link looks to the peers
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)  # wakes the pump thread blocked in recv
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


@contextmanager
def relayed_url(url: str, link: LinkProfile | None) -> Iterator[str]:
    """``url`` itself when ``link`` is None, else the URL of a relay in front of that host and port emulating
    ``link`` (what `covspec run --link`, `covspec pair --link` and `covspec profile --link` talk to)."""
    if link is None:
        yield url
        return
    parts = urlsplit(url)
    with TcpRelay(parts.hostname or "127.0.0.1", parts.port or 80, link=link) as relay:
        yield relay.url
