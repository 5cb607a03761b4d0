"""`covspec pair` and `covspec run --pairing` end to end on the shipped demo pair: a real uvicorn edge serving the
demo target on 127.0.0.1, the drafter's ONNX bundle (exported into the user cache on first use), the commands as
subprocesses. The pair is accepted and its file written; a drafter whose image token id or vocabulary differs is
refused naming the difference; `run --pairing` starts from the file's settings (flags given win), still commits the
target's own tokens, and refuses a file measured for another target."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from covspec.runtime_device.pairing_file import MEASURED

COVSPEC = str(Path(sys.executable).parent / "covspec")
MAX_NEW = 24


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[dict]:
    from covspec.demo import scenes
    from covspec.demo.store import ensure_bundle, ensure_pair
    from covspec.models import load_model
    from covspec.runtime_edge.server import BackgroundServer
    from covspec.runtime_edge.settings import EdgeSettings

    pair = ensure_pair()
    bundle = ensure_bundle(pair)
    target = load_model(str(pair.target), dtype="float32")
    qa = scenes.dataset("heldout", 1, start=777, tasks=("describe",))[0]
    image = tmp_path_factory.mktemp("scene") / "scene.png"
    qa.scene.image.save(image)
    reference = target.generate(qa.scene.image, qa.question, max_new_tokens=MAX_NEW)
    settings = EdgeSettings(target=str(pair.target), port=0, dtype="float32", threads=1)
    with BackgroundServer(settings, target) as server:
        yield {"pair": pair, "bundle": bundle, "url": server.url, "image": image, "prompt": qa.question,
               "reference": reference, "out": tmp_path_factory.mktemp("pairing") / "pairing.json"}  # fmt: skip


def _covspec(*args: str) -> subprocess.CompletedProcess:
    """The command as a user runs it: a subprocess."""
    return subprocess.run([COVSPEC, *args], capture_output=True, text=True, timeout=300)


def _in_process(*args: str):
    """The command in this process (its refusals and flag handling, without a subprocess's start-up)."""
    from typer.testing import CliRunner

    from covspec.cli.main import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def paired(demo) -> dict:
    done = _covspec("pair", "--bundle", str(demo["bundle"]), "--edge", demo["url"], "--calibration", "4",
                    "--threads", "1", "--out", str(demo["out"]), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)
    assert json.loads(demo["out"].read_text()) == printed
    return printed


@pytest.mark.e2e
def test_pair_accepts_the_demo_pair_and_writes_the_file(paired, demo) -> None:
    from covspec.link.presets import LINK_PRESETS
    from covspec.models import load_model

    drafter = load_model(str(demo["pair"].drafter), dtype="float32")
    assert paired["format"] == 1 and paired["edge_url"] == demo["url"]
    assert paired["drafter"]["tokenizer_hash"] == drafter.fingerprint.tokenizer_hash == paired["target"][
        "tokenizer_hash"]  # fmt: skip
    assert paired["checks"] == ["protocol", "vocabulary", "chat template", "end-of-sequence ids",
                                "special token ids", "image handling"]  # fmt: skip
    m = paired["measurements"]
    link = m["link"]
    assert link["through"] == MEASURED and 0 < link["rtt_p10_s"] <= link["rtt_s"] <= link["rtt_p90_s"]
    assert link["uplink_bytes_per_s"] > 0 and link["downlink_bytes_per_s"] > 0
    assert m["drafter"]["step_s"] > 0 and len(m["drafter"]["by_context"]) == 4
    assert m["drafter"]["by_context"][0]["context_from"] > m["drafter"]["prompt_length"]
    assert m["verify"]["base_s"] >= 0 and m["verify"]["slope_s"] >= 0
    assert m["calibration"]["generations"] == 4 and m["calibration"]["draft_lens"] == [2, 4, 8]
    acceptance = m["acceptance"]
    assert len(acceptance["accept_probs"]) == 8 and all(0 <= a <= 1 for a in acceptance["accept_probs"])
    assert acceptance["rounds"] > 0 and set(acceptance["aal_by_k"]) <= {"2", "4", "8"}
    rec = paired["recommendation"]
    assert (rec["verify_mode"], rec["policy"], rec["measured_link"]) == ("compact", "cost", MEASURED)
    assert set(rec["links"]) == {MEASURED, *LINK_PRESETS}
    for choice in rec["links"].values():
        assert 1 <= choice["draft_len"] <= 8 and choice["expected_tokens_per_s"] > 0
        assert choice["expected_speedup"] == pytest.approx(choice["expected_tokens_per_s"]
                                                           / choice["target_only_tokens_per_s"])  # fmt: skip
    assert rec["links"]["cell-edge"]["rtt_s"] > rec["links"]["lan"]["rtt_s"]
    assert rec["warm_start"]["accept_probs"] == acceptance["accept_probs"]
    assert rec["warm_start"]["rtt_s"] == rec["links"][MEASURED]["rtt_s"] == m["round_overhead_s"]


@pytest.mark.e2e
def test_run_with_the_pairing_file_starts_warm_and_stays_lossless(paired, demo) -> None:
    args = ["run", "--bundle", str(demo["bundle"]), "--edge", demo["url"], "--image", str(demo["image"]),
            "--prompt", demo["prompt"], "--max-new-tokens", str(MAX_NEW), "--threads", "1", "--json"]  # fmt: skip
    rec = paired["recommendation"]
    for extra, link in (([], MEASURED), (["--link", "lan"], "lan")):
        done = _covspec(*args, *extra, "--pairing", str(demo["out"]))
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout)
        stats = result["stats"]
        assert result["tokens"] == demo["reference"]  # the target's own output, warm or not
        assert stats["draft_len"] == rec["links"][link]["draft_len"]
        assert (stats["verify_mode"], stats["policy"], stats["warm_start"]) == ("compact", "cost", True)
        assert stats["pairing"]["path"] == str(demo["out"]) and stats["pairing"]["link"] == link
        assert stats["pairing"]["set"]["warm"]["rtt_s"] == rec["links"][link]["rtt_s"]
    explicit = _in_process(*args, "--pairing", str(demo["out"]), "--draft-len", "3", "--policy", "fixed")
    assert explicit.exit_code == 0, explicit.stderr[-3000:]
    result = json.loads(explicit.stdout)
    assert result["tokens"] == demo["reference"]
    stats = result["stats"]
    assert (stats["draft_len"], stats["policy"], stats["verify_mode"]) == (3, "fixed", "compact")
    assert stats["pairing"]["kept"] == ["draft_len", "policy"] and "draft_len" not in stats["pairing"]["set"]


@pytest.mark.e2e
def test_run_refuses_a_file_measured_for_another_target(paired, demo, tmp_path) -> None:
    other = {**paired, "target": {**paired["target"], "tokenizer_hash": "0" * 64}}
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    done = _in_process("run", "--bundle", str(demo["bundle"]), "--edge", demo["url"], "--image", str(demo["image"]),
                       "--prompt", demo["prompt"], "--threads", "1", "--pairing", str(path), "--json")  # fmt: skip
    assert done.exit_code == 2 and "measured for another target: its tokenizer_hash" in done.stderr


@pytest.mark.e2e
def test_pair_refuses_a_drafter_whose_image_token_id_differs(demo, tmp_path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(demo["bundle"], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["model"]["image_token_id"] = 5
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    done = _in_process("pair", "--bundle", str(bundle), "--edge", demo["url"], "--threads", "1", "--out",
                       str(tmp_path / "p.json"))  # fmt: skip
    assert done.exit_code == 2, done.stderr[-3000:]
    assert "do not pair: image token id: drafter 5, target 4" in done.stderr
    assert not (tmp_path / "p.json").exists()


@pytest.mark.e2e
def test_pair_refuses_a_drafter_whose_vocabulary_differs(demo, tmp_path) -> None:
    drafter = tmp_path / "drafter"
    shutil.copytree(demo["pair"].drafter, drafter)
    path = drafter / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    vocab[by_id[300]], vocab[by_id[301]] = 301, 300  # two ordinary tokens swap ids: every merge still holds
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    done = _in_process("pair", "--drafter", str(drafter), "--edge", demo["url"], "--threads", "1", "--out",
                       str(tmp_path / "p.json"))  # fmt: skip
    assert done.exit_code == 2, done.stderr[-3000:]
    assert f"token id 300 is {by_id[301]!r} for the drafter but {by_id[300]!r} for the target" in done.stderr


@pytest.mark.e2e
def test_pair_measures_the_device_watts_and_run_plans_by_them(paired, demo, tmp_path) -> None:
    """`pair --energy estimate` stores the device's watts idle and drafting (the estimate meter: idle share of the
    power profile, plus one busy core while the drafter steps on its one thread) with the radio's model on top;
    `run --pairing --objective energy` then plans by tokens per joule with them, still committing the target's own
    tokens. A file without watts cannot drive the energy objective."""
    from covspec.profile.energy.estimate import PROFILES
    from covspec.profile.energy.radio import PROFILES as RADIOS

    out = tmp_path / "energy.json"
    done = _covspec("pair", "--bundle", str(demo["bundle"]), "--edge", demo["url"], "--calibration", "2",
                    "--threads", "1", "--energy", "estimate", "--power-profile", "orin-nano-15w", "--radio", "lte",
                    "--out", str(out), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    written = json.loads(out.read_text())
    orin, lte_w = PROFILES["orin-nano-15w"], RADIOS["lte"].tail_mw / 1000
    energy, readings = written["energy"], written["measurements"]["energy"]
    assert readings["meter"] == "estimate" and readings["estimated"] and readings["radio"] == "lte"
    assert energy["wait_w"] == pytest.approx(orin.idle_w + lte_w, abs=0.1)  # a sleeping process: idle + radio
    assert energy["draft_w"] - energy["wait_w"] == pytest.approx(orin.core_w, rel=0.35)  # about one busy core
    assert energy["up_joules_per_byte"] > energy["down_joules_per_byte"] > 0

    args = ["run", "--bundle", str(demo["bundle"]), "--edge", demo["url"], "--image", str(demo["image"]),
            "--prompt", demo["prompt"], "--max-new-tokens", str(MAX_NEW), "--threads", "1", "--json",
            "--objective", "energy"]  # fmt: skip
    run = _covspec(*args, "--pairing", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    stats = result["stats"]
    assert result["tokens"] == demo["reference"]
    assert stats["objective"] == "energy" and stats["pairing"]["set"]["energy"] == energy
    assert stats["device_joules"] >= stats["wall_s"] * energy["wait_w"]
    refused = _in_process(*args, "--pairing", str(demo["out"]))  # the file without watts
    assert refused.exit_code == 2 and "needs --power-profile" in refused.stderr
