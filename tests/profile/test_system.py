"""`covspec info`'s report: a Jetson described from its files and its power monitor found on a fixture tree, what is
missing said in sentences, a real edge and a real bundle checked, and the command itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from covspec.profile.system import system_report
from tests.bundle.test_jetson import DPKG_STATUS, MODEL, NV_TEGRA_RELEASE
from tests.profile.fixtures import orin_nx_jp6, write

COVSPEC = str(Path(sys.executable).parent / "covspec")


def test_a_jetson_is_described_and_its_rails_found(tmp_path) -> None:
    write(tmp_path, "etc/nv_tegra_release", NV_TEGRA_RELEASE)
    write(tmp_path, "proc/device-tree/model", MODEL)
    write(tmp_path, "var/lib/dpkg/status", DPKG_STATUS)
    write(tmp_path, "etc/nvpmodel.conf", "< POWER_MODEL ID=0 NAME=15W >\n< POWER_MODEL ID=2 NAME=MAXN_SUPER >\n")
    orin_nx_jp6(tmp_path)
    report = system_report(tmp_path)
    jetson = report["jetson"]
    assert (jetson["l4t"], jetson["jetpack"], jetson["tensorrt"]) == ("36.4.3", "6.2", "10.3.0.30")
    assert jetson["max_power_mode"] == {"id": 2, "name": "MAXN_SUPER"}  # by name, not mode 0 (15 W here)
    assert report["energy_meters"]["jetson"].startswith("ok")
    assert not any("energy sensor" in sentence for sentence in report["missing"])
    json.dumps(report)  # JSON-ready


def test_what_is_missing_is_said(tmp_path) -> None:
    import torch

    report = system_report(tmp_path)
    missing = " | ".join(report["missing"])
    assert report["jetson"] is None and report["energy_meters"]["estimate"].startswith("ok")
    assert "no energy sensor is readable here" in missing
    assert ("no CUDA GPU visible to torch" in missing) == (not torch.cuda.is_available())
    assert ("TensorRT is not installed" in missing) == (report["tensorrt"]["installed"] is False)
    assert report["packages"]["torch"] is not None and report["cuda"]["torch"] is True


@pytest.mark.e2e
def test_an_edge_and_a_bundle_are_checked(tmp_path, edge_server, tiny_bundle) -> None:
    server = edge_server("llava")
    _, bundle = tiny_bundle("llava")
    report = system_report(tmp_path, edge=server.url, bundle=bundle)
    assert report["edge"]["reachable"] and report["edge"]["family"] == "llava"
    assert report["edge"]["batching"]["schedule"] == "fcfs" and "batching" in report["edge"]["features"]
    assert report["bundle"]["valid"] and report["bundle"]["family"] == "llava"
    gone = system_report(tmp_path, edge="http://127.0.0.1:9", bundle=tmp_path / "nothing")
    assert not gone["edge"]["reachable"] and not gone["bundle"]["valid"]
    assert any("did not answer /v1/info" in s for s in gone["missing"])
    assert any("cannot be used" in s for s in gone["missing"])


def test_the_command_prints_the_report(tmp_path) -> None:
    done = subprocess.run([COVSPEC, "info", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert {"packages", "onnxruntime", "cuda", "tensorrt", "jetson", "energy_meters", "missing"} <= set(report)
    human = subprocess.run([COVSPEC, "info"], capture_output=True, text=True, timeout=120)
    assert human.returncode == 0 and "energy meters:" in human.stdout and "TensorRT:" in human.stdout
