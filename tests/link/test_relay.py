"""The relay: transparent byte counting, cuts on cue, and link emulation (delay, bandwidth) as lower bounds."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from covspec.link.presets import LINK_PRESETS, LinkProfile, link_profile
from covspec.link.relay import FaultPlan, TcpRelay


@pytest.fixture()
def echo_server():
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()


def _round_trip(port: int, payload: bytes) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.monotonic()
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got, time.monotonic() - started


def test_transparent_and_counted(echo_server) -> None:
    with TcpRelay("127.0.0.1", echo_server) as relay:
        got, _ = _round_trip(relay.port, b"x" * 5000)
        time.sleep(0.05)
    assert got == b"x" * 5000
    assert relay.counters.uplink == 5000 and relay.counters.downlink == 5000 and relay.counters.connections == 1


def test_cut_after_bytes(echo_server) -> None:
    fault = FaultPlan(connection_index=0, cut_uplink_after=100)
    with TcpRelay("127.0.0.1", echo_server, fault=fault) as relay:
        got, _ = _round_trip(relay.port, b"y" * 1000)
        assert got == b"" and fault.fired and relay.counters.cuts == 1
        got, _ = _round_trip(relay.port, b"z" * 1000)  # the next connection is untouched
        assert got == b"z" * 1000


def test_delay_and_bandwidth_are_lower_bounds(echo_server) -> None:
    link = LinkProfile("test", one_way_delay_s=0.05, uplink_bps=2e6, downlink_bps=None)
    with TcpRelay("127.0.0.1", echo_server, link=link) as relay:
        got, small = _round_trip(relay.port, b"a" * 10)
        got_big, big = _round_trip(relay.port, b"b" * 125_000)  # 1 Mbit up at 2 Mbit/s: >= 0.5 s
    assert got == b"a" * 10 and got_big == b"b" * 125_000
    assert small >= 0.1  # two one-way delays
    assert big >= 0.1 + 0.5 * 0.95


def test_presets() -> None:
    assert not LINK_PRESETS["loopback"].shaped
    assert link_profile("lte").rtt_s == pytest.approx(0.05)
    with pytest.raises(ValueError, match="unknown link preset"):
        link_profile("carrier-pigeon")
