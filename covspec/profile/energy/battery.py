"""Battery draw through ``/sys/class/power_supply/*/`` (Linux laptops, Android over adb or on the device).

Each supply of ``type`` Battery gives ``power_now`` (µW) or ``current_now`` (µA) x ``voltage_now`` (µV). Vendors
differ in the sign of current (Android: negative while discharging on many devices), so magnitudes are used. The
reading is the device's draw only while the battery is the supply: ``status`` must be ``Discharging``; otherwise
the reading carries a warning (and ``auto`` skips this meter). Fuel gauges update every 0.25 s to a few seconds:
measure windows of several seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from covspec.errors import EngineUnavailableError
from covspec.profile.energy.base import Clock, ReadText, SampledMeter, read_sysfs

log = logging.getLogger(__name__)
POWER_SUPPLY = "sys/class/power_supply"


@dataclass(frozen=True)
class Battery:
    path: Path
    name: str
    uses_power_now: bool

    def read_w(self, read_text: ReadText) -> float:
        if self.uses_power_now:
            return abs(float(read_text(self.path / "power_now"))) / 1e6
        current_a = abs(float(read_text(self.path / "current_now"))) / 1e6
        return current_a * abs(float(read_text(self.path / "voltage_now"))) / 1e6

    def status(self, read_text: ReadText) -> str:
        return read_text(self.path / "status") if (self.path / "status").exists() else "Unknown"


def discover_batteries(root: Path = Path("/"), read_text: ReadText = read_sysfs) -> tuple[list[Battery], list[str]]:
    """(batteries that report power, notes on supplies skipped)."""
    found, notes = [], []
    for folder in sorted((root / POWER_SUPPLY).glob("*")):
        kind = read_text(folder / "type") if (folder / "type").exists() else ""
        if kind != "Battery":
            continue
        if (folder / "power_now").exists():
            found.append(Battery(folder, folder.name, True))
        elif (folder / "current_now").exists() and (folder / "voltage_now").exists():
            found.append(Battery(folder, folder.name, False))
        else:
            notes.append(f"{folder.name}: no power_now, nor current_now with voltage_now")
    return found, notes


class BatteryMeter(SampledMeter):
    """Sum of every battery's draw. ``require_discharging``: refuse (instead of warn) when not discharging."""

    name = "battery"

    def __init__(
        self,
        interval_s: float = 0.5,
        *,
        root: Path = Path("/"),
        read_text: ReadText = read_sysfs,
        require_discharging: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(interval_s, clock=clock)
        self.read_text = read_text
        self.batteries, skipped = discover_batteries(root, read_text)
        if not self.batteries:
            why = f" ({'; '.join(skipped)})" if skipped else ""
            raise EngineUnavailableError(f"battery: no Battery supply with power readings under /{POWER_SUPPLY}{why}")
        try:
            self.read_watts()
            statuses = {b.name: b.status(read_text) for b in self.batteries}
        except PermissionError as exc:
            raise EngineUnavailableError(f"battery: cannot read {exc.filename or exc}") from exc
        self._notes.extend(skipped)
        not_draining = {n: s for n, s in statuses.items() if s != "Discharging"}
        if not_draining:
            msg = (
                f"battery status {not_draining}: not discharging, so the reading is not the device's draw "
                "(unplug the charger)"
            )
            if require_discharging:
                raise EngineUnavailableError(f"battery: {msg}")
            log.warning(msg)
            self._notes.append(msg)

    def read_watts(self) -> dict[str, float]:
        return {b.name: b.read_w(self.read_text) for b in self.batteries}
