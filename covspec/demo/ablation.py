"""`covspec bench ablation` on the demo pair: each step of the runtime added in turn, side by side per link, for one
task of the held-out scenes or all of them (DESIGN.md §10: pinned edge and device, modes interleaved)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from covspec.bench.sidebyside import ABLATION_MODES, BenchMode, pinned, run_side_by_side
from covspec.cpus import split_cpus
from covspec.demo.runner import MAX_NEW_TOKENS, WARMUP_QUESTIONS, WARMUP_SCENE, demo_items, load_drafter
from covspec.demo.train import PairPaths
from covspec.link.presets import link_profile


def run_ablation(
    pair: PairPaths,
    *,
    bundle: Path | None,
    links: Sequence[str] = ("loopback",),
    tasks: Sequence[str] = ("all",),
    n_scenes: int = 20,
    modes: Sequence[BenchMode] = ABLATION_MODES,
    max_new_tokens: int = MAX_NEW_TOKENS,
    progress: Any = None,
) -> dict[str, Any]:
    """``{"runs": [{"task": ..., "links": [...rows per link...]}, ...], ...}`` with the drafter on ONNX Runtime from
    ``bundle`` (else torch), the edge a pinned `covspec serve` of the demo target."""
    profiles = [link_profile(name) for name in links]
    cpus = split_cpus()
    runs = []
    with pinned(cpus):
        engine = load_drafter(pair, bundle, len(cpus.device))
        for task in tasks:
            items = demo_items(pair, n_scenes, task, max_new_tokens)
            warmup = demo_items(pair, WARMUP_QUESTIONS, task, max_new_tokens, start=WARMUP_SCENE)
            result = run_side_by_side(
                engine, pair.target, items, profiles, cpus=cpus, modes=modes, max_new_tokens=max_new_tokens,
                warmup_items=warmup, progress=progress,
            )  # fmt: skip
            runs.append({"task": task, **result})
    return {
        "runs": runs,
        "scenes": n_scenes,
        "engine": "onnxruntime-fp32" if bundle is not None else "torch-fp32",
        "target": "demo pair target (LLaVA, 2.3M parameters), float32, this CPU",
        "scenario": "one device, one edge on this machine (disjoint CPUs), emulated links",
    }


def plot_ablation(result: dict[str, Any], path: Path) -> None:
    """Speedup over target-only per mode, one panel per task, one bar group per link; the bound as ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(6.5 * len(runs), 4.5), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        modes = [row["mode"] for row in run["links"][0]["rows"]]
        width = 0.8 / len(run["links"])
        for j, link in enumerate(run["links"]):
            xs = [i + j * width for i in range(len(modes))]
            ax.bar(xs, [row["speedup"] for row in link["rows"]], width, label=link["link"])
            base = link["rows"][0]["tokens_per_s"]
            for x, row in zip(xs, link["rows"], strict=True):
                if row["bound_tokens_per_s"]:
                    ax.plot([x - width / 2, x + width / 2], [row["bound_tokens_per_s"] / base] * 2, color="black", lw=1)
        ax.axhline(1.0, color="grey", lw=0.6)
        ax.set_xticks([i + width * (len(run["links"]) - 1) / 2 for i in range(len(modes))])
        ax.set_xticklabels(modes, rotation=30, ha="right", fontsize=8)
        ax.set(ylabel="speedup over target-only", title=f"task: {run['task']} ({run['items']} scenes)")
        ax.legend(fontsize=8)
    fig.suptitle("covspec ablation on the demo pair (black ticks: analytical bound)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
