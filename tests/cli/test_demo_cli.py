"""`covspec demo --json` end to end: trains the reduced pair into a temporary cache, exports its drafter bundle, serves
the target with a real `covspec serve` subprocess, and reports identical-to-target for every mode (target-only included:
each is checked against transformers' own generate() of the target)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

COVSPEC = str(Path(sys.executable).parent / "covspec")


def test_demo_json_reports_identical_outputs(tmp_path) -> None:
    env = {**os.environ, "COVSPEC_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([COVSPEC, "demo", "--reduced", "--scenes", "3", "--json"], capture_output=True, text=True,
                          env=env, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    rows = {row["mode"]: row for row in result["rows"]}
    assert list(rows) == ["target-only", "vanilla", "covspec"]
    for row in rows.values():
        assert {"mode", "tokens_per_s", "speedup", "aal", "uplink_bytes_per_token", "downlink_bytes_per_token",
                "identical_to_target", "accuracy"} <= set(row)  # fmt: skip
        assert row["identical_to_target"] is True
        assert row["tokens_per_s"] > 0
    assert rows["target-only"]["aal"] is None and rows["target-only"]["speedup"] == 1.0
    assert rows["vanilla"]["aal"] >= 1.0
    assert rows["covspec"]["aal"] is None or rows["covspec"]["aal"] >= 1.0  # None: the cost policy only burst
    # the conventional baseline ships full draft rows; the full runtime (compact) ships ids only
    assert rows["vanilla"]["uplink_bytes_per_token"] > 20 * rows["covspec"]["uplink_bytes_per_token"]
    # the full runtime keeps one connection: after the first question its setup is the open frame, no new socket
    assert (
        rows["covspec"]["setup_downlink_bytes_per_generation"] < rows["vanilla"]["setup_downlink_bytes_per_generation"]
    )
    assert 0 < rows["covspec"]["of_bound"] <= 1.1  # the bound is built from the very rounds it bounds
    # accuracy is the same for every mode: they commit the very same tokens
    assert len({row["accuracy"] for row in rows.values()}) == 1
    assert any((tmp_path / "cache").iterdir())
    # the drafter ran from its device bundle, exported into the cache on first use
    assert result["engine"] == "onnxruntime-fp32"
    bundles = list((tmp_path / "cache" / "demo-bundle-v1").iterdir())
    assert len(bundles) == 1 and (bundles[0] / "manifest.json").is_file()
    # edge and device on their own CPUs, one pool each sized to its set (DESIGN.md §10); shared only on one CPU
    edge, device = set(result["edge_cpus"]), set(result["device_cpus"])
    assert result["edge_threads"] == len(edge) and result["device_threads"] == len(device)
    assert result["cpus_shared"] is (len(edge | device) == 1)
    if len(edge | device) >= 2:
        assert edge and device and not edge & device


def test_demo_refuses_an_unknown_link() -> None:
    done = subprocess.run([COVSPEC, "demo", "--link", "pigeon"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "unknown link preset" in done.stderr
