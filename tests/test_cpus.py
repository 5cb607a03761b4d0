"""covspec.cpus: CPU sets split disjointly, thread counts that follow the process's affinity, pinning that moves every
thread and can be undone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from covspec.cpus import (
    default_threads,
    describe,
    format_cpus,
    pin_process,
    resolve_threads,
    split_cpus,
    usable_cpus,
)

needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")


@pytest.mark.parametrize("cpus", [{0, 1}, {5, 2}, set(range(3)), set(range(8)), {3, 7, 9, 12, 40}])
def test_split_is_disjoint_and_covers(cpus: set[int]) -> None:
    split = split_cpus(cpus)
    edge, device = split  # unpacks as a pair
    assert edge and device and not edge & device and edge | device == cpus
    assert not split.shared and "disjoint" in split.describe()
    assert len(edge) >= len(device)  # the edge runs the bigger model
    assert max(device) < min(edge)


def test_split_edge_count_and_bad_counts() -> None:
    assert split_cpus(range(6), edge=1) == (frozenset({5}), frozenset(range(5)))
    for bad in (0, 6):
        with pytest.raises(ValueError):
            split_cpus(range(6), edge=bad)
    with pytest.raises(ValueError):
        split_cpus(set())


def test_one_cpu_is_shared_and_says_so() -> None:
    split = split_cpus({3})
    assert split.edge == split.device == frozenset({3})
    assert split.shared and "shared" in split.describe()


def test_descriptions() -> None:
    assert format_cpus({0, 1, 2, 3, 6, 8, 9}) == "{0-3,6,8,9}"
    assert describe("edge", 1, {1}) == "edge: 1 torch thread on CPUs {1}"
    assert describe("device", 2, [0, 1], pool="onnxruntime") == "device: 2 onnxruntime threads on CPUs {0,1}"
    assert resolve_threads(3) == 3 and resolve_threads(None) == default_threads() == len(usable_cpus())
    with pytest.raises(ValueError):
        resolve_threads(0)


_CHILD = """
import json, sys
from covspec.cpus import default_threads, set_torch_threads, usable_cpus
heavy = sorted(m for m in ("torch", "numpy", "onnxruntime") if m in sys.modules)
set_torch_threads(default_threads())
import torch
print(json.dumps({"cpus": sorted(usable_cpus()), "threads": default_threads(), "heavy": heavy,
                  "torch": [torch.get_num_threads(), torch.get_num_interop_threads()]}))
"""


@needs_affinity
def test_default_threads_follow_a_restricted_affinity() -> None:
    """A process confined to one CPU derives one thread (not the machine's count) and sizes torch's pools to it;
    importing covspec.cpus loads no heavy library."""
    one = min(usable_cpus())
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.sched_setaffinity(0, {one}),
    )
    assert done.returncode == 0, done.stderr
    child = json.loads(done.stdout)
    assert child == {"cpus": [one], "threads": 1, "heavy": [], "torch": [1, 1]}


@needs_affinity
def test_pin_process_moves_every_thread_and_restores() -> None:
    before = usable_cpus()
    one = {min(before)}
    release = threading.Event()
    started = threading.Thread(target=release.wait, daemon=True)  # a pool thread that existed before the pin
    started.start()
    try:
        previous = pin_process(one)
        assert previous == before
        assert usable_cpus() == one and os.sched_getaffinity(started.native_id) == one
    finally:
        pin_process(before)
        release.set()
    assert usable_cpus() == before and os.sched_getaffinity(started.native_id) == before
    started.join()
