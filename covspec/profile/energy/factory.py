"""Choosing a meter: ``--energy auto|jetson|nvml|rapl|battery|estimate|none``.

``auto`` tries, in order, jetson (INA3221 sysfs, then tegrastats), nvml, rapl, battery (only while discharging),
and falls back to estimate, which always works; :func:`probe_meters` says for each why it is or is not usable here.
The order puts whole-device sensors first on the boards they exist on (a Jetson has no NVML, a GPU server has no
battery); RAPL before battery because on a plugged-in laptop the battery says nothing.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from covspec.errors import ConfigError, EngineUnavailableError
from covspec.profile.energy.base import EnergyMeter, EnergyReading
from covspec.profile.energy.battery import BatteryMeter
from covspec.profile.energy.estimate import EstimateMeter
from covspec.profile.energy.jetson import JetsonSysfsMeter
from covspec.profile.energy.nvml import NvmlMeter
from covspec.profile.energy.rapl import RaplMeter
from covspec.profile.energy.tegrastats import TegrastatsMeter


class MeterKind(str, enum.Enum):
    AUTO = "auto"
    JETSON = "jetson"
    NVML = "nvml"
    RAPL = "rapl"
    BATTERY = "battery"
    ESTIMATE = "estimate"
    NONE = "none"


AUTO_ORDER = (MeterKind.JETSON, MeterKind.NVML, MeterKind.RAPL, MeterKind.BATTERY, MeterKind.ESTIMATE)


class NoMeter:
    """``--energy none``: times the window, measures nothing (``joules`` is None)."""

    name = "none"
    estimated = False

    def __init__(self) -> None:
        self._t0: float | None = None

    def start(self) -> None:
        self._t0 = time.monotonic()

    def stop(self) -> EnergyReading:
        t0, self._t0 = self._t0, None
        if t0 is None:
            raise RuntimeError("none meter was not started")
        return EnergyReading("none", None, time.monotonic() - t0, 0, notes=("energy not measured (--energy none)",))


def _jetson(root: Path, **kw: Any) -> EnergyMeter:
    try:
        return JetsonSysfsMeter(root=root, **kw)
    except EngineUnavailableError as sysfs_error:
        if root != Path("/"):  # a fixture tree: tegrastats would read the real board
            raise
        try:
            return TegrastatsMeter()
        except EngineUnavailableError as exc:
            raise EngineUnavailableError(f"{sysfs_error.message}; {exc.message}") from exc


# name -> builder(root, **options). A Zeus-backed NVML/RAPL meter is one more entry here (docs/energy.md).
BUILDERS: dict[MeterKind, Callable[..., EnergyMeter]] = {
    MeterKind.JETSON: _jetson,
    MeterKind.NVML: lambda root, **kw: NvmlMeter(**kw),
    MeterKind.RAPL: lambda root, **kw: RaplMeter(root=root, **kw),
    MeterKind.BATTERY: lambda root, **kw: BatteryMeter(root=root, **kw),
    MeterKind.ESTIMATE: lambda root, **kw: EstimateMeter(**kw),
    MeterKind.NONE: lambda root, **kw: NoMeter(),
}


def make_meter(
    kind: str | MeterKind = MeterKind.AUTO,
    *,
    root: Path = Path("/"),
    options: dict[MeterKind, dict[str, Any]] | None = None,
) -> EnergyMeter:
    """The meter asked for, or for ``auto`` the first that works here. An explicit kind that cannot work raises
    ``EngineUnavailableError`` saying why; ``options[kind]`` are keyword arguments for that meter."""
    try:
        kind = MeterKind(kind)
    except ValueError as exc:
        raise ConfigError(
            f"unknown energy meter {kind!r}; choose one of {', '.join(k.value for k in MeterKind)}"
        ) from exc
    options = options or {}
    if kind is not MeterKind.AUTO:
        return BUILDERS[kind](root, **options.get(kind, {}))
    for candidate in AUTO_ORDER:
        try:
            return _auto_build(candidate, root, options.get(candidate, {}))
        except EngineUnavailableError:
            continue
    raise AssertionError("the estimate meter always builds")  # pragma: no cover


def _auto_build(kind: MeterKind, root: Path, opts: dict[str, Any]) -> EnergyMeter:
    if kind is MeterKind.BATTERY:
        opts = {"require_discharging": True, **opts}
    return BUILDERS[kind](root, **opts)


def probe_meters(root: Path = Path("/"), options: dict[MeterKind, dict[str, Any]] | None = None) -> dict[str, str]:
    """Every meter kind -> ``"ok"`` or why it cannot be used here, in ``auto``'s order (for ``covspec info``)."""
    options = options or {}
    out: dict[str, str] = {}
    for kind in AUTO_ORDER:
        try:
            meter = _auto_build(kind, root, options.get(kind, {}))
            out[kind.value] = f"ok ({meter.name})"
        except EngineUnavailableError as exc:
            out[kind.value] = exc.message
    return out
