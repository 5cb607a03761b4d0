"""Bytes counted on the socket itself (framing included), split into session setup and per-round traffic."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass
class ByteCounter:
    """Counts per phase; the phase in force when bytes cross the socket gets them."""

    phase: str = "setup"
    sent: dict[str, int] = field(default_factory=lambda: {"setup": 0, "rounds": 0})
    received: dict[str, int] = field(default_factory=lambda: {"setup": 0, "rounds": 0})

    def add(self, direction: str, n: int) -> None:
        table = self.sent if direction == "sent" else self.received
        table[self.phase] = table.get(self.phase, 0) + n


class CountingSocket(socket.socket):
    """A TCP socket that reports every byte it sends or receives to a ``ByteCounter``."""

    counter: ByteCounter

    @classmethod
    def connect_to(cls, host: str, port: int, counter: ByteCounter, timeout: float | None) -> CountingSocket:
        last_error: OSError | None = None
        for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            sock = cls(family, kind, proto)
            sock.counter = counter
            sock.settimeout(timeout)
            try:
                sock.connect(address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            except OSError as exc:
                last_error = exc
                sock.close()
        raise last_error or OSError(f"cannot resolve {host}:{port}")

    def send(self, data, *args) -> int:  # type: ignore[override]
        n = super().send(data, *args)
        self.counter.add("sent", n)
        return n

    def sendall(self, data, *args) -> None:  # type: ignore[override]
        super().sendall(data, *args)
        self.counter.add("sent", len(memoryview(data).cast("B")))

    def recv(self, bufsize: int, *args) -> bytes:  # type: ignore[override]
        data = super().recv(bufsize, *args)
        self.counter.add("received", len(data))
        return data

    def recv_into(self, buffer, nbytes: int = 0, *args) -> int:  # type: ignore[override]
        n = super().recv_into(buffer, nbytes, *args)
        self.counter.add("received", n)
        return n
