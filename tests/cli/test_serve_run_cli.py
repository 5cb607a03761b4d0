"""The real command lines: `covspec serve` as a subprocess, `covspec run` against it (and against a vanished edge)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from covspec.link.relay import FaultPlan, TcpRelay
from covspec.runtime_edge.server import ServeProcess
from tests.helpers import PROMPTS, image_bytes, pil

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
    server = ServeProcess(
        pair.target, dtype="float64", extra_args=("--api-key-file", str(key_file), "--max-sessions", "8")
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

    human = _run([*common, "--edge", url])
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith(target.decode(want)) and "AAL" in human.stdout

    no_key = _run([c for c in common if c != str(key_file) and c != "--api-key-file"] + ["--edge", url])
    assert no_key.returncode != 0 and "unauthorized" in no_key.stderr and no_key.stdout == ""


def test_run_exits_nonzero_when_the_edge_is_gone(served, tmp_path) -> None:
    pair, url, key_file, port = served
    img = tmp_path / "scene.png"
    img.write_bytes(image_bytes(42))
    # the third connection is the round channel: cut it after the first verdicts and stop listening
    fault = FaultPlan(connection_index=2, cut_downlink_after=300, refuse_after_cut=True)
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
                "--api-key-file",
                str(key_file),
                "--edge",
                relay.url,
                "--json",
            ]
        )
    assert fault.fired
    assert done.returncode != 0
    assert done.stdout == ""  # no token the target did not commit is ever printed
    assert "edge_unavailable" in done.stderr and "could not reach the edge" in done.stderr
