"""The real command lines: `covspec serve` as a subprocess, `covspec run` against it (and against a vanished edge)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from covspec.link.relay import FaultPlan, TcpRelay
from covspec.runtime_device.client import EdgeClient
from covspec.runtime_edge.server import ServeProcess
from tests.helpers import PROMPTS, image_bytes, photo, pil

COVSPEC = str(Path(sys.executable).parent / "covspec")
STATS_KEYS = {
    "generated_tokens",
    "rounds",
    "aal",
    "acceptance_rate",
    "tokens_per_s",
    "uplink_bytes",
    "downlink_bytes",
    "setup_uplink_bytes",
    "setup_downlink_bytes",
    "uplink_bytes_per_token",
    "downlink_bytes_per_token",
    "draft_len",
    "verify_mode",
}


@pytest.fixture(scope="module")
def served(tiny_pair, tmp_path_factory):
    pair = tiny_pair("llava")
    key_file = tmp_path_factory.mktemp("keys") / "key"
    key_file.write_text("cli-secret\n")
    batching = ("--max-batch", "4", "--batch-window-ms", "2.5", "--schedule", "lyapunov")
    server = ServeProcess(
        pair.target, dtype="float64", extra_args=("--api-key-file", str(key_file), "--max-sessions", "8", *batching)
    )
    try:
        server.wait_ready(timeout_s=120)
        yield pair, server.url, key_file, server.port
    finally:
        server.stop()


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([COVSPEC, "run", *args], capture_output=True, text=True, timeout=300)


def test_run_json_equals_target_output(served, loaded_target, tmp_path) -> None:
    pair, url, key_file, _ = served
    img = tmp_path / "scene.png"
    img.write_bytes(image_bytes(41))
    common = [
        "--drafter",
        str(pair.drafter),
        "--image",
        str(img),
        "--prompt",
        PROMPTS[6],
        "--max-new-tokens",
        "16",
        "--dtype",
        "float64",
        "--api-key-file",
        str(key_file),
        "--draft-len",
        "3",
    ]
    done = _run([*common, "--edge", url, "--json", "--verify-mode", "dssd"])
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    target = loaded_target("llava")
    want = target.generate(pil(img.read_bytes()), PROMPTS[6], max_new_tokens=16)
    assert data["tokens"] == want and data["text"] == target.decode(want)
    assert set(data["stats"]) >= STATS_KEYS
    assert data["stats"]["verify_mode"] == "dssd" and data["stats"]["draft_len"] == 3
    assert data["stats"]["objective"] == "latency" and data["stats"]["device_joules"] is None  # no watts given

    human = _run([*common, "--edge", url])
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith(target.decode(want)) and "AAL" in human.stdout

    # through an emulated link, the adaptive policy and the mode auto resolves to: the same tokens
    linked = _run([*common, "--edge", url, "--json", "--link", "wifi", "--policy", "cost", "--verify-mode", "auto"])
    assert linked.returncode == 0, linked.stderr
    stats = json.loads(linked.stdout)["stats"]
    assert json.loads(linked.stdout)["tokens"] == want
    assert stats["policy"] == "cost" and stats["verify_mode"] == "compact" and stats["wall_s"] > 0.008

    no_key = _run([c for c in common if c != str(key_file) and c != "--api-key-file"] + ["--edge", url])
    assert no_key.returncode != 0 and "unauthorized" in no_key.stderr and no_key.stdout == ""

    # the drafter reading half the visual tokens: the same tokens, and the count it read is reported
    reduced = _run([*common, "--edge", url, "--json", "--keep", "0.5", "--reducer", "merge"])
    assert reduced.returncode == 0, reduced.stderr
    full_view = data["stats"]["drafter_image_tokens"]
    assert full_view > 1 and data["stats"]["reducer"] is None
    assert json.loads(reduced.stdout)["tokens"] == want
    assert json.loads(reduced.stdout)["stats"]["drafter_image_tokens"] == round(0.5 * full_view)
    assert json.loads(reduced.stdout)["stats"]["reducer"] == "merge"
    bad = _run([*common, "--edge", url, "--keep", "0.5", "--reducer", "magic"])
    assert bad.returncode != 0 and "unknown reducer 'magic'" in bad.stderr


def test_serve_batching_flags_reach_the_scheduler(served) -> None:
    _, url, key_file, _ = served
    headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
    info = httpx.get(f"{url}/v1/info", headers=headers, timeout=30).json()
    assert info["batching"] == {"max_batch": 4, "window_s": 0.0025, "schedule": "lyapunov"}


def test_run_exits_nonzero_when_the_edge_is_gone(served, tmp_path, loaded_target) -> None:
    pair, url, key_file, port = served
    img = tmp_path / "scene.png"
    img.write_bytes(image_bytes(42))
    # one connection carries everything: cut it after the hello, the opened frame and a few verdicts, stop listening
    probe = EdgeClient(url, api_key=key_file.read_text().strip())
    probe.connection().hello()
    setup_down = probe.counter.received["setup"]  # WebSocket upgrade and the edge's hello
    probe.close()
    fault = FaultPlan(connection_index=0, cut_downlink_after=setup_down + 150, refuse_after_cut=True)
    with TcpRelay("127.0.0.1", port, fault=fault) as relay:
        done = _run(
            [
                "--drafter",
                str(pair.drafter),
                "--image",
                str(img),
                "--prompt",
                PROMPTS[0],
                "--max-new-tokens",
                "40",
                "--draft-len",
                "1",
                "--policy",
                "fixed",
                "--api-key-file",
                str(key_file),
                "--edge",
                relay.url,
                "--reconnect-window-s",
                "1",
                "--json",
            ]
        )
    assert fault.fired
    assert done.returncode != 0
    assert "edge_unavailable" in done.stderr and "could not reach the edge" in done.stderr
    partial = json.loads(done.stdout)  # what was committed, and only that: the target's own output up to the cut
    want = loaded_target("llava").generate(pil(img.read_bytes()), PROMPTS[0], max_new_tokens=40)
    assert partial["partial"] and 0 < len(partial["tokens"]) < len(want)
    assert partial["tokens"] == want[: len(partial["tokens"])]


def test_serve_threads_are_set_and_logged(tiny_pair) -> None:
    """`covspec serve --threads 1` sizes torch's pool before the target loads, and says so (with -v), naming the CPUs
    its affinity allows."""
    from covspec.cpus import usable_cpus
    from covspec.runtime_edge.server import free_port

    cpu = max(usable_cpus())
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if hasattr(os, "sched_setaffinity") else None
    proc = subprocess.Popen(
        [COVSPEC, "-v", "serve", "--target", str(tiny_pair("llava").target), "--port", str(free_port()),
         "--threads", "1", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=pin,
    )  # fmt: skip
    timer = threading.Timer(120, proc.kill)  # a hung server ends the read below instead of the test run
    timer.start()
    try:
        line = next((line for line in proc.stderr if "torch thread" in line), "")
    finally:
        timer.cancel()
        proc.terminate()
        proc.wait(timeout=30)
    expected = f"edge: 1 torch thread on CPUs {{{cpu}}}" if pin else "edge: 1 torch thread on CPUs {"
    assert expected in line


def test_run_threads_are_set_and_logged(served, tmp_path) -> None:
    pair, url, key_file, _ = served
    img = tmp_path / "scene.png"
    img.write_bytes(image_bytes(43))
    done = subprocess.run(
        [COVSPEC, "-v", "run", "--drafter", str(pair.drafter), "--image", str(img), "--prompt", PROMPTS[1],
         "--max-new-tokens", "4", "--dtype", "float64", "--api-key-file", str(key_file), "--edge", url,
         "--threads", "1", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert 0 < len(json.loads(done.stdout)["tokens"]) <= 4
    assert "device: 1 torch thread on CPUs {" in done.stderr


def test_run_uploads_the_resized_image_and_says_so(served, loaded_target, tmp_path) -> None:
    """A photo-sized JPEG goes up as the target's processor input (PNG, far smaller) with the same tokens as the
    target's own on the original; --no-upload-resize sends the file as it is; --upload-quality is LOSSY and ranged."""
    pair, url, key_file, _ = served
    img = tmp_path / "photo.jpg"
    img.write_bytes(photo(800, 600, seed=43))
    common = ["--drafter", str(pair.drafter), "--image", str(img), "--prompt", PROMPTS[2], "--max-new-tokens", "12"]
    common += ["--dtype", "float64", "--api-key-file", str(key_file), "--edge", url, "--json"]
    want = loaded_target("llava").generate(pil(img.read_bytes()), PROMPTS[2], max_new_tokens=12)
    resized = _run(common)
    assert resized.returncode == 0, resized.stderr
    data = json.loads(resized.stdout)
    stats = data["stats"]
    assert data["tokens"] == want
    assert stats["upload_resized"] is True and stats["upload_fallback"] is None and stats["upload_quality"] is None
    assert stats["upload_original_bytes"] == len(img.read_bytes()) > 4 * stats["upload_image_bytes"]
    original = _run([*common, "--no-upload-resize"])
    assert original.returncode == 0, original.stderr
    plain = json.loads(original.stdout)
    assert plain["tokens"] == want and plain["stats"]["upload_resized"] is False
    assert plain["stats"]["upload_image_bytes"] == plain["stats"]["upload_original_bytes"]
    # the image is the setup's largest part: what the resize saves shows in the setup bytes, framing aside
    saved = plain["stats"]["upload_image_bytes"] - stats["upload_image_bytes"]
    assert plain["stats"]["setup_uplink_bytes"] - stats["setup_uplink_bytes"] >= saved
    lossy = _run([*common, "--upload-quality", "40"])
    assert lossy.returncode == 0, lossy.stderr
    assert json.loads(lossy.stdout)["stats"]["upload_quality"] == 40
    out_of_range = _run([*common, "--upload-quality", "0"])
    assert out_of_range.returncode != 0 and "upload-quality" in out_of_range.stderr


def test_run_with_the_energy_objective_reports_the_estimated_joules(served, loaded_target, tmp_path) -> None:
    """--objective energy plans by tokens per joule of the estimate's watts: the same tokens, the joules reported
    within what the model allows for the measured wall time (waiting the whole time, or drafting the whole time)."""
    from covspec.profile.energy.objective import energy_inputs

    pair, url, key_file, _ = served
    img = tmp_path / "scene.png"
    img.write_bytes(image_bytes(43))
    common = ["--drafter", str(pair.drafter), "--image", str(img), "--prompt", PROMPTS[2], "--max-new-tokens", "16",
              "--dtype", "float64", "--api-key-file", str(key_file), "--edge", url, "--policy", "cost"]  # fmt: skip
    want = loaded_target("llava").generate(pil(img.read_bytes()), PROMPTS[2], max_new_tokens=16)
    done = _run([*common, "--json", "--objective", "energy", "--power-profile", "orin-nano-15w", "--radio", "lte"])
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    stats = data["stats"]
    assert data["tokens"] == want and stats["objective"] == "energy"
    watts = energy_inputs("orin-nano-15w", "lte", 1)
    moved = stats["uplink_bytes"] * watts.up_joules_per_byte + stats["downlink_bytes"] * watts.down_joules_per_byte
    assert stats["wall_s"] * watts.wait_w + moved <= stats["device_joules"]
    assert stats["device_joules"] <= stats["wall_s"] * watts.draft_w + moved

    human = _run([*common, "--objective", "balanced", "--power-profile", "phone-soc"])
    assert human.returncode == 0, human.stderr
    assert "device joules (ESTIMATE)" in human.stdout and "objective balanced" in human.stdout
    refused = _in_process(*common, "--objective", "energy")
    assert refused.exit_code == 2 and "needs --power-profile" in refused.stderr
    unknown = _in_process(*common, "--power-profile", "toaster")
    assert unknown.exit_code == 2 and "unknown power profile 'toaster'" in unknown.stderr


def _in_process(*args: str):
    """`covspec run` in this process: a refusal without a subprocess's start-up."""
    from typer.testing import CliRunner

    from covspec.cli.main import app

    return CliRunner().invoke(app, ["run", *args])
