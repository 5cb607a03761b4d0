"""A transparent TCP relay between device and edge: counts bytes each way, and can cut connections on cue.

It is the independent witness for byte accounting and the fault injector for reconnect tests; the emulated links of
the link presets (delay, bandwidth) build on it.
"""

from __future__ import annotations

import queue
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

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
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class TcpRelay:
    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        host: str = "127.0.0.1",
        fault: FaultPlan | None = None,
        link: LinkProfile | None = None,
        seed: int = 0,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.fault = fault or FaultPlan()
        self.link = link if link is not None and link.shaped else None
        self._jitter = random.Random(seed)
        self.counters = RelayCounters()
        self._listener = socket.create_server((host, 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, name="covspec-relay", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> TcpRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass
        for sock in list(self._sockets):
            _close(sock)
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
                self._sockets.append(sock)
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

    def stop_listening(self) -> None:
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass


class _Shaper:
    """One direction of an emulated link: chunks leave after serialisation at the link's rate plus the one-way
    delay (and jitter), in order, from a sender thread; the reading side never sleeps."""

    def __init__(self, dst: socket.socket, bps: float | None, delay_s: float, jitter_s: float, rng: random.Random):
        self.dst, self.bps, self.delay_s, self.jitter_s, self.rng = dst, bps, delay_s, jitter_s, rng
        self.queue: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
        self.link_free_at = 0.0
        self.last_due = 0.0
        self.failed = False
        threading.Thread(target=self._send_loop, daemon=True).start()

    def put(self, data: bytes) -> bool:
        now = time.monotonic()
        start = max(now, self.link_free_at)
        self.link_free_at = start + (len(data) * 8 / self.bps if self.bps else 0.0)
        jitter = self.rng.uniform(0, self.jitter_s) if self.jitter_s else 0.0
        due = max(self.link_free_at + self.delay_s + jitter, self.last_due)
        self.last_due = due
        self.queue.put((due, data))
        return not self.failed

    def close(self) -> None:
        self.queue.put(None)

    def _send_loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                break
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                self.dst.sendall(data)
            except OSError:
                self.failed = True
                return
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class _Pair:
    def __init__(self, relay: TcpRelay, index: int, client: socket.socket, server: socket.socket) -> None:
        self.relay, self.index, self.client, self.server = relay, index, client, server
        self.sent = {"up": 0, "down": 0}
        link = relay.link
        self.shapers: dict[str, _Shaper] = {}
        if link is not None:
            self.shapers["up"] = _Shaper(server, link.uplink_bps, link.one_way_delay_s, link.jitter_s, relay._jitter)
            self.shapers["down"] = _Shaper(
                client, link.downlink_bps, link.one_way_delay_s, link.jitter_s, relay._jitter
            )

    def pump(self, direction: str) -> None:
        src, dst = (self.client, self.server) if direction == "up" else (self.server, self.client)
        fault, counters = self.relay.fault, self.relay.counters
        limit = fault.cut_uplink_after if direction == "up" else fault.cut_downlink_after
        armed = limit is not None and fault.connection_index == self.index
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
            shaper = self.shapers.get(direction)
            if shaper is not None:
                if not shaper.put(data):
                    break
            else:
                try:
                    dst.sendall(data)
                except OSError:
                    break
            self.sent[direction] += len(data)
            with counters.lock:
                if direction == "up":
                    counters.uplink += len(data)
                else:
                    counters.downlink += len(data)
        if direction in self.shapers:
            self.shapers[direction].close()  # the sender half-closes once the queue has drained
            return
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        for sock in (self.client, self.server):
            _close(sock, abort=True)


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
