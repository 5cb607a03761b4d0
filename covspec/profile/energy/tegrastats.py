"""The Jetson fallback: ``tegrastats --interval MS`` as a subprocess, its rail readings parsed line by line.

Rail fields seen across releases (captured samples in tests/profile/test_tegrastats.py):
- JetPack 4 Nano: ``POM_5V_IN 2160/2160 POM_5V_GPU 40/40 POM_5V_CPU 562/562`` (mW, no unit; instant/average)
- JetPack 4 Xavier NX: ``VDD_IN 4173/4173 VDD_CPU_GPU_CV 612/612 VDD_SOC 1225/1225``
- JetPack 5/6 Orin: ``VDD_GPU_SOC 5139mW/5139mW VDD_CPU_CV 3268mW/3268mW VIN_SYS_5V0 5500mW/5500mW``
- later releases may add a third value (instant/average/max).
The first value of each field is the instant power; that is what we integrate.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence

from covspec.errors import EngineUnavailableError
from covspec.profile.energy.base import Clock, EnergyReading, integrate_rails
from covspec.profile.energy.jetson import total_rails

# NAME inst/avg[/max], each value optionally suffixed mW; the value must end the token (so "RAM 1985/7765MB" is not
# a rail). Names start with a capital letter: rails are upper case in every release we know.
RAIL_RE = re.compile(r"(?<!\S)([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)")
NOT_RAILS = frozenset({"RAM", "SWAP", "IRAM", "LFB"})


def parse_tegrastats_line(line: str) -> dict[str, float]:
    """Rail name -> instant power in mW for one tegrastats line; {} when the line carries no rail."""
    return {m.group(1): float(m.group(2)) for m in RAIL_RE.finditer(line) if m.group(1) not in NOT_RAILS}


class TegrastatsMeter:
    """Runs tegrastats for the window and integrates the instant rail powers it prints.

    ``command`` defaults to ``tegrastats --interval <ms>``; tests pass a command that prints captured lines."""

    name = "tegrastats"
    estimated = False

    def __init__(
        self,
        interval_ms: int = 100,
        *,
        command: Sequence[str] | None = None,
        total: list[str] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if command is None:
            exe = shutil.which("tegrastats")
            if exe is None:
                raise EngineUnavailableError("tegrastats: not on PATH (it ships with JetPack in /usr/bin)")
            command = [exe, "--interval", str(interval_ms)]
        self.command = list(command)
        self.total = total
        self.clock = clock
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._times: list[float] = []
        self._samples: list[dict[str, float]] = []
        self._t0 = 0.0

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            rails = parse_tegrastats_line(line)
            if rails:
                self._times.append(self.clock())
                self._samples.append({k: v / 1000.0 for k, v in rails.items()})

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("tegrastats meter already started")
        self._times, self._samples = [], []
        self._t0 = self.clock()
        self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._reader = threading.Thread(target=self._read, name="covspec-tegrastats", daemon=True)
        self._reader.start()

    def stop(self) -> EnergyReading:
        if self._proc is None or self._reader is None:
            raise RuntimeError("tegrastats meter was not started")
        t1 = self.clock()
        if self._proc.poll() is None:
            self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=5)
        self._proc, self._reader = None, None
        return self._reading(t1 - self._t0)

    def _reading(self, duration_s: float) -> EnergyReading:
        times, samples = list(self._times), list(self._samples)
        notes: list[str] = []
        if len(times) < 2:
            notes.append(f"tegrastats printed {len(times)} rail line(s) in the window: too short to integrate")
            return EnergyReading(self.name, 0.0, duration_s, len(times), {}, notes=tuple(notes))
        rails_j = integrate_rails(times, samples)
        names = sorted(rails_j)
        total = self.total if self.total is not None else total_rails(names)
        notes.append(f"total = {' + '.join(total)}; rails: {', '.join(names)}")
        return EnergyReading(self.name, _total(rails_j, total), duration_s, len(times), rails_j, notes=tuple(notes))


def _total(rails_j: Mapping[str, float], total: list[str]) -> float:
    return sum(rails_j.get(n, 0.0) for n in total)
