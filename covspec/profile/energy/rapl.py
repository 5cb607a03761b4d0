"""Intel/AMD RAPL through powercap: ``/sys/class/powercap/intel-rapl:N[:M]/energy_uj`` (µJ counters).

Counters wrap at ``max_energy_range_uj``; a background thread reads them every ``poll_s`` so no zone wraps twice
between reads. ``joules`` is the sum of the package zones (``intel-rapl:N``) and the DRAM subzones (DRAM is not
part of the package domain); ``core``/``uncore`` subzones are inside their package and reported as rails only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from covspec.errors import EngineUnavailableError
from covspec.profile.energy.base import Clock, EnergyReading, ReadText, read_sysfs

POWERCAP = "sys/class/powercap"
PERMISSION_HINT = (
    "energy_uj is readable by root only since the PLATYPUS fix (CVE-2020-8694; Linux 5.10 and the stable kernels it "
    "was backported to). Grant read access until reboot with `sudo chmod a+r /sys/class/powercap/intel-rapl:*/"
    "energy_uj /sys/class/powercap/intel-rapl:*:*/energy_uj`, persistently with a udev rule or systemd-tmpfiles "
    "entry doing the same, or run as root"
)


@dataclass(frozen=True)
class Zone:
    """One powercap zone: ``kind`` as its ``name`` file says (``package-0``, ``dram``, ``core``, ``psys``), ``rail``
    the name it is reported under (a subzone keeps its package: ``package-0/dram``)."""

    path: Path
    kind: str
    rail: str
    top_level: bool
    max_uj: int

    @property
    def counted(self) -> bool:
        """Whether this zone adds to the total (packages and DRAM; not psys, which covers the whole platform)."""
        return self.kind.startswith("package") if self.top_level else self.kind == "dram"


def wrapped_delta(before_uj: int, after_uj: int, max_uj: int) -> int:
    """Energy between two counter reads, allowing one wrap-around at ``max_uj``."""
    return after_uj - before_uj if after_uj >= before_uj else after_uj + max_uj - before_uj


def discover_zones(root: Path = Path("/"), read_text: ReadText = read_sysfs) -> list[Zone]:
    """Every powercap RAPL zone with an energy counter, packages before their subzones."""
    zones = []
    base = root / POWERCAP
    for folder in sorted(base.glob("intel-rapl:*")):
        if not (folder / "energy_uj").exists():
            continue
        parts = folder.name.removeprefix("intel-rapl:").split(":")
        kind = read_text(folder / "name") if (folder / "name").exists() else folder.name
        top = len(parts) == 1
        rail = kind
        if not top:
            parent = base / f"intel-rapl:{parts[0]}" / "name"
            rail = f"{read_text(parent) if parent.exists() else 'intel-rapl:' + parts[0]}/{kind}"
        zones.append(Zone(folder, kind, rail, top, int(read_text(folder / "max_energy_range_uj"))))
    return zones


class RaplMeter:
    """Package (and DRAM) energy from the RAPL counters. ``EngineUnavailableError`` when there is no powercap RAPL
    zone here or its counters cannot be read (with how to grant access)."""

    name = "rapl"
    estimated = False

    def __init__(
        self,
        poll_s: float = 5.0,
        *,
        root: Path = Path("/"),
        read_text: ReadText = read_sysfs,
        clock: Clock = time.monotonic,
    ) -> None:
        self.read_text = read_text
        self.clock = clock
        self.poll_s = poll_s
        self.zones = discover_zones(root, read_text)
        if not self.zones:
            raise EngineUnavailableError(
                f"rapl: no /{POWERCAP}/intel-rapl:* zone with energy_uj (not an Intel/AMD CPU with the powercap "
                "intel_rapl driver loaded, or inside a VM/container without it)"
            )
        if not any(z.counted for z in self.zones):
            raise EngineUnavailableError(f"rapl: no package zone among {[z.rail for z in self.zones]}")
        self._read_all()  # fail now, with the hint, rather than at start()
        self._last: dict[Path, int] = {}
        self._acc: dict[Path, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._reads = 0

    def _read_all(self) -> dict[Path, int]:
        try:
            return {z.path: int(self.read_text(z.path / "energy_uj")) for z in self.zones}
        except PermissionError as exc:
            raise EngineUnavailableError(f"rapl: {exc}. {PERMISSION_HINT}") from exc

    def _poll(self) -> None:
        now = self._read_all()
        with self._lock:
            for z in self.zones:
                self._acc[z.path] += wrapped_delta(self._last[z.path], now[z.path], z.max_uj)
            self._last = now
            self._reads += 1

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._poll()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("rapl meter already started")
        self._t0 = self.clock()
        self._last = self._read_all()
        self._acc = {z.path: 0 for z in self.zones}
        self._reads = 1
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="covspec-rapl-meter", daemon=True)
        self._thread.start()

    def stop(self) -> EnergyReading:
        if self._thread is None:
            raise RuntimeError("rapl meter was not started")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._poll()
        duration = self.clock() - self._t0
        rails_j = {z.rail: self._acc[z.path] / 1e6 for z in self.zones}
        joules = sum(self._acc[z.path] for z in self.zones if z.counted) / 1e6
        counted = [z.rail for z in self.zones if z.counted]
        notes = (f"total = {' + '.join(counted)} (core/uncore are inside their package; psys is the platform)",)
        return EnergyReading(self.name, joules, duration, self._reads, rails_j, notes=notes)
