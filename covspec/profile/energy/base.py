"""The one interface every energy meter keeps: ``start()`` then ``stop()`` -> :class:`EnergyReading`.

A meter either reads an energy counter (RAPL, NVML's total energy) or samples power on a background thread and
integrates it with trapezoids (INA3221 rails, tegrastats, battery, NVML's power). Readers of sysfs take a ``root``
(the filesystem root, so tests point them at a fixture tree) and a ``read_text`` function (the one place a file is
opened, so tests can raise ``PermissionError`` there: chmod cannot stop root).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

ReadText = Callable[[Path], str]
Clock = Callable[[], float]


def read_sysfs(path: Path) -> str:
    """The default reader: the file's text, stripped."""
    return path.read_text().strip()


@dataclass(frozen=True)
class EnergyReading:
    """What a meter measured over one start/stop window.

    ``joules`` is None only for the ``none`` meter; ``rails_j`` holds per-rail joules where the meter has rails (they
    need not add up to ``joules``: some rails contain others, see docs/energy.md); ``estimated`` readings come from a
    model, not a sensor, and every printout labels them."""

    meter: str
    joules: float | None
    duration_s: float
    samples: int
    rails_j: Mapping[str, float] = field(default_factory=dict)
    estimated: bool = False
    notes: tuple[str, ...] = ()

    @property
    def mean_watts(self) -> float | None:
        if self.joules is None or self.duration_s <= 0:
            return None
        return self.joules / self.duration_s

    def label(self) -> str:
        """One line for humans; an estimate says so."""
        if self.joules is None:
            return f"energy not measured ({self.meter})"
        tag = " (estimated)" if self.estimated else ""
        return (
            f"{self.joules:.3f} J over {self.duration_s:.3f} s, {self.mean_watts or 0.0:.2f} W mean [{self.meter}]{tag}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "meter": self.meter,
            "joules": self.joules,
            "mean_watts": self.mean_watts,
            "duration_s": self.duration_s,
            "samples": self.samples,
            "rails_j": dict(self.rails_j),
            "estimated": self.estimated,
            "notes": list(self.notes),
        }


@runtime_checkable
class EnergyMeter(Protocol):
    """start() opens a window, stop() closes it and returns what was measured. A Zeus-backed meter (ZeusMonitor's
    begin_window/end_window) fits this protocol as it is; see docs/energy.md."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> EnergyReading: ...


@contextmanager
def measuring(meter: EnergyMeter) -> Iterator[list[EnergyReading]]:
    """``with measuring(m) as out: ...`` leaves the reading in ``out[0]``."""
    out: list[EnergyReading] = []
    meter.start()
    try:
        yield out
    finally:
        out.append(meter.stop())


def integrate_trapezoid(times_s: list[float], watts: list[float]) -> float:
    """Joules under a power curve sampled at ``times_s`` (seconds, increasing) with ``watts`` (same length)."""
    assert len(times_s) == len(watts), (len(times_s), len(watts))
    return sum(
        (t1 - t0) * (w0 + w1) / 2 for t0, t1, w0, w1 in zip(times_s, times_s[1:], watts, watts[1:], strict=False)
    )


def integrate_rails(times_s: list[float], rails_w: list[Mapping[str, float]]) -> dict[str, float]:
    """Per-rail joules; a rail missing from a sample (a read that failed) is left out of the intervals around it."""
    names = sorted({name for sample in rails_w for name in sample})
    out: dict[str, float] = {}
    for name in names:
        points = [(t, s[name]) for t, s in zip(times_s, rails_w, strict=True) if name in s]
        out[name] = integrate_trapezoid([t for t, _ in points], [w for _, w in points])
    return out


class SampledMeter:
    """Samples ``read_watts()`` (rail -> watts) on a background thread every ``interval_s``, once more at start and at
    stop, and integrates each rail. Subclasses say which rails make the total (``total_of``)."""

    name = "sampled"
    estimated = False

    def __init__(self, interval_s: float = 0.05, *, clock: Clock = time.monotonic) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self.clock = clock
        self._times: list[float] = []
        self._samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._notes: list[str] = []

    def read_watts(self) -> dict[str, float]:
        raise NotImplementedError

    def total_of(self, rails_j: Mapping[str, float]) -> float:
        """The window's joules from the per-rail joules (default: their sum)."""
        return sum(rails_j.values())

    def notes(self) -> list[str]:
        return list(self._notes)

    def _sample(self) -> None:
        watts = self.read_watts()
        with self._lock:
            self._times.append(self.clock())
            self._samples.append(watts)

    def _safe_sample(self) -> None:
        try:
            self._sample()
        except (OSError, ValueError) as exc:  # a rail vanished or returned garbage: keep the other samples
            if len(self._notes) < 5:
                self._notes.append(f"a sample failed: {exc}")

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._safe_sample()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} meter already started")
        self._times, self._samples = [], []
        self._stop.clear()
        self._sample()
        self._thread = threading.Thread(target=self._run, name=f"covspec-{self.name}-meter", daemon=True)
        self._thread.start()

    def stop(self) -> EnergyReading:
        if self._thread is None:
            raise RuntimeError(f"{self.name} meter was not started")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._safe_sample()
        with self._lock:
            times, samples = list(self._times), list(self._samples)
        rails_j = integrate_rails(times, samples)
        return EnergyReading(
            meter=self.name,
            joules=self.total_of(rails_j),
            duration_s=times[-1] - times[0],
            samples=len(times),
            rails_j=rails_j,
            estimated=self.estimated,
            notes=tuple(self.notes()),
        )
