"""The device's memory as the kernel counts it: resident set (VmRSS) and its high-water mark (VmHWM).

Read from ``/proc/self/status`` on Linux (Jetson, Android, servers); elsewhere the peak falls back to
``getrusage``'s ``ru_maxrss`` and the current RSS is unknown (None). Values are KiB, as the kernel reports them.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

STATUS = Path("/proc/self/status")


def parse_status(text: str) -> dict[str, int]:
    """``VmRSS``, ``VmHWM`` and the other ``Vm*`` lines of a ``/proc/<pid>/status`` text, in KiB."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if key.startswith("Vm") and len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            out[key] = int(parts[0])
    return out


def _status(path: Path) -> dict[str, int]:
    try:
        return parse_status(path.read_text())
    except OSError:
        return {}


def rss_kib(path: Path = STATUS) -> int | None:
    """The resident set now, or None where ``/proc`` is not there."""
    return _status(path).get("VmRSS")


def peak_rss_kib(path: Path = STATUS) -> int:
    """The resident set's high-water mark since the process started."""
    peak = _status(path).get("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss // 1024 if sys.platform == "darwin" else maxrss  # macOS reports bytes, Linux KiB


__all__ = ["STATUS", "parse_status", "peak_rss_kib", "rss_kib"]
