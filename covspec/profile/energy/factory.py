"""Choosing a meter: ``--energy auto|jetson|nvml|rapl|battery|estimate|none``.

``auto`` tries, in order, jetson (INA3221 sysfs, then tegrastats), nvml, rapl, battery (only while discharging),
and falls back to estimate, which always works; :func:`probe_meters` says for each why it is or is not usable here.
``nvml`` and ``rapl`` are read through Zeus where it is installed and works, else by our own readers; the meter's
name (``rapl (zeus)`` or ``rapl``) and its readings' notes say which measured.
The order puts whole-device sensors first on the boards they exist on (a Jetson has no NVML, a GPU server has no
battery); RAPL before battery because on a plugged-in laptop the battery says nothing.
"""

from __future__ import annotations

import dataclasses
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
from covspec.profile.energy.zeus import ZeusMeter


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


class OwnReader:
    """One of our readers where Zeus could have measured: its readings add a note saying ours measured, and why
    Zeus did not. Everything else is the reader's own."""

    def __init__(self, meter: EnergyMeter, why_not_zeus: str) -> None:
        self.meter = meter
        self.reader = f"covspec's own {meter.name} reader; Zeus not used: {why_not_zeus}"

    @property
    def name(self) -> str:
        return self.meter.name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.meter, attr)

    def start(self) -> None:
        self.meter.start()

    def stop(self) -> EnergyReading:
        reading = self.meter.stop()
        return dataclasses.replace(reading, notes=(*reading.notes, f"measured by {self.reader}"))


def _zeus_or_ours(
    zeus: bool | None, not_tried: str | None, through_zeus: Callable[[], EnergyMeter], ours: Callable[[], EnergyMeter]
) -> EnergyMeter:
    """Zeus's meter when it builds, else ours noting why not; when neither builds, our reason then Zeus's.
    ``zeus``: None tries Zeus unless ``not_tried`` says why it does not apply, True always tries it, False never."""
    if zeus is False:
        return ours()
    if zeus is None and not_tried is not None:
        why = f"not tried ({not_tried})"
    else:
        try:
            return through_zeus()
        except EngineUnavailableError as exc:
            why = exc.message
    try:
        return OwnReader(ours(), why)
    except EngineUnavailableError as exc:
        raise EngineUnavailableError(f"{exc.message}; {why}") from exc


def _nvml(root: Path, *, zeus: bool | None = None, **kw: Any) -> EnergyMeter:
    """Zeus reads every GPU it finds (or GPU ``index``); a given ``nvml`` binding or sampling option is ours."""
    ours_only = sorted(set(kw) - {"index"})
    indices = [kw["index"]] if "index" in kw else None
    return _zeus_or_ours(
        zeus,
        f"options only covspec's reader takes: {ours_only}" if ours_only else None,
        lambda: _zeus_nvml(indices),
        lambda: NvmlMeter(**kw),
    )


def _zeus_nvml(indices: list[int] | None) -> EnergyMeter:
    meter = ZeusMeter(gpu_indices=indices, cpu_indices=[])
    if not meter.name.startswith("nvml"):
        raise EngineUnavailableError(f"nvml (zeus): Zeus found {meter.name} GPUs, not NVIDIA ones")
    return meter


def _rapl(root: Path, *, zeus: bool | None = None, **kw: Any) -> EnergyMeter:
    """Zeus reads its own RAPL_DIR, not ``root``: under a fixture root, or with our reader's options, it is ours."""
    if root != Path("/"):
        not_tried = f"Zeus reads /sys/class/powercap/intel-rapl, not the root {root}"
    elif kw:
        not_tried = f"options only covspec's reader takes: {sorted(kw)}"
    else:
        not_tried = None
    return _zeus_or_ours(
        zeus, not_tried, lambda: ZeusMeter(gpu_indices=[], cpu_indices=None), lambda: RaplMeter(root=root, **kw)
    )


# name -> builder(root, **options); nvml and rapl take ``zeus=None|True|False`` (docs/energy.md, "Zeus").
BUILDERS: dict[MeterKind, Callable[..., EnergyMeter]] = {
    MeterKind.JETSON: _jetson,
    MeterKind.NVML: _nvml,
    MeterKind.RAPL: _rapl,
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
    """Every meter kind -> ``"ok (name)"`` and which reader measures (Zeus or ours, and why not Zeus), or why it
    cannot be used here, in ``auto``'s order (for ``covspec info``)."""
    options = options or {}
    out: dict[str, str] = {}
    for kind in AUTO_ORDER:
        try:
            meter = _auto_build(kind, root, options.get(kind, {}))
            reader = getattr(meter, "reader", None)
            out[kind.value] = f"ok ({meter.name})" + (f": {reader}" if reader else "")
        except EngineUnavailableError as exc:
            out[kind.value] = exc.message
    return out
