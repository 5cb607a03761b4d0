"""What visual token reduction saves where a drafter's prefill is compute, not overhead: a random-weight LLaVA drafter
of realistic shape (576 visual tokens: 336 px, patch 14, from a narrow 4-layer tower; a 12-layer, 1024-wide Llama)
on this CPU.

  .venv/bin/python benchmarks/reduce_scale.py [--images 6] [--threads 2] [--out benchmarks/results/reduce_scale]

The demo drafter (``covspec bench reduce``) is too small for this: its whole prefill is about 3 ms, most of it
fixed costs (the processor, the runtime's per-call overhead) that reduction does not touch. Here the drafter's
prefill (the torch engine: vision tower, the reducer, the decoder's prefill forward over the kept tokens) is timed
per reducer and budget, every configuration prefilling each image in turn so machine noise hits them alike. Random
weights say nothing about acceptance: AAL is ``covspec bench reduce``'s, on the trained demo pair. Writes
reduce_scale.json and reduce_scale.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from covspec.cpus import set_torch_threads
from covspec.distill import build_drafter, parse_arch
from covspec.models import load_model
from covspec.models.loading import quiet_transformers
from covspec.models.tiny import build_tiny
from covspec.reduce import Budget, TokenReduction

# a drafter of the shape small VLM drafters have (MASSV/SpecVLM use 0.5B-1B LMs; this one is smaller so that this
# CPU prefills it in about a second): 576 visual tokens from a narrow CLIP tower, a 12-layer Llama
ARCH = (
    "vision.image_size=336,vision.patch_size=14,vision.hidden_size=256,vision.intermediate_size=1024,"
    "vision.num_hidden_layers=4,vision.num_attention_heads=4,vision.projection_dim=256,"
    "text.hidden_size=1024,text.intermediate_size=2816,text.num_hidden_layers=12,text.num_attention_heads=16,"
    "text.num_key_value_heads=4,text.max_position_embeddings=2048"
)
REDUCERS = ("covspec", "pool", "random", "merge", "elastic")
BUDGETS = (0.1, 0.25, 0.5)
PROMPT = "Describe the image in detail."


def _photo(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (640, 480), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = int(rng.integers(0, 560)), int(rng.integers(0, 400))
        box = (x0, y0, x0 + int(rng.integers(20, 160)), y0 + int(rng.integers(20, 160)))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(
            box, fill=tuple(int(c) for c in rng.integers(0, 256, 3))
        )
    return image


def run(images: int, threads: int, progress: Progress) -> dict:
    set_torch_threads(threads)
    configs: list[tuple[str, float, TokenReduction | None]] = [("all", 1.0, None)]
    configs += [(name, b, TokenReduction(name, Budget(ratio=b))) for name in REDUCERS for b in BUDGETS]
    with tempfile.TemporaryDirectory() as tmp, quiet_transformers():
        target = build_tiny("llava", "target", Path(tmp) / "target")
        model, processor = build_drafter(target, parse_arch(ARCH), seed=0)
        model.save_pretrained(Path(tmp) / "drafter")
        processor.save_pretrained(Path(tmp) / "drafter")
        drafter = load_model(str(Path(tmp) / "drafter"), dtype="float32")
    photos = [_photo(i) for i in range(images)]
    times: dict[int, list[float]] = {i: [] for i in range(len(configs))}
    kept: dict[int, int] = {}
    drafter.start(photos[0], PROMPT)  # warm-up: first-call allocations
    task = progress.add_task("prefills", total=images * len(configs))
    for n, photo in enumerate(photos):
        order = list(range(len(configs)))
        for i in order[n % len(order) :] + order[: n % len(order)]:
            reduction = configs[i][2]
            started = time.perf_counter()
            sequence = drafter.start(photo, PROMPT, select=reduction.select if reduction is not None else None)
            times[i].append(time.perf_counter() - started)
            kept[i] = sequence.image_tokens
            progress.update(task, advance=1)
    full = statistics.median(times[0])
    rows = [
        {
            "reducer": name,
            "keep": budget,
            "visual_tokens": kept[i],
            "prefill_ms": statistics.median(times[i]) * 1e3,
            "prefill_share": statistics.median(times[i]) / full,
        }
        for i, (name, budget, _) in enumerate(configs)
    ]
    return {
        "rows": rows,
        "images": images,
        "threads": threads,
        "drafter_parameters": drafter.num_parameters(),
        "prompt_tokens": sequence.prompt_length,
        "arch": ARCH,
        "engine": "torch float32 (HFLoadedModel.start with the reduction's select)",
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in REDUCERS:
        mine = sorted((r for r in rows if r["reducer"] == name), key=lambda r: r["keep"])
        ax.plot([r["keep"] for r in mine] + [1.0], [r["prefill_share"] for r in mine] + [1.0], marker="o", label=name)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=0.8, label="proportional")
    ax.axhline(0.4, color="red", ls="--", lw=0.8, label="40% (issue 13's bar at 25%)")
    ax.set(xlabel="share of the 576 visual tokens kept", ylabel="drafter prefill / prefill of every token")
    ax.set_title(f"{result['drafter_parameters'] / 1e6:.0f}M-parameter drafter, {result['threads']} threads, this CPU")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reduce_scale"))
    args = parser.parse_args()
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        result = run(args.images, args.threads, progress)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reduce_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "reduce_scale.png")
    table = Table(title=f"drafter prefill by reducer and budget ({result['images']} images, median)")
    for column in ("reducer", "keep", "visual tokens", "prefill ms", "share of all"):
        table.add_column(column, justify="left" if column == "reducer" else "right")
    for r in result["rows"]:
        table.add_row(r["reducer"], f"{r['keep']:.2f}", str(r["visual_tokens"]), f"{r['prefill_ms']:.0f}",
                      f"{r['prefill_share']:.2f}")  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
