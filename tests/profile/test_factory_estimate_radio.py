"""The factory's auto choice and its reasons, the estimate's arithmetic, the radio model."""

from __future__ import annotations

from pathlib import Path

import pytest

from covspec.errors import ConfigError, EngineUnavailableError
from covspec.profile.energy import factory
from covspec.profile.energy.estimate import PROFILES, EstimateMeter, estimate_joules
from covspec.profile.energy.factory import MeterKind, make_meter, probe_meters
from covspec.profile.energy.radio import count_transfers, radio_energy, radio_profile
from tests.profile import fixtures as fx


@pytest.fixture(autouse=True)
def no_real_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML reads the real machine whatever the root: keep a GPU host's answer out of these tests."""

    def unavailable(root: Path, **kw: object) -> None:
        raise EngineUnavailableError("nvml: disabled in this test")

    monkeypatch.setitem(factory.BUILDERS, MeterKind.NVML, unavailable)


def test_auto_picks_the_first_meter_that_works(tmp_path: Path) -> None:
    assert make_meter("auto", root=tmp_path).name == "estimate"
    fx.battery_tree(tmp_path, status="Charging")
    assert make_meter("auto", root=tmp_path).name == "estimate"  # a charging battery says nothing of the draw
    fx.battery_tree(tmp_path, status="Discharging")
    assert make_meter("auto", root=tmp_path).name == "battery"
    fx.rapl_tree(tmp_path)
    assert make_meter("auto", root=tmp_path).name == "rapl"
    fx.orin_nx_jp6(tmp_path)
    assert make_meter(MeterKind.AUTO, root=tmp_path).name == "jetson"


def test_probe_says_why_each_meter_is_not_usable(tmp_path: Path) -> None:
    fx.battery_tree(tmp_path, status="Full")
    probe = probe_meters(root=tmp_path)
    assert list(probe) == ["jetson", "nvml", "rapl", "battery", "estimate"]
    assert "no INA3221 rail" in probe["jetson"]
    assert "disabled in this test" in probe["nvml"]
    assert "intel-rapl" in probe["rapl"]
    assert "Full" in probe["battery"] and "not discharging" in probe["battery"]
    assert probe["estimate"].startswith("ok")


def test_explicit_kinds_and_none(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailableError, match="rapl"):
        make_meter("rapl", root=tmp_path)
    with pytest.raises(ConfigError, match="unknown energy meter 'joulemeter'"):
        make_meter("joulemeter")
    meter = make_meter("none")
    meter.start()
    reading = meter.stop()
    assert reading.joules is None and reading.mean_watts is None and "not measured" in reading.label()
    assert reading.to_dict()["joules"] is None


def test_estimate_arithmetic_and_labels() -> None:
    p = PROFILES["orin-nano-15w"]
    assert (p.core_w, p.gpu_w, p.idle_w) == pytest.approx((0.75, 7.5, 3.0))  # 30 % / 6 cores, 50 %, 20 % of 15 W
    assert estimate_joules(p, cpu_s=2.0, gpu_s=1.0, wall_s=4.0) == pytest.approx(1.5 + 7.5 + 12.0)
    laptop = PROFILES["laptop-cpu-28w"]
    assert laptop.gpu_w == 0.0 and laptop.core_w == pytest.approx(0.8 * 28 / 12)

    ticks = iter([10.0, 14.0])
    cpu = iter([100.0, 102.0])
    gpu = iter([50.0, 51.0])
    meter = EstimateMeter(p, cpu_seconds=lambda: next(cpu), gpu_seconds=lambda: next(gpu), clock=lambda: next(ticks))
    meter.start()
    reading = meter.stop()
    assert reading.estimated and reading.to_dict()["estimated"] is True
    assert reading.joules == pytest.approx(21.0) and reading.duration_s == 4.0
    assert reading.rails_j == pytest.approx({"cpu": 1.5, "gpu": 7.5, "idle": 12.0})
    assert "(estimated)" in reading.label() and reading.notes[0].startswith("ESTIMATE")
    with pytest.raises(ConfigError, match="unknown power profile"):
        EstimateMeter("toaster")


def test_radio_per_byte_and_per_transfer() -> None:
    lte = radio_profile("lte")
    up_j_per_byte = (438.39 + 1288.04 / 6.0) / 1000 * 8 / 1e6  # mW/Mbps = mJ/Mbit, beta over the nominal time
    assert lte.joules_per_byte("up") == pytest.approx(up_j_per_byte)
    overhead = 0.2601 * 1.2107 + 11.576 * 1.060  # promotion + tail, J
    energy = radio_energy("lte", up_bytes=1_000_000, down_bytes=2_000_000, transfers=3)
    down = 2_000_000 * (51.97 + 1288.04 / 13.0) / 1000 * 8 / 1e6
    assert energy.bytes_j == pytest.approx(1_000_000 * up_j_per_byte + down)
    assert energy.overhead_j == pytest.approx(3 * overhead)
    assert energy.joules == pytest.approx(energy.bytes_j + energy.overhead_j) and energy.estimated
    wifi = radio_energy("wifi", 1_000_000, 2_000_000, 3)
    assert wifi.joules < energy.joules / 5  # the LTE tail dominates small transfers
    assert radio_profile("5g").verified is False and radio_energy("5g", 1, 1, 1).to_dict()["verified_figures"] is False
    with pytest.raises(ConfigError):
        radio_profile("bluetooth")
    with pytest.raises(ValueError):
        radio_energy("lte", -1, 0, 0)


def test_count_transfers_splits_bursts_at_the_tail_time() -> None:
    assert count_transfers([], 11.576) == 0
    assert count_transfers([0.0, 1.0, 2.0, 20.0, 21.0, 40.0], 11.576) == 3
    assert count_transfers([0.0, 0.1, 0.5], radio_profile("wifi").tail_s) == 2
