"""Verify cost vs draft length, and what the network loop costs, on random-weight models of realistic size.

  .venv/bin/python benchmarks/verify_cost.py [--out benchmarks/results/verify_cost] [--quick]

Part A: the edge's verify time per round (target forward over K+1 tokens + verification, the edge's own
`process_round`) for K = 1..8, relative to K = 1, rounds of all K interleaved so drift hits them alike.
Part B: end-to-end tokens/s of the device-edge loop (a `covspec serve` subprocess on 127.0.0.1) against the same
models and the same loop code in one process, plus target-only through the server's chat completions, measured
side by side in one run. Edge and device are pinned to disjoint CPUs with one torch thread each (DESIGN.md §10).
Writes verify_cost.json and verify_cost.png.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from covspec.cpus import CpuSplit, pin_process, set_torch_threads, split_cpus, usable_cpus
from covspec.spec.cost_model import analytical_tokens_per_s

PROMPTS = ["Describe the image in detail.", "What shapes are in the picture?", "What colours do you see?"]


def _scene(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (64, 48), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = int(rng.integers(0, 44)), int(rng.integers(0, 28))
        draw.ellipse((x, y, x + 18, y + 18), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def cpu_split() -> CpuSplit:
    """One CPU a side: the device on the first CPU this process may use, the edge on the second (shared if one)."""
    return split_cpus(sorted(usable_cpus())[:2])


def _pin(cpus: frozenset[int]) -> None:
    pin_process(cpus)
    set_torch_threads(1)


def build_models(root: Path, quick: bool) -> tuple[Path, Path]:
    from covspec.models.families import TextSize
    from covspec.models.tiny import build_tiny

    if quick:
        target_text = TextSize(hidden=256, intermediate=704, layers=4, heads=4, kv_heads=2)
        drafter_text = TextSize(hidden=64, intermediate=176, layers=2, heads=2, kv_heads=1)
    else:  # ~300M parameters; the drafter about ten times smaller
        target_text = TextSize(hidden=1024, intermediate=2816, layers=27, heads=16, kv_heads=4)
        drafter_text = TextSize(hidden=512, intermediate=1408, layers=10, heads=8, kv_heads=2)
    target, drafter = root / "target", root / "drafter"
    if not (target / "config.json").exists():
        build_tiny("llava", "target", target, seed=0, text_size=target_text)
    if not (drafter / "config.json").exists():
        build_tiny("llava", "drafter", drafter, seed=0, text_size=drafter_text)
    return target, drafter


def _parameters(path: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in path.glob("*.safetensors"):
        with safe_open(str(file), "np") as f:
            total += sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    return total


def verify_cost(target_path: Path, reps: int, progress: Progress) -> dict[int, list[float]]:
    from covspec.models import load_model
    from covspec.protocol import RoundRequest, SessionSpec
    from covspec.runtime_edge.verifier import TargetState, process_round

    target = load_model(str(target_path), dtype="float32")
    image = Image.open(io.BytesIO(_scene(1))).convert("RGB")
    rng = np.random.default_rng(0)
    times: dict[int, list[float]] = {k: [] for k in range(0, 9)}  # K=0: one target step, the target-only cost
    task = progress.add_task("verify rounds, K=0..8", total=reps * 9)
    for _ in range(reps):
        for k in rng.permutation(np.arange(0, 9)).tolist():
            spec = SessionSpec(PROMPTS[0], max_new_tokens=64)
            state = TargetState(spec, target.start(image, spec.prompt), frozenset(), np.random.default_rng(0))
            process_round(state, RoundRequest(1, np.array([5], dtype=np.int32)))  # warm: a pending token exists
            draft = rng.integers(3, target.vocab_size, size=k).astype(np.int32)
            started = time.perf_counter()
            process_round(state, RoundRequest(2, draft))
            times[k].append(time.perf_counter() - started)
            progress.advance(task)
    return times


def drafter_step_time(engine, reps: int = 20) -> float:
    """Median seconds of one drafter step (one token through the drafter with its KV cache)."""
    image = Image.open(io.BytesIO(_scene(2))).convert("RGB")
    sequence = engine.start(image, PROMPTS[0])
    base, times = sequence.length, []
    for i in range(reps):
        started = time.perf_counter()
        sequence.extend([5 + i])
        times.append(time.perf_counter() - started)
    sequence.crop(base)
    return statistics.median(times)


def end_to_end(
    target_path: Path, drafter_path: Path, max_new: int, k: int, progress: Progress, edge_cpus: frozenset[int]
) -> dict:
    import openai

    from covspec.bench.inprocess import generate_in_process
    from covspec.models import load_model
    from covspec.protocol import VerifyMode
    from covspec.runtime_device.client import EdgeClient
    from covspec.runtime_device.engines import load_engine
    from covspec.runtime_device.loop import GenerationConfig, generate
    from covspec.runtime_edge.server import ServeProcess
    from covspec.spec.estimators import PositionAcceptance
    from covspec.spec.policy import PolicyKind

    engine = load_engine("torch", str(drafter_path), dtype="float32")
    target = load_model(str(target_path), dtype="float32")
    draft_step_s = drafter_step_time(engine)
    server = ServeProcess(target_path, dtype="float32", threads=1, cpus=edge_cpus).wait_ready(timeout_s=300)
    url = server.url
    client = EdgeClient(url)
    chat = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    config = GenerationConfig(
        max_new_tokens=max_new, draft_len=k, verify_mode=VerifyMode.COMPACT, policy=PolicyKind.FIXED
    )
    acceptance = PositionAcceptance(k)  # the measured a_i of the network rounds, for the analytical bound
    rows: dict[str, dict[str, list[float]]] = {
        m: {"tokens": [], "seconds": [], "aal": []} for m in ("network", "in_process", "target_only")
    }
    identical = True
    task = progress.add_task("end-to-end generations", total=3 * len(PROMPTS))
    try:
        for i, prompt in enumerate(PROMPTS):
            img = _scene(10 + i)
            pil = Image.open(io.BytesIO(img)).convert("RGB")
            result = generate(engine, client, img, prompt, config)
            rows["network"]["tokens"].append(result.stats["generated_tokens"])
            rows["network"]["seconds"].append(result.stats["wall_s"])
            rows["network"]["aal"].append(result.stats["aal"])
            for observation in result.rounds:
                acceptance.record(observation.drafted, observation.accepted)
            progress.advance(task)
            tokens, stats, seconds = generate_in_process(engine, target, pil, prompt, config)
            identical &= tokens == result.tokens
            rows["in_process"]["tokens"].append(len(tokens))
            rows["in_process"]["seconds"].append(seconds)
            rows["in_process"]["aal"].append(stats.aal)
            progress.advance(task)
            started = time.perf_counter()
            uri = "data:image/png;base64," + base64.b64encode(img).decode()
            reply = chat.chat.completions.create(
                model="t",
                max_tokens=max_new,
                temperature=0,
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": prompt}],
                    }
                ],
            )
            rows["target_only"]["seconds"].append(time.perf_counter() - started)
            rows["target_only"]["tokens"].append(reply.usage.completion_tokens)
            progress.advance(task)
    finally:
        server.stop()
    summary = {}
    for mode, r in rows.items():
        summary[mode] = {
            "tokens_per_s": sum(r["tokens"]) / sum(r["seconds"]),
            "generated_tokens": sum(r["tokens"]),
            "seconds": sum(r["seconds"]),
            "aal": statistics.mean(r["aal"]) if r["aal"] else None,
        }
    summary["network_over_in_process"] = summary["network"]["tokens_per_s"] / summary["in_process"]["tokens_per_s"]
    summary["network_over_target_only"] = summary["network"]["tokens_per_s"] / summary["target_only"]["tokens_per_s"]
    summary["identical_outputs"] = identical
    summary["drafter_step_s"] = draft_step_s
    summary["accept_probs"] = acceptance.probabilities().tolist()
    return summary


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    ks = sorted(int(k) for k in result["verify"]["ratio_vs_k1"])  # K >= 1
    a.plot(ks, [result["verify"]["ratio_vs_k1"][str(k)] for k in ks], marker="o")
    a.axhline(1.0, color="grey", lw=0.5)
    a.set(
        xlabel="draft length K",
        ylabel="verify time / verify time at K=1",
        title=f"edge verify cost ({result['models']['target_params'] / 1e6:.0f}M target, CPU)",
    )
    e2e = result["end_to_end"]
    modes = ["target_only", "in_process", "network"]
    b.bar(modes, [e2e[m]["tokens_per_s"] for m in modes], color=["grey", "tab:blue", "tab:orange"])
    b.axhline(
        e2e["analytical_tokens_per_s"],
        color="tab:red",
        ls="--",
        lw=1,
        label=f"analytical bound at measured AAL {e2e['network']['aal']:.2f}",
    )
    b.legend(loc="upper right", fontsize=8)
    b.set(ylabel="tokens/s", title=f"end to end, K={result['end_to_end_k']}, compact, greedy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/verify_cost"))
    parser.add_argument("--models", type=Path, default=None, help="Where to build/keep the checkpoints.")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="Small models (a smoke run of the script).")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    models = args.models or args.out / ("models-quick" if args.quick else "models")
    console = Console()
    with Progress(console=console) as progress:
        build = progress.add_task("building random-weight checkpoints", total=None)
        target, drafter = build_models(models, args.quick)
        progress.remove_task(build)
        cpus = cpu_split()
        _pin(cpus.edge)
        times = verify_cost(target, args.reps, progress)
        _pin(cpus.device)
        e2e = end_to_end(target, drafter, args.max_new_tokens, args.k, progress, cpus.edge)
    medians = {k: statistics.median(v) for k, v in times.items()}
    bound = dict(accept_probs=e2e["accept_probs"], draft_step_s=e2e["drafter_step_s"], verify_s=medians[args.k])
    e2e["analytical_tokens_per_s"] = analytical_tokens_per_s(**bound)
    e2e["analytical_tokens_per_s_with_overlap"] = analytical_tokens_per_s(**bound, overlap=True)
    e2e["analytical_target_only_tokens_per_s"] = 1.0 / medians[0]
    result = {
        "models": {
            "target_params": _parameters(target),
            "drafter_params": _parameters(drafter),
            "family": "llava",
            "dtype": "float32",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "edge_cpu": min(cpus.edge),
            "device_cpu": min(cpus.device),
            "cpus_shared": cpus.shared,
            "torch_threads": 1,
        },
        "verify": {
            "median_s": {str(k): medians[k] for k in medians},
            "ratio_vs_k1": {str(k): medians[k] / medians[1] for k in medians if k >= 1},
            "k0_is": "one target step (the pending token only): the target-only cost per token",
            "reps": args.reps,
        },
        "end_to_end_k": args.k,
        "end_to_end": e2e,
    }
    (args.out / "verify_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "verify_cost.png")
    table = Table(title="verify time per round vs K (median)")
    table.add_column("K")
    table.add_column("ms")
    table.add_column("vs K=1")
    for k in sorted(medians):
        label = "0 (target step)" if k == 0 else str(k)
        table.add_row(label, f"{medians[k] * 1e3:.1f}", f"{medians[k] / medians[1]:.2f}x")
    console.print(table)
    console.print(json.dumps(e2e, indent=2))
    console.print(f"wrote {args.out / 'verify_cost.json'} and {args.out / 'verify_cost.png'}")


if __name__ == "__main__":
    main()
