"""The pure parts of `covspec profile`: spreads and step buckets, /proc memory, the timed byte counter and the radio,
stage energy windows on the estimate meter with injected clocks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from covspec.profile.energy.estimate import PROFILES, EstimateMeter
from covspec.profile.energy.radio import radio_profile
from covspec.profile.memory import parse_status, peak_rss_kib, rss_kib
from covspec.profile.stage_energy import measure_idle, split_by_time, window_seconds
from covspec.profile.stages import StepRecord, bucket_steps, bucket_width, spread
from covspec.profile.traffic import TimedByteCounter, radio_for_window

STATUS = """Name:\tpython
VmPeak:\t  900000 kB
VmHWM:\t  812345 kB
VmRSS:\t  800001 kB
Threads:\t7
"""


def test_spread_is_median_and_deciles() -> None:
    found = spread(range(1, 12))  # 1..11
    assert (found.median, found.p10, found.p90, found.n) == (6.0, 2.0, 10.0, 11)
    assert spread([]) is None
    assert spread([0.5]).to_dict() == {"median": 0.5, "p10": 0.5, "p90": 0.5, "n": 1}


def test_bucket_width_is_a_power_of_two_covering_the_span() -> None:
    assert bucket_width(10, 15, 12) == 1  # 6 lengths fit 12 buckets of one
    assert bucket_width(100, 199, 12) == 16  # 100 lengths: 100 / 12 -> 8.3 -> 16
    assert bucket_width(5, 5, 12) == 1


def test_steps_bucketed_by_context_and_feeds_left_out() -> None:
    steps = [StepRecord(1, c, c / 1000) for c in range(100, 132)] + [StepRecord(5, 120, 9.0)]
    buckets = bucket_steps(steps, buckets=4)  # 32 lengths in <= 4(+1) buckets of 8, aligned to multiples of 8
    assert [(b["context_lo"], b["context_hi"]) for b in buckets] == [(96, 103), (104, 111), (112, 119), (120, 127),
                                                                      (128, 135)]  # fmt: skip
    assert [b["n"] for b in buckets] == [4, 8, 8, 8, 4]
    assert buckets[1]["median"] == pytest.approx(0.1075)  # contexts 104..111
    assert all(b["p90"] < 1.0 for b in buckets)  # the 5-token feed is not a step
    assert bucket_steps([StepRecord(3, 10, 0.1)]) == []


def test_status_parsed_and_read_from_proc(tmp_path: Path) -> None:
    assert parse_status(STATUS) == {"VmPeak": 900000, "VmHWM": 812345, "VmRSS": 800001}
    fake = tmp_path / "status"
    fake.write_text(STATUS)
    assert rss_kib(fake) == 800001 and peak_rss_kib(fake) == 812345
    assert rss_kib(tmp_path / "absent") is None
    assert peak_rss_kib(tmp_path / "absent") > 0  # getrusage's ru_maxrss stands in
    if Path("/proc/self/status").exists():
        now = rss_kib()
        assert now is not None and 0 < now <= peak_rss_kib()


def test_timed_counter_counts_bytes_and_transfers_in_a_window() -> None:
    counter = TimedByteCounter()
    counter.add("sent", 100)
    counter.add("received", 40)
    assert counter.sent["setup"] == 100 and counter.received["setup"] == 40  # still a ByteCounter
    counter.events = [(10.0, "sent", 300), (10.01, "received", 50), (10.02, "sent", 30), (12.0, "sent", 1000)]
    sent, received, times = counter.window(9.0, 11.0)
    assert (sent, received, times) == (330, 50, [10.0, 10.01, 10.02])
    wifi = radio_profile("wifi")
    one = radio_for_window(counter, "wifi", 9.0, 11.0)
    assert one.transfers == 1 and one.estimated
    assert one.bytes_j == pytest.approx(330 * wifi.joules_per_byte("up") + 50 * wifi.joules_per_byte("down"))
    both = radio_for_window(counter, "wifi", 9.0, 13.0)  # 1.98 s apart, beyond Wi-Fi's 0.24 s tail
    assert both.transfers == 2 and both.overhead_j == pytest.approx(2 * wifi.transfer_overhead_j)
    assert radio_for_window(counter, "lte", 9.0, 13.0).transfers == 1  # inside LTE's 11.6 s tail


def test_idle_window_on_the_estimate_meter_is_its_idle_watts() -> None:
    profile = PROFILES["orin-nano-15w"]
    meter = EstimateMeter(profile, cpu_seconds=lambda: 7.0)  # no CPU time passes: only idle power
    window = measure_idle(meter, 0.05)
    assert window.reading.estimated and window.calls == 1
    assert window.reading.mean_watts == pytest.approx(profile.idle_w)
    assert window.joules_per_call == pytest.approx(profile.idle_w * window.reading.duration_s)


def test_window_length_and_time_shares() -> None:
    class Sampled:
        name, interval_s = "sampled", 0.2

    assert window_seconds(Sampled(), 0.5) == pytest.approx(2.0)  # ten sampling intervals
    assert window_seconds(EstimateMeter(), 0.5) == 0.5
    assert split_by_time(1.0, {"a": 3.0, "b": 1.0}) == {"a": 0.75, "b": 0.25}
    assert split_by_time(1.0, {"a": 0.0}) == {"a": 0.0}


def test_estimate_meter_with_process_time_sees_busy_milliseconds() -> None:
    """os.times ticks in 10 ms; the profile's estimate reads time.process_time so a few ms of work count."""
    meter = EstimateMeter("laptop-cpu-28w", cpu_seconds=time.process_time)
    meter.start()
    deadline = time.process_time() + 0.003
    while time.process_time() < deadline:
        pass
    reading = meter.stop()
    assert reading.rails_j["cpu"] > 0
