"""Jetson INA3221 power rails through sysfs, sampled on a background thread.

Two layouts (docs/energy.md has the sources):
- hwmon, the mainline ``ina3221`` driver (L4T 34+, i.e. JetPack 5 and 6, and 7 on Orin):
  ``/sys/bus/i2c/drivers/ina3221/<bus-addr>/hwmon/hwmon*/in{N}_label`` with ``in{N}_input`` (bus mV) and
  ``curr{N}_input`` (mA); power mW = mV x mA / 1000.
- iio, NVIDIA's ``ina3221x`` driver (L4T 32, i.e. JetPack 4):
  ``/sys/bus/i2c/drivers/ina3221x/<bus-addr>/iio:device*/rail_name_{N}`` with ``in_power{N}_input`` (mW), or
  ``in_voltage{N}_input`` x ``in_current{N}_input``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from covspec.errors import EngineUnavailableError
from covspec.profile.energy.base import Clock, ReadText, SampledMeter, read_sysfs

HWMON_GLOB = "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"
IIO_GLOB = "sys/bus/i2c/drivers/ina3221x/*/iio:device*"
# Rails that are the module's whole input: when one is present it is the total, the others are parts of it.
TOTAL_RAILS = ("VDD_IN", "VIN", "POM_5V_IN")
# Rails already contained in another rail (AGX Orin: DDR core/IO + always-on, inside VIN_SYS_5V0).
CONTAINED_RAILS = ("VDDQ_VDD2_1V8AO",)


@dataclass(frozen=True)
class Rail:
    """One INA3221 channel: its label and how to read its power in mW."""

    name: str
    power_mw: Path | None = None  # read directly (iio in_power)
    volt_mv: Path | None = None  # else bus voltage x current
    curr_ma: Path | None = None

    def read_mw(self, read_text: ReadText) -> float:
        if self.power_mw is not None:
            return float(read_text(self.power_mw))
        assert self.volt_mv is not None and self.curr_ma is not None
        return float(read_text(self.volt_mv)) * float(read_text(self.curr_ma)) / 1000.0


def discover_rails(root: Path = Path("/"), read_text: ReadText = read_sysfs) -> tuple[list[Rail], list[str]]:
    """(rails found, notes on channels skipped). Channels without a label or without the files to compute power
    (a disabled channel, the ``sum of shunt voltages`` pseudo-channel) are skipped and named in the notes."""
    rails: list[Rail] = []
    notes: list[str] = []
    for folder in sorted(root.glob(HWMON_GLOB)):
        for label in sorted(folder.glob("in*_label")):
            index = re.fullmatch(r"in(\d+)_label", label.name)
            if index is None:
                continue
            n = index.group(1)
            name = read_text(label)
            volt, curr = folder / f"in{n}_input", folder / f"curr{n}_input"
            if volt.exists() and curr.exists():
                rails.append(Rail(name, volt_mv=volt, curr_ma=curr))
            else:
                notes.append(f"{folder}: channel {n} ({name}) has no in{n}_input/curr{n}_input, skipped")
    for folder in sorted(root.glob(IIO_GLOB)):
        for label in sorted(folder.glob("rail_name_*")):
            n = label.name.removeprefix("rail_name_")
            name = read_text(label)
            power = folder / f"in_power{n}_input"
            volt, curr = folder / f"in_voltage{n}_input", folder / f"in_current{n}_input"
            if power.exists():
                rails.append(Rail(name, power_mw=power))
            elif volt.exists() and curr.exists():
                rails.append(Rail(name, volt_mv=volt, curr_ma=curr))
            else:
                notes.append(f"{folder}: rail {n} ({name}) has no power, voltage or current file, skipped")
    return rails, notes


def total_rails(names: list[str]) -> list[str]:
    """The rails whose sum is the module's total: a whole-input rail when there is one (Orin NX/Nano VDD_IN, Nano
    POM_5V_IN), else every rail but those contained in another (AGX Orin: GPU_SOC + CPU_CV + SYS_5V0)."""
    for whole in TOTAL_RAILS:
        if whole in names:
            return [whole]
    return [n for n in names if n not in CONTAINED_RAILS]


class JetsonSysfsMeter(SampledMeter):
    """INA3221 rails through sysfs. ``EngineUnavailableError`` when no rail can be read here, saying why."""

    name = "jetson"

    def __init__(
        self,
        interval_s: float = 0.02,
        *,
        root: Path = Path("/"),
        read_text: ReadText = read_sysfs,
        total: list[str] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(interval_s, clock=clock)
        self.read_text = read_text
        self.rails, self._skipped = discover_rails(root, read_text)
        if not self.rails:
            raise EngineUnavailableError(
                "jetson: no INA3221 rail under /"
                + HWMON_GLOB
                + " (JetPack 5+) or /"
                + IIO_GLOB
                + " (JetPack 4)"
                + (f"; {'; '.join(self._skipped)}" if self._skipped else "")
                + "; not a Jetson, or its power monitor is not exposed"
            )
        try:
            self.read_watts()
        except PermissionError as exc:
            raise EngineUnavailableError(
                f"jetson: cannot read the INA3221 rails ({exc}); run as a user who can "
                "read them (they are world-readable on stock JetPack)"
            ) from exc
        names = [r.name for r in self.rails]
        self.total = total if total is not None else total_rails(names)
        missing = [n for n in self.total if n not in names]
        if missing:
            raise EngineUnavailableError(f"jetson: total rails {missing} not found; rails here: {names}")
        self._notes.extend(self._skipped)
        self._notes.append(f"total = {' + '.join(self.total)}; rails: {', '.join(names)}")

    def read_watts(self) -> dict[str, float]:
        return {rail.name: rail.read_mw(self.read_text) / 1000.0 for rail in self.rails}

    def total_of(self, rails_j: Mapping[str, float]) -> float:
        return sum(rails_j.get(n, 0.0) for n in self.total)
