"""tegrastats lines of several JetPack releases, the tegrastats meter over a real subprocess, and NVML through a fake
module (the library boundary: pynvml is not installed in CI)."""

from __future__ import annotations

import sys
import time

import pytest

from covspec.errors import EngineUnavailableError
from covspec.profile.energy.base import integrate_rails, integrate_trapezoid
from covspec.profile.energy.nvml import NvmlMeter
from covspec.profile.energy.tegrastats import TegrastatsMeter, parse_tegrastats_line

# Captured-format samples (values made up, layout per release; see docs/energy.md)
JP4_NANO = (
    "RAM 1882/3964MB (lfb 147x4MB) SWAP 0/1982MB (cached 0MB) CPU [9%@1479,4%@1479,3%@1479,2%@1479] "
    "EMC_FREQ 3%@1600 GR3D_FREQ 0%@921 APE 25 PLL@24C CPU@26.5C PMIC@100C GPU@25C AO@33C thermal@25.75C "
    "POM_5V_IN 2160/2160 POM_5V_GPU 40/40 POM_5V_CPU 562/562"
)
JP4_XAVIER_NX = (
    "RAM 2417/7764MB (lfb 1003x4MB) SWAP 0/3882MB (cached 0MB) CPU [2%@1190,1%@1190,off,off,off,off] "
    "EMC_FREQ 0% GR3D_FREQ 0% AO@36C GPU@35.5C PMIC@100C AUX@36C CPU@37C thermal@35.9C "
    "VDD_IN 4173/4173 VDD_CPU_GPU_CV 612/612 VDD_SOC 1225/1225"
)
JP5_ORIN_NX = (
    "08-14-2024 10:01:02 RAM 3150/15389MB (lfb 2650x4MB) SWAP 0/7694MB (cached 0MB) CPU [1%@729,0%@729,0%@729,"
    "0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[305,0] VIC_FREQ 115 APE 200 "
    "cpu@45.25C soc2@43.875C soc0@44.062C gpu@43.5C tj@45.25C soc1@43.875C "
    "VDD_IN 5021mW/5021mW VDD_CPU_GPU_CV 596mW/596mW VDD_SOC 1430mW/1430mW"
)
JP6_AGX_ORIN = (
    "RAM 4722/62841MB (lfb 13x4MB) SWAP 0/31421MB (cached 0MB) CPU [23%@2201,12%@2201,off,off,off,off,off,off,"
    "off,off,off,off] EMC_FREQ 2%@3199 GR3D_FREQ 10%@[1300,1300] NVENC off NVDEC off cpu@52.9C gpu@47.6C "
    "tj@52.9C VDD_GPU_SOC 5139mW/5139mW VDD_CPU_CV 3268mW/3268mW VIN_SYS_5V0 5500mW/5500mW "
    "VDDQ_VDD2_1V8AO 805mW/805mW"
)
THREE_VALUES = (
    "RAM 4000/62841MB GR3D_FREQ 12%@[1300,1300] VDD_GPU_SOC 4000mW/3900mW/6100mW VIN_SYS_5V0 5000mW/5000mW/5200mW"
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (JP4_NANO, {"POM_5V_IN": 2160, "POM_5V_GPU": 40, "POM_5V_CPU": 562}),
        (JP4_XAVIER_NX, {"VDD_IN": 4173, "VDD_CPU_GPU_CV": 612, "VDD_SOC": 1225}),
        (JP5_ORIN_NX, {"VDD_IN": 5021, "VDD_CPU_GPU_CV": 596, "VDD_SOC": 1430}),
        (JP6_AGX_ORIN, {"VDD_GPU_SOC": 5139, "VDD_CPU_CV": 3268, "VIN_SYS_5V0": 5500, "VDDQ_VDD2_1V8AO": 805}),
        (THREE_VALUES, {"VDD_GPU_SOC": 4000, "VIN_SYS_5V0": 5000}),
        ("RAM 1882/3964MB SWAP 0/1982MB IRAM 0/252kB(lfb 252kB)", {}),
    ],
)
def test_parse_tegrastats_line(line: str, expected: dict[str, int]) -> None:
    assert parse_tegrastats_line(line) == {k: float(v) for k, v in expected.items()}


def test_tegrastats_meter_over_a_real_subprocess() -> None:
    script = f"import time\nfor _ in range(200):\n    print({JP5_ORIN_NX!r}, flush=True)\n    time.sleep(0.02)\n"
    meter = TegrastatsMeter(command=[sys.executable, "-c", script])
    meter.start()
    time.sleep(0.5)
    reading = meter.stop()
    assert reading.samples >= 2
    assert set(reading.rails_j) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    assert 0 < reading.joules <= 5.021 * reading.duration_s + 1e-9  # VDD_IN only: the others are inside it
    assert reading.joules == pytest.approx(reading.rails_j["VDD_IN"])


def test_tegrastats_missing_and_a_window_too_short() -> None:
    meter = TegrastatsMeter(command=[sys.executable, "-c", "pass"])
    meter.start()
    reading = meter.stop()
    assert reading.joules == 0.0 and "too short" in reading.notes[0]


def test_trapezoid_and_rails_integration_math() -> None:
    assert integrate_trapezoid([0.0, 1.0, 2.0], [0.0, 10.0, 20.0]) == pytest.approx(20.0)
    assert integrate_trapezoid([5.0], [3.0]) == 0.0
    rails = integrate_rails([0.0, 1.0, 2.0, 3.0], [{"a": 1.0, "b": 2.0}, {"a": 1.0}, {"a": 1.0, "b": 2.0}, {"a": 3.0}])
    assert rails == pytest.approx({"a": 4.0, "b": 4.0})  # b's failed read: its interval spans the gap


class NotSupported(Exception):
    pass


class FakeNvml:
    """The pynvml calls NvmlMeter makes; ``energy_mj`` None means the counter is not supported (pre-Volta)."""

    def __init__(self, energy_mj: list[int] | None, power_mw: int = 100_000) -> None:
        self.energy_mj = energy_mj
        self.power_mw = power_mw

    def nvmlInit(self) -> None:  # noqa: N802 (the library's names)
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:  # noqa: N802
        if index != 0:
            raise NotSupported("Invalid Argument")
        return "gpu0"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:  # noqa: N802
        if self.energy_mj is None:
            raise NotSupported("Not Supported")
        return self.energy_mj.pop(0) if len(self.energy_mj) > 1 else self.energy_mj[0]

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:  # noqa: N802
        return self.power_mw


def test_nvml_energy_counter() -> None:
    meter = NvmlMeter(nvml=FakeNvml([5_000_000, 5_000_000, 5_250_000]))  # probe, start, stop
    assert meter.mode == "counter"
    meter.start()
    reading = meter.stop()
    assert reading.joules == pytest.approx(250.0) and reading.rails_j == {"gpu0": pytest.approx(250.0)}


def test_nvml_power_sampling_when_the_counter_is_not_supported() -> None:
    meter = NvmlMeter(nvml=FakeNvml(None, power_mw=100_000), interval_s=0.01)
    assert meter.mode == "power"
    meter.start()
    time.sleep(0.1)
    reading = meter.stop()
    assert reading.samples >= 3
    assert reading.joules == pytest.approx(100.0 * reading.duration_s)


def test_nvml_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EngineUnavailableError, match="no GPU at index 1"):
        NvmlMeter(1, nvml=FakeNvml([0]))
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as if not installed
    with pytest.raises(EngineUnavailableError, match="nvidia-ml-py"):
        NvmlMeter()
