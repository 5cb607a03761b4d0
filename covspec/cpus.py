"""Threads and CPUs, set on purpose.

Left to themselves, torch starts one intra-op thread per core and ONNX Runtime takes every core; on a small machine
shared by an edge and a device (DESIGN.md §10) the two pools fight, and tiny matmuls under several OpenMP threads can
run many times slower than under one. So every entry point sets its thread count from the CPUs this process may use,
and benchmarks pin the edge and the device to disjoint CPU sets with one pool each.

Lowest level of the package: imports nothing of covspec and no torch at import time (``set_torch_threads`` imports
it when called).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import NamedTuple

logger = logging.getLogger(__name__)


def usable_cpus() -> set[int]:
    """The CPUs this process may run on: its affinity where the OS has one (Linux), else every CPU."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def default_threads() -> int:
    """Threads for one pool when nothing says otherwise: one per usable CPU (affinity, not the machine's count)."""
    return max(len(usable_cpus()), 1)


def resolve_threads(threads: int | None) -> int:
    """``threads`` as given, or ``default_threads()`` for None (what every ``--threads`` flag defaults to)."""
    if threads is None:
        return default_threads()
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    return threads


def format_cpus(cpus: Iterable[int]) -> str:
    """``{0-3,6}``: a CPU set for logs, runs of three or more as ranges."""
    ids = sorted(set(cpus))
    parts: list[str] = []
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[i - 1] + 1:
            run = ids[start:i]
            parts.append(f"{run[0]}-{run[-1]}" if len(run) >= 3 else ",".join(map(str, run)))
            start = i
    return "{" + ",".join(parts) + "}"


def describe(role: str, threads: int, cpus: Iterable[int] | None = None, pool: str = "torch") -> str:
    """One log line, e.g. ``edge: 1 torch thread on CPUs {1}``; ``cpus`` defaults to this process's own."""
    noun = "thread" if threads == 1 else "threads"
    return f"{role}: {threads} {pool} {noun} on CPUs {format_cpus(usable_cpus() if cpus is None else cpus)}"


class CpuSplit(NamedTuple):
    """Edge and device CPU sets for running both on one machine; unpacks as ``(edge, device)``."""

    edge: frozenset[int]
    device: frozenset[int]

    @property
    def shared(self) -> bool:
        """True when there was one CPU only, so both sides run on it (their timings then disturb each other)."""
        return bool(self.edge & self.device)

    def describe(self) -> str:
        if self.shared:
            return f"edge and device shared CPUs {format_cpus(self.edge | self.device)} (one CPU usable)"
        return f"edge on CPUs {format_cpus(self.edge)}, device on CPUs {format_cpus(self.device)} (disjoint)"


def split_cpus(cpus: Iterable[int] | None = None, edge: int | None = None) -> CpuSplit:
    """Split ``cpus`` (default: this process's) into disjoint edge and device sets that together cover them.

    The device takes the lowest-numbered CPUs; the edge takes ``edge`` CPUs (default: the larger half, since it runs
    the bigger model). With a single CPU both sides get it, and ``shared`` says so.
    """
    ids = sorted(set(usable_cpus() if cpus is None else cpus))
    if not ids:
        raise ValueError("no CPUs to split")
    if len(ids) == 1:
        logger.warning("one CPU usable (%d): edge and device share it, so their timings disturb each other", ids[0])
        return CpuSplit(frozenset(ids), frozenset(ids))
    n_edge = (len(ids) + 1) // 2 if edge is None else edge
    if not 1 <= n_edge < len(ids):
        raise ValueError(f"the edge needs 1..{len(ids) - 1} of the {len(ids)} CPUs, not {n_edge}")
    n_device = len(ids) - n_edge
    return CpuSplit(frozenset(ids[n_device:]), frozenset(ids[:n_device]))


def pin_process(cpus: Iterable[int]) -> set[int]:
    """Restrict every thread of this process (and the threads and children it starts later) to ``cpus``; returns the
    previous set so a library caller can restore it. A no-op with a warning where the OS cannot pin (macOS, Windows).

    ``os.sched_setaffinity(0, ...)`` moves only the calling thread on Linux, so each thread in ``/proc/self/task`` is
    moved too: thread pools started before the pin (torch's, ONNX Runtime's) would otherwise stay where they were.
    """
    target = set(cpus)
    previous = usable_cpus()
    if not hasattr(os, "sched_setaffinity"):
        logger.warning("this OS cannot pin a process to CPUs; %s left unpinned", format_cpus(target))
        return previous
    os.sched_setaffinity(0, target)
    try:
        tids = [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        tids = []
    for tid in tids:
        try:
            os.sched_setaffinity(tid, target)
        except OSError:  # the thread ended meanwhile
            pass
    return previous


def set_torch_threads(threads: int) -> None:
    """torch's intra-op pool to ``threads`` and, while inter-op work has not started yet, its inter-op pool to 1
    (torch refuses to change that pool afterwards; one pool per side is what counts, DESIGN.md §10)."""
    import torch

    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            logger.debug("torch's inter-op pool already started; left at %d", torch.get_num_interop_threads())
