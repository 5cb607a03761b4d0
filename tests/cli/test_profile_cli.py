"""`covspec profile` end to end: the demo bundle on ONNX Runtime against a real `covspec serve` of the demo target,
and device-only; the JSON, the PNGs and the HTML it writes, and the errors it gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from covspec.demo import scenes
from covspec.demo.store import ensure_bundle, ensure_pair
from covspec.profile.energy import AUTO_ORDER, MeterKind, probe_meters
from covspec.profile.report import SECTIONS
from covspec.runtime_edge.server import ServeProcess
from tests.profile.test_profile_report import parse

COVSPEC = str(Path(sys.executable).parent / "covspec")
SCENES, MAX_NEW_TOKENS = 2, 24
# the fixed policy drafts every round (the cost policy may burst them all on the tiny demo target: no drafting)
FAST = ["--runs", "2", "--scenes", str(SCENES), "--max-new-tokens", str(MAX_NEW_TOKENS), "--stage-window-s", "0.1",
        "--threads", "1", "--policy", "fixed", "--draft-len", "4"]  # fmt: skip
STAGE_KEYS = {"preprocess", "vision", "reduce", "decoder", "prefill_total", "step"}


@pytest.fixture(scope="module")
def demo():
    """(pair, its device bundle, a served demo target): the bundle is exported once into the user cache."""
    pair = ensure_pair()
    bundle = ensure_bundle(pair)
    server = ServeProcess(pair.target, threads=1)
    try:
        server.wait_ready(timeout_s=120)
        yield pair, bundle, server.url
    finally:
        server.stop()


def _profile(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([COVSPEC, "profile", *args], capture_output=True, text=True, timeout=300)


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_profile_against_a_real_edge_writes_json_plots_and_report(demo, tmp_path) -> None:
    pair, bundle, url = demo
    out = tmp_path / "out"
    done = _profile("--bundle", str(bundle), "--edge", url, "--energy", "estimate", "--radio", "lte",
                    "--out", str(out), *FAST)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ESTIMATE" in done.stdout and "wrote" in done.stdout
    profile = json.loads((out / "profile.json").read_text())
    assert profile["generations"] == 2 * SCENES and profile["tokens_are"] == "committed"
    assert STAGE_KEYS | {"drafting", "edge_wait", "edge_verify", "link", "edge_prefill"} <= set(profile["stages"])
    assert profile["stages_not_run"] == []
    for key, stage in profile["stages"].items():
        assert stage["seconds"]["median"] > 0, key
    assert profile["stages"]["edge_verify"]["seconds"]["median"] < profile["stages"]["edge_wait"]["seconds"]["p90"]
    assert profile["steps"]["buckets"] and all(b["n"] > 0 for b in profile["steps"]["buckets"])
    assert profile["edge_rounds"]["rounds"] >= 2 * SCENES and profile["edge_rounds"]["uplink_bytes_per_round"]
    # the estimate says so everywhere; the radio is a model over the socket's bytes
    assert profile["meter"]["name"] == "estimate" and profile["meter"]["estimated"]
    assert profile["energy"]["estimated"] and profile["energy"]["joules_per_token"]["median"] > 0
    assert profile["energy"]["stages"]["joules_per_step"] > 0
    assert profile["radio"]["profile"] == "lte" and profile["radio"]["estimated"]
    assert profile["memory"]["peak_rss_kib"] >= profile["memory"]["rss_after_load_kib"] > 0
    assert profile["machine"]["cpus"] >= 1 and "energy_meters" in profile["machine"]
    # lossless: every item committed the target's own greedy answer
    from covspec.models import load_model

    target = load_model(str(pair.target), dtype="float32")
    questions = scenes.dataset("heldout", SCENES, tasks=("describe",))
    for item, qa in zip(profile["items"], questions, strict=True):
        assert item["prompt"] == qa.question and item["same_tokens_every_run"]
        assert item["tokens"] == target.generate(qa.scene.image, qa.question, max_new_tokens=MAX_NEW_TOKENS)
    for name in ("stages", "steps", "energy"):
        width, height = _image_size(out / f"{name}.png")
        assert 600 <= width <= 2000 and 300 <= height <= 1200, name
    html = (out / "report.html").read_text()
    page = parse(html)
    assert page.headings == list(SECTIONS.values()) and not page.external
    assert len(page.images) == 3 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert "ESTIMATE" in html and "lte" in html


def test_profile_device_only_without_a_meter(demo, tmp_path) -> None:
    _, bundle, _ = demo
    out = tmp_path / "out"
    done = _profile("--bundle", str(bundle), "--energy", "none", "--out", str(out), "--json", *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)
    assert printed == json.loads((out / "profile.json").read_text())
    assert printed["edge"] is None and printed["edge_rounds"] is None and printed["radio"] is None
    assert printed["tokens_are"].startswith("drafted") and printed["energy"] == {"measured": False}
    assert set(printed["stages"]) == STAGE_KEYS  # the device's stages only
    assert all(stage["seconds"]["median"] > 0 for stage in printed["stages"].values())
    assert all(item["tokens"] for item in printed["items"])
    assert not (out / "energy.png").exists() and (out / "steps.png").exists()
    assert parse((out / "report.html").read_text()).headings == list(SECTIONS.values())


def test_profile_refuses_a_meter_this_machine_lacks(demo, tmp_path) -> None:
    _, bundle, _ = demo
    status = probe_meters()
    missing = [
        kind for kind in AUTO_ORDER if kind is not MeterKind.ESTIMATE and not status[kind.value].startswith("ok")
    ]
    if not missing:
        pytest.skip("every energy meter works on this machine")
    kind = missing[0].value
    done = _profile("--bundle", str(bundle), "--energy", kind, "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "covspec profile: error [engine_unavailable]" in done.stderr
    assert status[kind].split(";")[0] in done.stderr  # the meter's own reason, e.g. no powercap zone
    assert not (tmp_path / "out").exists()


def test_profile_refuses_half_a_question_and_an_unknown_radio(demo, tmp_path) -> None:
    _, bundle, _ = demo
    done = _profile("--bundle", str(bundle), "--prompt", "What is it?", "--out", str(tmp_path))
    assert done.returncode == 2 and "--image and --prompt together" in done.stderr
    done = _profile("--bundle", str(bundle), "--radio", "carrier-pigeon", "--out", str(tmp_path))
    assert done.returncode == 2 and "unknown radio 'carrier-pigeon'" in done.stderr
