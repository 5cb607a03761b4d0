"""The demo drafter at every bundle precision, side by side in one run: size, step latency, top-1 agreement with
fp32, and the AAL it reaches against the demo target (greedy, K = 4).

  .venv/bin/python benchmarks/quantize_demo_drafter.py [--out benchmarks/results/quantize_demo_drafter]
                                                       [--samples 60] [--threads N]

The fp32 bundle is the demo's own (`covspec.demo.store.ensure_bundle`); int8 (dynamic), int8_qdq (static, calibrated
on training scenes), int4 (MatMulNBits, block 32) and fp16 are made from it by `covspec.quant.quantize_bundle`.
Step latency: every engine steps in turn (interleaved, so machine noise hits them alike), ONNX Runtime on the CPU with
``--threads`` intra-op threads (default: one per CPU of the device set). The process pins itself to the device's CPU
set, the one `covspec demo` gives its device side (`covspec.cpus.split_cpus`, DESIGN.md §10), so the numbers match
the demo's; the in-process target (AAL only, untimed) uses a torch pool of the same size. Agreement and AAL: the same
held-out scenes (the demo's questions) for every row.
Writes quantize_demo_drafter.json and quantize_demo_drafter.png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROWS = (("fp32", None), ("fp16", False), ("int8", False), ("int8_qdq", True), ("int4", False))


def graph_bytes(bundle: Path) -> int:
    from covspec.bundle import load_bundle

    manifest = load_bundle(bundle).manifest
    return sum(manifest.files[name]["bytes"] for name in manifest.graphs.values() if name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quantize_demo_drafter"))
    parser.add_argument("--samples", type=int, default=60, help="held-out scenes for agreement and AAL")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads [default: device set]")
    args = parser.parse_args(argv)

    from covspec.cpus import describe, pin_process, set_torch_threads, split_cpus

    device_cpus = split_cpus().device
    pin_process(device_cpus)
    threads = len(device_cpus) if args.threads is None else args.threads
    set_torch_threads(threads)

    from covspec.bench.quantization import pair_acceptance, step_latency, top1_agreement
    from covspec.demo.samples import SCENES
    from covspec.demo.store import ensure_bundle, ensure_pair
    from covspec.export.calibration import calibrate_bundle
    from covspec.models import load_model
    from covspec.models.loading import quiet_transformers
    from covspec.quant.bundle import quantize_bundle
    from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

    console = Console(stderr=True)
    console.print(describe("device", threads, device_cpus, pool="onnxruntime"))
    pair = ensure_pair()
    samples = SCENES("heldout", args.samples)
    with tempfile.TemporaryDirectory(prefix="covspec-quant-bench-") as tmp, Progress(console=console) as progress:
        bundles = {"fp32": ensure_bundle(pair, progress=progress)}
        for name, static in ROWS[1:]:
            precision = "int8" if name == "int8_qdq" else name
            bundles[name] = Path(tmp) / name
            calibration = calibrate_bundle(bundles["fp32"], samples=SCENES, progress=progress) if static else None
            quantize_bundle(
                bundles["fp32"], bundles[name], precision, static=static, calibration=calibration, progress=progress
            )
        engines = {name: OnnxDrafterEngine(path, threads=threads) for name, path in bundles.items()}
        with quiet_transformers():
            target = load_model(str(pair.target), dtype="float32")
        latency = step_latency(engines, samples[0], steps=64, warmup=8)
        task = progress.add_task("agreement + AAL", total=len(engines))
        rows: list[dict[str, Any]] = []
        for name, engine in engines.items():
            agreement = top1_agreement(engines["fp32"], engine, samples, max_new_tokens=40)
            acceptance = pair_acceptance(engine, target, samples, max_new_tokens=40)
            rows.append({
                "precision": name,
                "graph_bytes": graph_bytes(bundles[name]),
                "step_ms_median": latency[name]["median_ms"],
                "step_ms_p90": latency[name]["p90_ms"],
                "top1_agreement_vs_fp32": agreement["top1_agreement"],
                "identical_greedy_vs_fp32": agreement["identical_sequences"],
                "aal": acceptance["aal"],
                "acceptance_rate": acceptance["acceptance_rate"],
                "rounds": acceptance["rounds"],
            })  # fmt: skip
            progress.advance(task)
    result = {
        "rows": rows,
        "samples": args.samples,
        "draft_len": 4,
        "threads": threads,
        "device_cpus": sorted(device_cpus),
        "drafter": str(pair.drafter),
        "target": str(pair.target),
        "note": "step latency: median ms of one decode step (extend of one token), engines interleaved",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quantize_demo_drafter.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out / "quantize_demo_drafter.png")
    table = Table(title=f"demo drafter by precision ({args.samples} held-out scenes, K=4)")
    for column in ("precision", "graph MB", "step ms", "top-1 vs fp32", "AAL", "α"):
        table.add_column(column, justify="left" if column == "precision" else "right")
    for row in rows:
        table.add_row(
            row["precision"],
            f"{row['graph_bytes'] / 1e6:.2f}",
            f"{row['step_ms_median']:.3f}",
            f"{row['top1_agreement_vs_fp32']:.3f}",
            f"{row['aal']:.2f}",
            f"{row['acceptance_rate']:.3f}",
        )
    Console().print(table)
    return 0


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["precision"] for row in rows]
    panels = (
        ("graph_bytes", "graph size (MB)", 1e-6),
        ("step_ms_median", "decode step (ms, median)", 1.0),
        ("top1_agreement_vs_fp32", "top-1 agreement with fp32", 1.0),
        ("aal", "AAL vs target (K=4)", 1.0),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        ax.bar(names, [row[key] * scale for row in rows], color="#4c72b0")
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle("demo drafter bundle by precision (ONNX Runtime, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
