"""Jetson INA3221 (JetPack 4/5/6 layouts), RAPL and battery meters on fixture sysfs trees."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from covspec.errors import EngineUnavailableError
from covspec.profile.energy.battery import BatteryMeter
from covspec.profile.energy.jetson import JetsonSysfsMeter, total_rails
from covspec.profile.energy.rapl import RaplMeter, wrapped_delta
from tests.profile import fixtures as fx


def _window(meter, seconds: float = 0.15):
    meter.start()
    time.sleep(seconds)
    return meter.stop()


def test_jetson_jp6_orin_nx_total_is_vdd_in_and_the_shunt_sum_channel_is_skipped(tmp_path: Path) -> None:
    fx.orin_nx_jp6(tmp_path)
    meter = JetsonSysfsMeter(interval_s=0.01, root=tmp_path)
    assert meter.total == ["VDD_IN"]
    reading = _window(meter)
    assert reading.samples >= 3
    assert reading.joules == pytest.approx(5.0 * reading.duration_s)  # 5000 mV x 1000 mA, constant
    assert reading.rails_j["VDD_SOC"] == pytest.approx(1.5 * reading.duration_s)
    assert reading.mean_watts == pytest.approx(5.0)
    assert any("channel 7" in n for n in reading.notes)
    assert not reading.estimated


def test_jetson_jp5_agx_orin_sums_the_three_rails_and_leaves_out_the_contained_one(tmp_path: Path) -> None:
    fx.agx_orin_jp5(tmp_path)
    meter = JetsonSysfsMeter(interval_s=0.01, root=tmp_path)
    assert sorted(meter.total) == ["VDD_CPU_CV", "VDD_GPU_SOC", "VIN_SYS_5V0"]
    reading = _window(meter)
    assert reading.joules == pytest.approx((5.0 + 3.0 + 5.5) * reading.duration_s)
    assert "VDDQ_VDD2_1V8AO" in reading.rails_j  # reported, not added


def test_jetson_jp4_nano_iio_layout_reads_power_directly(tmp_path: Path) -> None:
    fx.nano_jp4(tmp_path)
    meter = JetsonSysfsMeter(interval_s=0.01, root=tmp_path)
    assert meter.total == ["POM_5V_IN"]
    assert meter.read_watts() == {"POM_5V_IN": 2.0, "POM_5V_GPU": 0.04, "POM_5V_CPU": 0.56}


def test_jetson_a_rail_vanishing_mid_window_keeps_the_samples_before_it(tmp_path: Path) -> None:
    hw = fx.orin_nx_jp6(tmp_path)
    meter = JetsonSysfsMeter(interval_s=0.01, root=tmp_path)
    meter.start()
    time.sleep(0.05)
    (hw / "curr3_input").unlink()
    time.sleep(0.05)
    reading = meter.stop()
    assert any("a sample failed" in n for n in reading.notes)
    assert reading.joules > 0


def test_jetson_unavailable_says_where_it_looked_and_why(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailableError, match="ina3221/.*JetPack 5.*ina3221x.*JetPack 4"):
        JetsonSysfsMeter(root=tmp_path)
    fx.orin_nx_jp6(tmp_path)
    with pytest.raises(EngineUnavailableError, match="cannot read the INA3221 rails"):
        JetsonSysfsMeter(root=tmp_path, read_text=fx.denying("curr1_input"))
    with pytest.raises(EngineUnavailableError, match="total rails"):
        JetsonSysfsMeter(root=tmp_path, total=["VDD_GPU_SOC"])


def test_total_rails_rule() -> None:
    assert total_rails(["VDD_CPU_GPU_CV", "VDD_IN", "VDD_SOC"]) == ["VDD_IN"]
    assert total_rails(["VDD_GPU", "VDD_CPU_SOC_MSS", "VIN"]) == ["VIN"]  # Thor
    assert total_rails(["VDD_GPU_SOC", "VDDQ_VDD2_1V8AO"]) == ["VDD_GPU_SOC"]


def test_rapl_sums_package_and_dram_not_core_or_psys(tmp_path: Path) -> None:
    fx.rapl_tree(tmp_path)
    meter = RaplMeter(poll_s=3600, root=tmp_path)
    meter.start()
    fx.set_counter(tmp_path, "intel-rapl:0", 3_000_000)  # +2 J
    fx.set_counter(tmp_path, "intel-rapl:0:1", 1_500_000)  # +1 J
    fx.set_counter(tmp_path, "intel-rapl:0:0", 1_400_000)  # +1 J, inside the package
    fx.set_counter(tmp_path, "intel-rapl:1", 19_000_000)  # +10 J, the platform
    reading = meter.stop()
    assert reading.joules == pytest.approx(3.0)
    assert reading.rails_j == pytest.approx(
        {"package-0": 2.0, "package-0/core": 1.0, "package-0/dram": 1.0, "psys": 10.0}
    )


def test_rapl_counter_wrap_around(tmp_path: Path) -> None:
    fx.rapl_tree(tmp_path, package_uj=9_500_000, max_uj=10_000_000)
    meter = RaplMeter(poll_s=3600, root=tmp_path)
    meter.start()
    fx.set_counter(tmp_path, "intel-rapl:0", 500_000)  # wrapped: 0.5 J to the top, 0.5 J after
    assert meter.stop().rails_j["package-0"] == pytest.approx(1.0)
    assert wrapped_delta(10, 30, 100) == 20 and wrapped_delta(90, 10, 100) == 20


def test_rapl_permission_error_says_how_to_grant_access(tmp_path: Path) -> None:
    fx.rapl_tree(tmp_path)
    with pytest.raises(EngineUnavailableError, match=r"(?s)Permission denied.*CVE-2020-8694.*chmod a\+r"):
        RaplMeter(root=tmp_path, read_text=fx.denying("energy_uj"))
    with pytest.raises(EngineUnavailableError, match="no /sys/class/powercap/intel-rapl"):
        RaplMeter(root=tmp_path / "empty")


def test_battery_current_times_voltage_and_power_now(tmp_path: Path) -> None:
    fx.battery_tree(tmp_path)
    meter = BatteryMeter(interval_s=0.01, root=tmp_path)
    assert meter.read_watts() == {"BAT0": pytest.approx(6.0)}  # |-0.5 A| x 12 V; the Mains supply is ignored
    reading = _window(meter)
    assert reading.joules == pytest.approx(6.0 * reading.duration_s)
    assert not any("not discharging" in n for n in reading.notes)
    fx.battery_tree(tmp_path, power_uw=7_000_000)
    assert BatteryMeter(root=tmp_path).read_watts() == {"BAT0": pytest.approx(7.0)}


def test_battery_while_charging_warns_or_refuses(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fx.battery_tree(tmp_path, status="Charging")
    meter = BatteryMeter(root=tmp_path)
    assert any("not the device's draw" in n for n in meter.notes())
    assert "not discharging" in caplog.text
    with pytest.raises(EngineUnavailableError, match="Charging"):
        BatteryMeter(root=tmp_path, require_discharging=True)
    with pytest.raises(EngineUnavailableError, match="no Battery supply"):
        BatteryMeter(root=tmp_path / "none")
