"""The relay: transparent byte counting, cuts on cue, and the emulated link measured through an echo server on
127.0.0.1: round trips ~ 2 x delay, throughput ~ the rate, losses ~ retransmission timeouts, set_link mid-stream.

Tolerances are loose on the slow side (a busy shared machine only adds time) and tight on the fast side (the link
model is a lower bound: nothing arrives early).
"""

from __future__ import annotations

import socket
import statistics
import threading
import time

import pytest

from covspec.link.presets import LINK_PRESETS, LinkProfile, link_profile
from covspec.link.relay import FaultPlan, TcpRelay
from tests.link.echo import connect, ping, recv_exactly, transfer


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


def test_round_trip_is_twice_the_delay(echo_server) -> None:
    link = LinkProfile("test", one_way_delay_s=0.04)
    with TcpRelay("127.0.0.1", echo_server, link=link) as relay, connect(relay.port) as sock:
        rtts = [ping(sock) for _ in range(8)]
    assert min(rtts) >= 0.08 * 0.99
    assert statistics.median(rtts) == pytest.approx(0.08, abs=0.03)


def test_jitter_spreads_round_trips_within_its_range(echo_server) -> None:
    link = LinkProfile("test", one_way_delay_s=0.02, jitter_s=0.03)
    with TcpRelay("127.0.0.1", echo_server, link=link, seed=3) as relay, connect(relay.port) as sock:
        rtts = [ping(sock) for _ in range(12)]
    assert min(rtts) >= 0.04 * 0.99  # 2 x delay + two draws in [0, 30 ms)
    assert statistics.mean(rtts) == pytest.approx(0.07, abs=0.025)
    assert max(rtts) - min(rtts) > 0.01  # it does vary


@pytest.mark.parametrize("direction", ["up", "down"])
def test_throughput_matches_the_rate(echo_server, direction: str) -> None:
    rate, payload = 4e6, bytes(range(256)) * 1200  # 307 kB: ~0.61 s at 4 Mbit/s
    link = LinkProfile("test", **{f"{direction}link_bps": rate})
    with TcpRelay("127.0.0.1", echo_server, link=link) as relay, connect(relay.port) as sock:
        elapsed = transfer(sock, payload)
    measured = len(payload) * 8 / elapsed
    assert 0.8 * rate <= measured <= 1.02 * rate


def _lockstep_rates(port: int, connections: int, block: int, rounds: int) -> list[float]:
    """Each connection sends ``block`` bytes and waits for their echo, ``rounds`` times, all starting together;
    returns each one's throughput in bit/s."""
    start = threading.Barrier(connections)
    rates = [0.0] * connections

    def device(i: int) -> None:
        payload = bytes([i]) * block
        with connect(port) as sock:
            start.wait()
            elapsed = sum(transfer(sock, payload) for _ in range(rounds))
        rates[i] = rounds * block * 8 / elapsed

    threads = [threading.Thread(target=device, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return rates


def test_a_shared_cell_divides_its_rate_between_connections(echo_server) -> None:
    """Two devices in lockstep on one 4 Mbit/s uplink: each gets about half and together about all of it; on links
    of their own each gets about the whole rate."""
    rate = 4e6
    link = LinkProfile("cell", uplink_bps=rate)
    with TcpRelay("127.0.0.1", echo_server, link=link, shared=True) as relay:
        shared = _lockstep_rates(relay.port, 2, 32_768, 8)
    with TcpRelay("127.0.0.1", echo_server, link=link) as relay:
        own = _lockstep_rates(relay.port, 2, 32_768, 8)
    assert all(0.35 * rate <= r <= 0.62 * rate for r in shared), shared
    assert 0.75 * rate <= sum(shared) <= 1.05 * rate, shared
    assert all(0.75 * rate <= r <= 1.02 * rate for r in own), own


def test_loss_delays_segments_by_a_retransmission_timeout(echo_server) -> None:
    # small messages are one segment each way: a round trip meets 0, 1 or 2 losses, each one RTO late
    link = LinkProfile("test", one_way_delay_s=0.002, loss_pct=25, min_rto_s=0.06)
    rto, base, n = link.rto_s, link.rtt_s, 30
    with TcpRelay("127.0.0.1", echo_server, link=link, seed=7) as relay, connect(relay.port) as sock:
        extra = [ping(sock) - base for _ in range(n)]
    lost = relay.counters.lost_segments
    seen = [round(x / rto) for x in extra]  # losses each round trip met, as timing shows them
    assert sum(seen) == pytest.approx(lost, abs=2)
    assert 0.12 <= lost / (2 * n) <= 0.4  # 25 % of 60 segments, seeded
    late = [x / k for x, k in zip(extra, seen, strict=True) if k]
    assert statistics.median(late) == pytest.approx(rto, rel=0.25)
    assert min(extra) >= -0.001


def test_set_link_changes_the_round_trip_mid_stream(echo_server) -> None:
    fast, slow = LinkProfile("fast", one_way_delay_s=0.01), LinkProfile("slow", one_way_delay_s=0.06)
    with TcpRelay("127.0.0.1", echo_server, link=fast) as relay, connect(relay.port) as sock:
        before = [ping(sock) for _ in range(3)]
        relay.set_link(slow)
        assert relay.link is slow
        during = [ping(sock) for _ in range(3)]
        relay.set_link(None)
        after = [ping(sock) for _ in range(3)]
    assert statistics.median(before) == pytest.approx(0.02, abs=0.02)
    assert statistics.median(during) == pytest.approx(0.12, abs=0.03) and min(during) >= 0.12 * 0.99
    assert statistics.median(after) < 0.02


def test_set_link_keeps_order_and_in_flight_delays(echo_server) -> None:
    slow = LinkProfile("slow", one_way_delay_s=0.15)
    with TcpRelay("127.0.0.1", echo_server, link=slow) as relay, connect(relay.port) as sock:
        started = time.monotonic()
        sock.sendall(b"A" * 500)
        time.sleep(0.02)  # A is in the relay, scheduled to reach the server at 150 ms
        relay.set_link(None)  # B (and A's echo) would be relayed at once, but B must not overtake A
        sock.sendall(b"B" * 500)
        got = recv_exactly(sock, 1000)
        elapsed = time.monotonic() - started
    assert got == b"A" * 500 + b"B" * 500
    assert 0.15 * 0.99 <= elapsed < 0.25  # A kept its 150 ms; B waited behind it; the way back is unshaped


def test_set_link_while_streaming_is_safe(echo_server) -> None:
    payload = bytes(range(256)) * 800  # 205 kB
    links = [LinkProfile("a", one_way_delay_s=0.001, uplink_bps=50e6), None, LinkProfile("b", jitter_s=0.002)]
    stop = threading.Event()
    with TcpRelay("127.0.0.1", echo_server) as relay, connect(relay.port) as sock:

        def toggle() -> None:
            i = 0
            while not stop.is_set():
                relay.set_link(links[i % len(links)])
                i += 1
                time.sleep(0.002)

        toggler = threading.Thread(target=toggle, daemon=True)
        toggler.start()
        try:
            transfer(sock, payload)  # asserts the echo is byte for byte the payload
        finally:
            stop.set()
            toggler.join(timeout=5)
    assert relay.counters.uplink == relay.counters.downlink == len(payload)


def test_connections_are_counted_and_released(echo_server) -> None:
    link = LinkProfile("test", one_way_delay_s=0.005)
    with TcpRelay("127.0.0.1", echo_server, link=link) as relay:
        for _ in range(3):
            with connect(relay.port) as sock:
                ping(sock)
    counts = relay.counters.snapshot()
    assert counts["connections"] == 3 and counts["uplink"] == counts["downlink"] == 300 and counts["cuts"] == 0


def test_listens_on_a_given_port(echo_server) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with TcpRelay("127.0.0.1", echo_server, port=port) as relay, connect(port) as sock:
        assert relay.port == port and ping(sock) < 1.0
