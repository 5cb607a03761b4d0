"""The link model of one direction: when each byte the relay read may leave it.

Pure arithmetic over a clock and a seeded ``random.Random``, so that the relay's timing can be tested without
sockets. Bytes serialise at the link's rate (one after another: a busy link queues), then travel the one-way delay
plus a uniform jitter drawn per chunk, and never overtake earlier bytes.

Loss. TCP never loses data: a lost segment is sent again and everything behind it waits (head-of-line blocking).
So a loss of p percent is emulated as delay: each MSS-sized segment (1448 bytes, Ethernet's 1500-byte MTU less IP,
TCP and timestamp-option headers) is lost independently with probability p and then arrives one retransmission
timeout late, ``LinkProfile.rto_s`` = RTT + max(rto_min, 4 x jitter), after Linux's RTO = SRTT + max(rto_min,
4 x RTTVAR) with rto_min = 200 ms (RFC 6298 section 2 sets the form; Linux's tcp_rtt_estimator / __tcp_set_rto and
TCP_RTO_MIN set the floor). The bytes after it in the chunk, and every later chunk, wait for it. A retransmission is
never lost again and takes no link time. This is the timeout path; Linux often repairs a loss sooner (fast
retransmit after three duplicate ACKs when more data follows, or a tail loss probe after about two RTTs, RFC 8985),
so the model errs on the slow side (most for bulk transfers). docs/links.md tells the same.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from covspec.link.presets import LinkProfile

MSS = 1448  # bytes of TCP payload per segment on a 1500-byte MTU with timestamps


@dataclass(frozen=True)
class Piece:
    """Bytes ``[start, end)`` of a chunk may leave the relay at ``due`` (monotonic seconds); ``retransmitted``: a
    lost segment is among them, so they waited for its retransmission."""

    due: float
    start: int
    end: int
    retransmitted: bool = False


class SharedMedium:
    """One direction of a shared cell (``TcpRelay(shared=True)``): the bytes of every connection through the relay
    serialise on it one after another, in the order the relay read them, as at one queue in front of a cell's or an
    access point's radio. N devices sending at once each get about 1/N of the rate; delay, jitter and loss stay per
    connection. Thread-safe: each connection's reading thread reserves its bytes' airtime here."""

    def __init__(self) -> None:
        self.free_at = 0.0
        self._lock = threading.Lock()

    def reserve(self, ready: float, seconds: float) -> float:
        """When bytes ready at ``ready`` start serialising, taking ``seconds`` of the medium from then on."""
        with self._lock:
            start = max(ready, self.free_at)
            self.free_at = start + seconds
            return start


class LinkClock:
    """One direction's timeline: the time the link is next free, the last departure (order is kept), loss counts.

    Not thread-safe: one producer (the relay's reading thread of that direction) calls ``schedule``. With a
    ``medium``, the link's rate is that medium's, shared with every other clock on it.
    """

    def __init__(self, rng: random.Random, mss: int = MSS, medium: SharedMedium | None = None) -> None:
        self.rng, self.mss, self.medium = rng, mss, medium
        self.link_free_at = 0.0
        self.last_due = 0.0
        self.segments = 0  # segments that passed a lossy link (loss_pct > 0)
        self.lost_segments = 0

    def schedule(self, nbytes: int, now: float, profile: LinkProfile, direction: str) -> list[Piece]:
        """When the ``nbytes`` read at ``now`` leave, under ``profile`` (the link as it is now; bytes already
        scheduled keep their times). One piece, or two when a segment was lost: the bytes before it, and the rest."""
        bps = profile.bps(direction)
        start = max(now, self.link_free_at)
        if self.medium is not None and bps:
            start = self.medium.reserve(start, nbytes * 8 / bps)

        def sent_at(n: int) -> float:  # the link finished serialising the first n bytes
            return start + (n * 8 / bps if bps else 0.0)

        end = sent_at(nbytes)
        self.link_free_at = end
        latency = profile.one_way_delay_s + (self.rng.uniform(0, profile.jitter_s) if profile.jitter_s else 0.0)
        first_lost, recovered = None, 0.0
        if profile.loss_pct > 0:
            p, rto = profile.loss_pct / 100, profile.rto_s
            n_segments = -(-nbytes // self.mss)
            self.segments += n_segments
            for i in range(n_segments):
                if self.rng.random() < p:
                    self.lost_segments += 1
                    first_lost = i if first_lost is None else first_lost
                    recovered = max(recovered, sent_at(min((i + 1) * self.mss, nbytes)) + latency + rto)
        if first_lost is None:
            return [self._piece(end + latency, 0, nbytes, False)]
        pieces = []
        head = first_lost * self.mss
        if head:
            pieces.append(self._piece(sent_at(head) + latency, 0, head, False))
        pieces.append(self._piece(max(end + latency, recovered), head, nbytes, True))
        return pieces

    def _piece(self, due: float, start: int, end: int, retransmitted: bool) -> Piece:
        due = max(due, self.last_due)
        self.last_due = due
        return Piece(due, start, end, retransmitted)
