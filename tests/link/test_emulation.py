"""The link model without sockets: serialisation, delay, order, and loss as retransmission delay."""

from __future__ import annotations

import random

import pytest

from covspec.link.emulation import MSS, LinkClock, SharedMedium
from covspec.link.presets import LinkProfile


def test_bytes_serialise_then_travel_and_queue_behind_each_other() -> None:
    clock = LinkClock(random.Random(0))
    link = LinkProfile("t", one_way_delay_s=0.05, uplink_bps=8e6)  # 1 MB/s
    first = clock.schedule(100_000, 10.0, link, "up")
    second = clock.schedule(100_000, 10.0, link, "up")  # read at the same time: waits for the link
    assert [(p.start, p.end) for p in first] == [(0, 100_000)]
    assert first[0].due == pytest.approx(10.0 + 0.1 + 0.05)
    assert second[0].due == pytest.approx(10.0 + 0.2 + 0.05)
    down = clock.schedule(10, 10.0, link, "down")  # unshaped direction of the same profile: only the delay
    assert down[0].due == pytest.approx(max(10.05, second[0].due))  # one clock is one direction; order is kept


def test_a_shorter_delay_never_overtakes() -> None:
    clock = LinkClock(random.Random(0))
    slow = clock.schedule(10, 0.0, LinkProfile("slow", one_way_delay_s=0.2), "up")
    fast = clock.schedule(10, 0.01, LinkProfile("fast", one_way_delay_s=0.001), "up")
    assert fast[0].due == slow[0].due == pytest.approx(0.2)
    later = clock.schedule(10, 0.5, LinkProfile("fast", one_way_delay_s=0.001), "up")
    assert later[0].due == pytest.approx(0.501)


def test_loss_rate_and_head_of_line_blocking() -> None:
    link = LinkProfile("t", one_way_delay_s=0.01, uplink_bps=80e6, loss_pct=10, min_rto_s=0.2)
    clock = LinkClock(random.Random(1))
    now, dues, late = 0.0, [], 0
    for _ in range(2000):
        pieces = clock.schedule(5 * MSS, now, link, "up")
        assert pieces[0].start == 0 and pieces[-1].end == 5 * MSS
        assert all(a.end == b.start for a, b in zip(pieces, pieces[1:], strict=False))
        dues += [p.due for p in pieces]
        late += pieces[-1].retransmitted
        now += 0.001
    assert clock.segments == 10_000
    assert clock.lost_segments / clock.segments == pytest.approx(0.10, abs=0.01)  # 3 sigma is 0.009
    assert late / 2000 == pytest.approx(1 - 0.9**5, abs=0.04)  # a chunk is late if any of its 5 segments is lost
    assert dues == sorted(dues)  # in order, always


def test_a_lost_segment_arrives_one_rto_late_and_holds_the_rest() -> None:
    link = LinkProfile("t", one_way_delay_s=0.05, uplink_bps=8e6, loss_pct=50, min_rto_s=0.2)  # 1 byte per us
    assert link.rto_s == pytest.approx(0.1 + 0.2)
    clock = LinkClock(random.Random(5))
    for _ in range(50):  # find a chunk whose first lost segment is not its first segment
        start = max(100.0, clock.link_free_at)  # when this chunk begins to serialise
        pieces = clock.schedule(4 * MSS, 100.0, link, "up")
        if len(pieces) == 2:
            break
    head, tail = pieces
    assert not head.retransmitted and tail.retransmitted and head.end == tail.start and tail.start % MSS == 0
    assert head.due == pytest.approx(start + head.end * 1e-6 + 0.05)  # the bytes before the loss are on time
    # the lost segment (bytes tail.start .. tail.start + MSS) lands one RTO after it would have
    assert tail.due >= start + (tail.start + MSS) * 1e-6 + 0.05 + 0.3 - 1e-9
    nxt = clock.schedule(10, 100.0, LinkProfile("t", one_way_delay_s=0.05), "up")
    assert nxt[0].due >= tail.due  # head-of-line: later bytes wait for the retransmission


def test_no_loss_draws_nothing_extra() -> None:
    """Without loss the jitter draws are as before: seeded runs of existing presets keep their timings."""
    a, b = random.Random(9), random.Random(9)
    LinkClock(a).schedule(50_000, 0.0, LinkProfile("t", jitter_s=0.01), "up")
    b.uniform(0, 0.01)
    assert a.random() == b.random()


def test_a_shared_medium_serialises_every_connections_bytes_in_turn() -> None:
    """Two connections sending 1000 bytes at once on an 8 kbit/s cell: the second waits for the first (2 s to get
    both through, 1 s each on links of their own); their delay and jitter stay their own."""
    link = LinkProfile("cell", one_way_delay_s=0.05, uplink_bps=8000)
    medium = SharedMedium()
    first, second = (LinkClock(random.Random(i), medium=medium) for i in range(2))
    a, b = first.schedule(1000, 0.0, link, "up"), second.schedule(1000, 0.0, link, "up")
    assert a[0].due == pytest.approx(1.0 + 0.05) and b[0].due == pytest.approx(2.0 + 0.05)
    alone = [LinkClock(random.Random(i)).schedule(1000, 0.0, link, "up")[0].due for i in range(2)]
    assert alone == [pytest.approx(1.05), pytest.approx(1.05)]
    # an idle medium takes bytes at once; the downlink is a medium of its own (here unlimited: no serialisation)
    assert first.schedule(500, 10.0, link, "up")[0].due == pytest.approx(10.5 + 0.05)
    assert second.schedule(500, 10.0, link, "down")[0].due == pytest.approx(10.0 + 0.05)
