"""A documented model, not a sensor: joules = CPU seconds x watts per busy core + GPU seconds x GPU watts
+ idle watts x wall seconds, from a power profile. Every reading says ``estimated: true``.

Each profile starts from a published power budget (a Jetson power mode, a laptop CPU's base power, a phone's
sustained SoC budget) and splits it by one fixed rule: idle = 20 % of the budget, the GPU at full load = 50 %,
every CPU core busy = the remaining 30 % shared by the cores (GPU-less profiles give the GPU share to the cores).
The budget is sourced (docs/energy.md); the split is our assumption, stated there too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from covspec.errors import ConfigError
from covspec.profile.energy.base import Clock, EnergyReading

IDLE_SHARE, GPU_SHARE, CPU_SHARE = 0.20, 0.50, 0.30


@dataclass(frozen=True)
class PowerProfile:
    """A device's power budget and how the model splits it."""

    name: str
    budget_w: float
    cores: int
    has_gpu: bool
    source: str

    @property
    def idle_w(self) -> float:
        return IDLE_SHARE * self.budget_w

    @property
    def gpu_w(self) -> float:
        return GPU_SHARE * self.budget_w if self.has_gpu else 0.0

    @property
    def core_w(self) -> float:
        share = CPU_SHARE if self.has_gpu else CPU_SHARE + GPU_SHARE
        return share * self.budget_w / self.cores


PROFILES: dict[str, PowerProfile] = {
    p.name: p
    for p in (
        PowerProfile("orin-nano-15w", 15.0, 6, True, "NVIDIA Jetson Linux Developer Guide r36.x, Orin power modes"),
        PowerProfile("orin-nano-25w", 25.0, 6, True, "NVIDIA Jetson Linux Developer Guide r36.4+, Orin Nano Super"),
        PowerProfile("orin-nx-25w", 25.0, 8, True, "NVIDIA Jetson Linux Developer Guide r36.x, Orin NX 16GB"),
        PowerProfile("agx-orin-50w", 50.0, 12, True, "NVIDIA Jetson Linux Developer Guide r36.x, AGX Orin 64GB"),
        PowerProfile("phone-soc", 6.0, 8, True, "sustained flagship phone SoC budget, ~5-6 W [verify]"),
        PowerProfile("laptop-cpu-28w", 28.0, 12, False, "Intel ARK, Core i7-1260P processor base power 28 W"),
    )
}


def power_profile(name: str | PowerProfile) -> PowerProfile:
    """The profile called ``name`` (a ``PowerProfile`` passes through)."""
    if isinstance(name, PowerProfile):
        return name
    if name not in PROFILES:
        raise ConfigError(f"unknown power profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def estimate_joules(profile: PowerProfile, cpu_s: float, gpu_s: float, wall_s: float) -> float:
    """The model: ``cpu_s`` busy core-seconds, ``gpu_s`` GPU-busy seconds, ``wall_s`` the window."""
    return cpu_s * profile.core_w + gpu_s * profile.gpu_w + wall_s * profile.idle_w


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class EstimateMeter:
    """The model over a window: CPU seconds from ``cpu_seconds()``, GPU seconds from ``gpu_seconds()`` (a cumulative
    counter the caller keeps; None: the GPU is not counted, and the reading says so)."""

    name = "estimate"
    estimated = True

    def __init__(
        self,
        profile: str | PowerProfile = "orin-nano-15w",
        *,
        cpu_seconds: Callable[[], float] = process_cpu_seconds,
        gpu_seconds: Callable[[], float] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.profile = power_profile(profile)
        self.cpu_seconds = cpu_seconds
        self.gpu_seconds = gpu_seconds
        self.clock = clock
        self._start: tuple[float, float, float] | None = None

    def start(self) -> None:
        gpu = self.gpu_seconds() if self.gpu_seconds else 0.0
        self._start = (self.clock(), self.cpu_seconds(), gpu)

    def stop(self) -> EnergyReading:
        if self._start is None:
            raise RuntimeError("estimate meter was not started")
        t0, c0, g0 = self._start
        self._start = None
        wall = self.clock() - t0
        cpu = self.cpu_seconds() - c0
        gpu = (self.gpu_seconds() - g0) if self.gpu_seconds else 0.0
        p = self.profile
        rails = {"cpu": cpu * p.core_w, "gpu": gpu * p.gpu_w, "idle": wall * p.idle_w}
        notes = [
            f"ESTIMATE from profile {p.name} ({p.budget_w:g} W budget; {p.core_w:.2f} W per busy core, "
            f"{p.gpu_w:.2f} W GPU, {p.idle_w:.2f} W idle): {cpu:.3f} CPU s, {gpu:.3f} GPU s, {wall:.3f} s wall",
        ]
        if self.gpu_seconds is None and p.has_gpu:
            notes.append("GPU time not counted (no gpu_seconds source)")
        return EnergyReading(self.name, sum(rails.values()), wall, 2, rails, estimated=True, notes=tuple(notes))
