"""NVIDIA GPUs through NVML: the total-energy counter (mJ since the driver loaded, Volta and newer) where the GPU
supports it, else power samples (``nvmlDeviceGetPowerUsage``, mW) integrated on a background thread.

``pynvml`` (from the ``nvidia-ml-py`` package) is imported lazily and is not a dependency of covspec; tests inject a
fake module with the same functions.
"""

from __future__ import annotations

import importlib
import time
from types import ModuleType
from typing import Any

from covspec.errors import EngineUnavailableError
from covspec.profile.energy.base import Clock, EnergyReading, SampledMeter


def load_nvml() -> ModuleType:
    """``pynvml``, initialised; ``EngineUnavailableError`` saying why not."""
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError as exc:
        raise EngineUnavailableError(f"nvml: pynvml is not installed ({exc}); pip install nvidia-ml-py") from exc
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no NVIDIA driver here
        raise EngineUnavailableError(f"nvml: nvmlInit failed ({exc}); no NVIDIA driver (Jetson has no NVML)") from exc
    return nvml


class NvmlMeter:
    """One GPU's energy. ``mode`` is ``counter`` when the total-energy counter works, else ``power``."""

    name = "nvml"
    estimated = False

    def __init__(self, index: int = 0, *, nvml: Any = None, interval_s: float = 0.05, clock: Clock = time.monotonic):
        self.nvml = nvml if nvml is not None else load_nvml()
        try:
            self.handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:
            raise EngineUnavailableError(f"nvml: no GPU at index {index} ({exc})") from exc
        self.index = index
        self.clock = clock
        try:
            self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self.mode = "counter"
        except Exception:  # NVMLError_NotSupported before Volta
            self.mode = "power"
        self._sampler = _PowerSampler(self, interval_s, clock) if self.mode == "power" else None
        self._start: tuple[float, float] | None = None

    def _energy_mj(self) -> float:
        return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def start(self) -> None:
        if self._sampler is not None:
            self._sampler.start()
        else:
            self._start = (self.clock(), self._energy_mj())

    def stop(self) -> EnergyReading:
        if self._sampler is not None:
            return self._sampler.stop()
        if self._start is None:
            raise RuntimeError("nvml meter was not started")
        (t0, e0), t1, e1 = self._start, self.clock(), self._energy_mj()
        self._start = None
        joules = (e1 - e0) / 1000.0
        rail = f"gpu{self.index}"
        notes = ("NVML total-energy counter (updates about every 10 ms: shorter windows read 0)",)
        return EnergyReading(self.name, joules, t1 - t0, 2, {rail: joules}, notes=notes)


class _PowerSampler(SampledMeter):
    name = "nvml"

    def __init__(self, meter: NvmlMeter, interval_s: float, clock: Clock) -> None:
        super().__init__(interval_s, clock=clock)
        self.meter = meter
        self._notes.append("NVML power samples integrated (on GPUs after GA100 the value is a ~1 s running average)")

    def read_watts(self) -> dict[str, float]:
        mw = self.meter.nvml.nvmlDeviceGetPowerUsage(self.meter.handle)
        return {f"gpu{self.meter.index}": float(mw) / 1000.0}
