"""A loopback echo server and timing helpers for the link tests (and the `covspec link` CLI test)."""

from __future__ import annotations

import socket
import threading
import time


class EchoServer:
    """Echoes every byte back on each connection; 127.0.0.1, a free port."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()

    def __enter__(self) -> EchoServer:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()

    def _serve(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()


def _echo(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(min(65536, n - len(got)))
        if not chunk:
            break
        got += chunk
    return bytes(got)


def ping(sock: socket.socket, payload: bytes = b"p" * 100) -> float:
    """Seconds from sending ``payload`` to having all of its echo back."""
    started = time.monotonic()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.monotonic() - started


def transfer(sock: socket.socket, payload: bytes) -> float:
    """Send ``payload`` from a thread while reading its echo (no deadlock on full buffers); seconds until done."""
    started = time.monotonic()
    sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
    sender.start()
    got = recv_exactly(sock, len(payload))
    elapsed = time.monotonic() - started
    sender.join(timeout=5)
    assert got == payload
    return elapsed
