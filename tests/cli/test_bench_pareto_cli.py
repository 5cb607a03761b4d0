"""`covspec bench pareto --quick` end to end on the shipped demo pair: its drafter bundle exported into a temporary
cache, a real pinned `covspec serve`, a real emulated link, three operating points; JSON + PNG + HTML. Then the
drafter precisions the full sweep adds: an int8 bundle quantized from that fp32 bundle, cached and reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from covspec.profile.energy.objective import energy_inputs

COVSPEC = str(Path(sys.executable).parent / "covspec")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pareto-cache")


def test_quick_pareto_writes_points_fronts_picks_and_report(cache, tmp_path) -> None:
    env = {**os.environ, "COVSPEC_CACHE_DIR": str(cache)}
    out = tmp_path / "out"
    args = [COVSPEC, "bench", "pareto", "--quick", "--links", "loopback,lan", "--radio", "lte", "--out", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bench pareto: questions per point: 1" in done.stdout and "picks (lossless)" in done.stdout
    result = json.loads((out / "pareto.json").read_text())
    points = {p["name"]: p for p in result["points"]}
    assert list(points) == ["target-only", "base", "@lan"]
    assert points["@lan"]["link"] == "lan" and points["base"]["link"] == "loopback"
    assert result["items"] == 1 and set(result["links"]) == {"loopback", "lan"}
    wait_w = result["energy"]["inputs"]["wait_w"]
    assert result["energy"]["label"] == "estimated (model)" and result["settings"]["radio"] == "lte"
    model = energy_inputs(result["settings"]["power_profile"], "lte", busy_cores=len(result["device_cpus"]))
    assert result["energy"]["inputs"]["wait_w"] == model.wait_w  # --radio reached the model: LTE's tail power
    for point in points.values():
        assert point["identical_to_target"] and not point["lossy"] and point["tokens_per_s"] > 0
        assert point["joules"] == "estimated (model)"
        # the device draws at least its waiting power for the whole generation
        assert point["joules_per_token"] >= wait_w / point["tokens_per_s"] * (1 - 1e-9)
        assert point["accuracy"] in (0.0, 1.0)
    assert points["target-only"]["speedup"] == 1.0 and points["target-only"]["aal"] is None
    for name in ("base", "@lan"):
        assert points[name]["aal"] >= 1.0 and 0 < points[name]["of_bound"] <= 1.1
        up, down = points[name]["uplink_bytes_per_token"], points[name]["downlink_bytes_per_token"]
        assert points[name]["bytes_per_token"] == pytest.approx(up + down) and up > 0 and down > 0
    assert [(f["x"], f["y"]) for f in result["fronts"]] == [
        ("joules_per_token", "tokens_per_s"), ("bytes_per_token", "tokens_per_s"),
        ("bytes_per_token", "joules_per_token"), ("tokens_per_s", "accuracy"),
    ]  # fmt: skip
    for front in result["fronts"]:
        assert front["lossless"] and set(front["lossless"]) <= set(points)
    assert set(result["picks"]["lossless"]) == {"latency", "energy", "balanced"}
    assert set(result["picks"]["lossless"].values()) <= set(points)
    fastest = max(points.values(), key=lambda p: p["tokens_per_s"])["name"]
    assert result["picks"]["lossless"]["latency"] == fastest
    assert "not a full factorial" in result["design"]
    png = (out / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    page = (out / "report.html").read_text()
    assert all(f'<section id="{s}">' in page for s in ("scenario", "picks", "fronts", "points", "limits"))
    assert "data:image/png;base64," in page


def test_pareto_refuses_bad_settings(tmp_path) -> None:
    for flags, message in (
        (["--links", "loopback,pigeon"], "unknown link preset"),
        (["--power-profile", "toaster"], "unknown power profile"),
        (["--radio", "pigeon"], "unknown radio"),
        (["--links", "lan,lan"], "names a preset twice"),
    ):
        done = subprocess.run([COVSPEC, "bench", "pareto", *flags, "--out", str(tmp_path)], capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode != 0 and message in done.stderr, (flags, done.stderr[-2000:])
        assert not (tmp_path / "pareto.json").exists()


def test_quantized_drafter_bundles_are_built_once_and_rebuilt_when_damaged(cache) -> None:
    from covspec.bundle import load_bundle
    from covspec.demo.pareto import quantized_bundle
    from covspec.demo.store import ensure_bundle, ensure_pair

    fp32 = ensure_bundle(ensure_pair(), cache_dir=cache)  # exported by the first test (or now, run alone)
    assert quantized_bundle(fp32, "fp32", cache_dir=cache) == fp32
    int8 = quantized_bundle(fp32, "int8", cache_dir=cache)
    assert int8.parent == fp32.parent and int8 != fp32
    assert load_bundle(int8).manifest.precision == "int8"
    stamp = (int8 / "manifest.json").stat().st_mtime_ns
    assert quantized_bundle(fp32, "int8", cache_dir=cache) == int8
    assert (int8 / "manifest.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    graph = next(int8.glob("decoder_model_merged*_int8.onnx"))
    graph.write_bytes(graph.read_bytes()[:-10])  # a damaged file fails its recorded hash
    assert quantized_bundle(fp32, "int8", cache_dir=cache) == int8
    assert load_bundle(int8).manifest.precision == "int8"  # verified: rebuilt whole
