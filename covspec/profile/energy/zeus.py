"""NVIDIA GPUs and RAPL read through Zeus (ml-energy/zeus) where it is installed and works; docs/energy.md, "Zeus".

Zeus is the optional ``zeus`` extra and is imported lazily (covspec imports without it). It keeps process-wide device
objects (``zeus.device.get_gpus()`` / ``get_cpus()``), reads RAPL under ``zeus.device.cpu.rapl.RAPL_DIR`` (or through
the ``zeusd`` daemon when ``ZEUSD_*`` is set, with no root needed), and counts RAPL wrap-arounds in one spawned process
per counter, started at the first window and stopped at interpreter exit. The probe here only builds the device
objects; the ``ZeusMonitor`` (which may spawn a power poller for pre-Volta GPUs) is made at the first ``start()``.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from covspec.errors import EngineUnavailableError
from covspec.profile.energy.base import EnergyReading
from covspec.profile.energy.rapl import PERMISSION_HINT

INSTALL_HINT = "pip install 'covspec[zeus]'"
_windows = itertools.count()


def load_zeus_devices() -> ModuleType:
    """``zeus.device`` (light: no pandas); ``EngineUnavailableError`` when Zeus is not installed."""
    try:
        return importlib.import_module("zeus.device")
    except ImportError as exc:
        raise EngineUnavailableError(f"zeus: not installed ({exc}); {INSTALL_HINT}") from exc


@contextmanager
def quiet_probe() -> Iterator[None]:
    """Zeus logs a warning for every library it could not load while looking for devices (amdsmi on an NVIDIA or
    GPU-less host); the reason that matters reaches the user in our error, so below -v they are held back."""
    log = logging.getLogger("zeus")
    if log.isEnabledFor(logging.INFO):
        yield
        return
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def zeus_version() -> str:
    return str(getattr(sys.modules.get("zeus"), "__version__", "?"))


def zeus_gpus(devices: ModuleType) -> tuple[Any, str]:
    """Zeus's GPU object and the library it reads them with (``nvml`` or ``amdsmi``), or why not."""
    try:
        with quiet_probe():
            gpus = devices.get_gpus()
    except Exception as exc:  # ZeusGPUInitError (no NVML/amdsmi), ImportError (an unofficial pynvml), ...
        raise EngineUnavailableError(f"nvml (zeus): {str(exc).rstrip('.')}") from exc
    vendor = "amdsmi" if type(gpus).__name__.startswith("AMD") else "nvml"
    return gpus, vendor


def zeus_cpus(devices: ModuleType) -> Any:
    """Zeus's RAPL object, or why not (a permission error says how to grant access)."""
    try:
        with quiet_probe():
            return devices.get_cpus()
    except Exception as exc:  # ZeusCPUInitError (no RAPL_DIR), ZeusCPUNoPermissionError, ZeusdError, ...
        denied = "permission" in f"{type(exc).__name__} {exc}".lower()
        hint = f". {PERMISSION_HINT}; or let the zeusd daemon read it (ZEUSD_SOCK_PATH)" if denied else ""
        raise EngineUnavailableError(f"rapl (zeus): {str(exc).rstrip('.')}{hint}") from exc


def zone_name(cpu: Any) -> str | None:
    """The powercap ``name`` of a Zeus RAPL CPU (``package-0``, ``psys``); None through zeusd, which hides it."""
    return getattr(getattr(cpu, "rapl_file", None), "name", None)


def _pick(asked: Sequence[int] | None, default: list[int], count: int, what: str) -> list[int]:
    picked = list(default if asked is None else asked)
    missing = [i for i in picked if not 0 <= i < count]
    if missing:
        raise EngineUnavailableError(f"{what} (zeus): no device at index {missing}; Zeus sees {count}")
    if asked is None and not picked:
        raise EngineUnavailableError(f"{what} (zeus): Zeus found none here")
    return picked


class ZeusMeter:
    """A ``ZeusMonitor`` window as an :class:`EnergyMeter`. ``None`` indices mean every device Zeus finds (for RAPL
    every package zone: ``psys`` covers the whole platform, package included, so adding it would count twice);
    ``[]`` leaves that device class out. Rails: ``gpu<i>``, ``cpu<i>`` (package), ``dram<i>``; joules are their sum."""

    estimated = False

    def __init__(self, gpu_indices: Sequence[int] | None = None, cpu_indices: Sequence[int] | None = None) -> None:
        if gpu_indices is not None and cpu_indices is not None and not gpu_indices and not cpu_indices:
            raise ValueError("ZeusMeter needs a GPU or a CPU to measure")
        devices = load_zeus_devices()
        self.gpu_indices: list[int] = []
        self.cpu_indices: list[int] = []
        parts, self._described = [], []
        if gpu_indices is None or gpu_indices:
            gpus, vendor = zeus_gpus(devices)
            self.gpu_indices = _pick(gpu_indices, list(range(len(gpus))), len(gpus), "nvml")
            parts.append(vendor)
            self._described.append(f"GPUs {self.gpu_indices} through {vendor}")
        if cpu_indices is None or cpu_indices:
            cpus = zeus_cpus(devices)
            zones = [zone_name(cpu) for cpu in cpus.cpus]
            self.cpu_indices = _pick(cpu_indices, [i for i, z in enumerate(zones) if z != "psys"], len(zones), "rapl")
            parts.append("rapl")
            names = ", ".join(f"cpu{i}={zones[i] or '?'}" for i in self.cpu_indices)
            psys = [f"cpu{i}" for i, z in enumerate(zones) if z == "psys" and i not in self.cpu_indices]
            left_out = f" ({', '.join(psys)} = psys, the whole platform, left out)" if psys else ""
            self._described.append(f"RAPL zones {names} with their dram subzones{left_out}")
        self.name = f"{'+'.join(parts)} (zeus)"
        self.reader = f"Zeus {zeus_version()}"
        self._monitor: Any = None
        self._key: str | None = None

    def _sync(self) -> bool:
        """Zeus synchronises torch's CUDA streams at the window's edges; only when this process uses torch on CUDA
        (without torch Zeus would raise; ONNX Runtime's run returns when its work is done)."""
        torch = sys.modules.get("torch")
        return bool(self.gpu_indices) and torch is not None and bool(torch.cuda.is_available())

    def start(self) -> None:
        if self._key is not None:
            raise RuntimeError(f"{self.name} meter already started")
        try:
            if self._monitor is None:
                monitor = importlib.import_module("zeus.monitor")
                self._monitor = monitor.ZeusMonitor(gpu_indices=self.gpu_indices, cpu_indices=self.cpu_indices)
            key = f"covspec-{next(_windows)}"
            self._monitor.begin_window(key, sync_execution=self._sync())
        except (OSError, RuntimeError, ValueError) as exc:  # a counter vanished or became unreadable since the probe
            raise EngineUnavailableError(f"{self.name}: Zeus could not open a window ({exc})") from exc
        self._key = key

    def stop(self) -> EnergyReading:
        if self._key is None:
            raise RuntimeError(f"{self.name} meter was not started")
        key, self._key = self._key, None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = self._monitor.end_window(key, sync_execution=self._sync())
        rails = {f"gpu{i}": float(j) for i, j in m.gpu_energy.items()}
        rails |= {f"cpu{i}": float(j) for i, j in (m.cpu_energy or {}).items()}
        rails |= {f"dram{i}": float(j) for i, j in (m.dram_energy or {}).items()}
        notes = (
            f"measured by {self.reader} (ZeusMonitor window): {'; '.join(self._described)}",
            *(f"Zeus: {w.message}" for w in caught),
        )
        return EnergyReading(self.name, sum(rails.values()), float(m.time), 2, rails, notes=notes)
