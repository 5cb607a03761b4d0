"""`covspec bench ablation` end to end on the shipped demo pair: a real pinned `covspec serve`, a real emulated link,
every row of the ablation, JSON + PNG + tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

COVSPEC = str(Path(sys.executable).parent / "covspec")
MODES = ["target-only", "vanilla", "dssd", "compact", "+ one-round-trip sessions", "+ margin gating", "+ cost policy"]


def test_ablation_writes_every_row_per_link(tmp_path) -> None:
    env = {**os.environ, "COVSPEC_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "out"
    args = [COVSPEC, "bench", "ablation", "--scenes", "2", "--task", "describe", "--link", "loopback", "--link",
            "lan", "--engine", "torch", "--out", str(out)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ablation: task describe, 2 scenes, link lan" in done.stdout
    result = json.loads((out / "ablation.json").read_text())
    assert (out / "ablation.png").stat().st_size > 10_000
    (run,) = result["runs"]
    assert run["task"] == "describe" and [link["link"] for link in run["links"]] == ["loopback", "lan"]
    for link in run["links"]:
        rows = {row["mode"]: row for row in link["rows"]}
        assert list(rows) == MODES
        assert all(row["identical_to_target"] for row in rows.values())
        assert rows["target-only"]["speedup"] == 1.0 and rows["target-only"]["of_bound"] is None
        for name in MODES[1:]:
            assert 0 < rows[name]["of_bound"] <= 1.1  # the bound is built from the very rounds it bounds
            if name != "+ cost policy":  # the cost policy may burst every round: no draft round, no AAL
                assert rows[name]["aal"] >= 1.0
        # the full draft rows of vanilla against ids only; the persistent connection's setup is the open frame
        assert rows["vanilla"]["uplink_bytes_per_token"] > 20 * rows["compact"]["uplink_bytes_per_token"]
        fresh, kept = rows["compact"], rows["+ one-round-trip sessions"]
        assert kept["setup_downlink_bytes_per_generation"] < fresh["setup_downlink_bytes_per_generation"]


def test_ablation_refuses_unknown_tasks_and_links(tmp_path) -> None:
    for flag, value, message in (("--task", "poetry", "unknown task"), ("--link", "pigeon", "unknown link preset")):
        done = subprocess.run([COVSPEC, "bench", "ablation", flag, value, "--out", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode != 0 and message in done.stderr


def test_bench_reduce_compares_each_reducer_with_the_full_view(tmp_path) -> None:
    env = {**os.environ, "COVSPEC_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "out"
    args = [COVSPEC, "bench", "reduce", "--scenes", "2", "--keep", "0.25,0.5,1.0", "--reducer", "covspec,pool",
            "--reduce-target", "--engine", "torch", "--out", str(out)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bench reduce: 2 scenes" in done.stdout
    result = json.loads((out / "reduce.json").read_text())
    assert (out / "reduce.png").stat().st_size > 10_000
    rows = [(r["reducer"], r["keep"]) for r in result["rows"]]
    assert rows == [("all", 1.0)] + [
        (name, keep) for base in ("covspec", "pool") for name in (base, f"{base}+target") for keep in (0.25, 0.5)
    ]
    full = result["rows"][0]
    assert full["prefill_share"] == 1.0 and full["aal_share"] == 1.0 and full["visual_tokens"] > 0
    assert 0.0 <= full["accuracy"] <= 1.0 and not full["target_reduced"]
    for row in result["rows"][1:]:
        lossy = row["reducer"].endswith("+target")
        assert row["target_reduced"] == lossy and row["identical_to_target"] == (not lossy)  # checked in the run
        assert row["aal"] >= 1.0 and 0.0 <= row["accuracy"] <= 1.0
        assert row["visual_tokens"] == max(1, round(row["keep"] * full["visual_tokens"]))
    # the drafter's cache after prefill holds the kept visual tokens and the same text tokens: what a row saves is
    # the same number of bytes per dropped visual token in every row
    per_token = {
        round((full["drafter_kv_kib"] - r["drafter_kv_kib"]) / (full["visual_tokens"] - r["visual_tokens"]), 9)
        for r in result["rows"][1:]
    }
    assert len(per_token) == 1 and per_token.pop() > 0
    assert result["target_only_tokens_per_s"] > 0
    assert all(r["tokens_per_s"] > 0 and r["speedup"] == r["tokens_per_s"] / result["target_only_tokens_per_s"]
               for r in result["rows"])  # fmt: skip
    assert "LOSSY" in done.stdout


def test_bench_reduce_refuses_an_unknown_reducer(tmp_path) -> None:
    done = subprocess.run([COVSPEC, "bench", "reduce", "--reducer", "magic", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode != 0 and "unknown reducer" in done.stderr


def test_bench_load_sets_batched_beside_one_at_a_time_and_target_only(tmp_path) -> None:
    env = {**os.environ, "COVSPEC_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "out"
    args = [COVSPEC, "bench", "load", "--devices", "1,3", "--questions", "2", "--schedule", "fcfs,lyapunov",
            "--engine", "torch", "--out", str(out)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bench load: N devices" in done.stdout
    result = json.loads((out / "load.json").read_text())
    assert (out / "load.png").stat().st_size > 10_000
    modes = ["batched", "one-at-a-time", "target-only batched", "batched lyapunov"]
    assert [(r["devices"], r["mode"]) for r in result["rows"]] == [(n, m) for n in (1, 3) for m in modes]
    for row in result["rows"]:
        assert row["identical_to_target"] and row["replay_misses"] == 0 and not row["errors"], row
        assert row["tokens_per_s"] > 0 and 0 < row["jain_index"] <= 1
        assert row["emulated_devices"] == (row["devices"] - 1 if row["mode"] != "target-only batched" else 0)
        assert row["vs_target_only"] == row["tokens_per_s"] / next(
            r["tokens_per_s"] for r in result["rows"] if r["devices"] == row["devices"] and r["mode"] == modes[2]
        )
    assert {r["max_batch"] for r in result["rows"] if r["mode"] == "one-at-a-time"} == {1}
    assert all(r["mean_batch_size"] == 1.0 for r in result["rows"] if r["mode"] == "one-at-a-time")
    assert result["emulated"].startswith("device 0 runs the real drafter")
