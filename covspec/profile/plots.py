"""The profile's PNGs, drawn from ``profile.json``'s numbers only: stage latencies with their spread, the drafter's
step latency against context length, and energy per stage and per token when a meter measured it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WIDTH_IN, HEIGHT_IN, DPI = 10.0, 4.8, 100


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_stages(profile: dict[str, Any], path: Path) -> Path:
    """Left: every stage's per-call median (ms) with a p10-p90 bar. Right: where a generation's time goes."""
    plt = _pyplot()
    stages = [(s["label"], s["seconds"]) for s in profile["stages"].values() if s["seconds"] is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, width_ratios=[3, 2])
    labels = [label for label, _ in stages][::-1]
    medians = [s["median"] * 1e3 for _, s in stages][::-1]
    low = [max(s["median"] - s["p10"], 0.0) * 1e3 for _, s in stages][::-1]
    high = [max(s["p90"] - s["median"], 0.0) * 1e3 for _, s in stages][::-1]
    left.barh(range(len(labels)), medians, xerr=[low, high], color="#4c72b0", capsize=3)
    left.set_yticks(range(len(labels)), labels, fontsize=7)
    left.set_xscale("log")
    left.set_xlabel("ms per call (median, p10-p90)")
    left.set_title("stage latency")
    breakdown = profile["breakdown"]
    bottom = 0.0
    colours = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#cccccc"]
    for (name, seconds), colour in zip(breakdown.items(), colours, strict=False):
        right.bar([0], [seconds * 1e3], bottom=[bottom], color=colour, label=f"{name}: {seconds * 1e3:.1f} ms")
        bottom += seconds * 1e3
    right.set_xticks([])
    right.set_ylabel("ms per generation (medians)")
    right.set_title("a generation's time")
    right.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_steps(profile: dict[str, Any], path: Path) -> Path:
    """Single-token step latency against the drafter's context length: every step, and bucket medians with p10-p90."""
    plt = _pyplot()
    steps = profile["steps"]
    fig, ax = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    points = steps["points"]
    if points:
        ax.scatter([c for c, _ in points], [s * 1e3 for _, s in points], s=4, alpha=0.25, color="#999999",
                   label="each step")  # fmt: skip
    buckets = steps["buckets"]
    if buckets:
        mids = [(b["context_lo"] + b["context_hi"]) / 2 for b in buckets]
        ax.plot(mids, [b["median"] * 1e3 for b in buckets], marker="o", color="#4c72b0", label="bucket median")
        ax.fill_between(mids, [b["p10"] * 1e3 for b in buckets], [b["p90"] * 1e3 for b in buckets],
                        color="#4c72b0", alpha=0.2, label="p10-p90")  # fmt: skip
    ax.set_xlabel("context length after the step (tokens in the drafter's KV cache)")
    ax.set_ylabel("ms per step")
    ax.set_title("drafter step latency by context length")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_energy(profile: dict[str, Any], path: Path) -> Path | None:
    """Joules per committed (or drafted) token by stage, beside the measured total and the radio; None when no
    meter measured anything."""
    energy = profile["energy"]
    if not energy.get("measured"):
        return None
    plt = _pyplot()
    stages = energy.get("stages") or {}
    labels = stages.get("labels", {})
    per_token = {labels.get(k, k): v for k, v in stages.get("joules_per_token", {}).items()}
    if energy.get("joules_per_token"):
        per_token["measured total (device)"] = energy["joules_per_token"]["median"]
    radio = profile.get("radio")
    if radio is not None:
        per_token[f"radio ({radio['profile']}, model), back to back"] = radio["back_to_back"]["joules_per_token"][
            "median"
        ]
        per_token[f"radio ({radio['profile']}, model), each generation alone"] = radio["joules_per_token"]["median"]
    fig, ax = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    names = list(per_token)[::-1]
    ax.barh(range(len(names)), [per_token[n] * 1e3 for n in names], color="#55a868")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("mJ per token")
    tag = "an ESTIMATE" if energy.get("estimated") else "measured"
    ax.set_title(f"energy per {profile['tokens_are'].split(' ')[0]} token, {profile['meter']['name']} meter ({tag})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(profile: dict[str, Any], out: Path) -> dict[str, Path]:
    """Every plot that has data, by name."""
    plots = {"stages": plot_stages(profile, out / "stages.png"), "steps": plot_steps(profile, out / "steps.png")}
    energy = plot_energy(profile, out / "energy.png")
    if energy is not None:
        plots["energy"] = energy
    return plots


__all__ = ["plot_energy", "plot_stages", "plot_steps", "write_plots"]
