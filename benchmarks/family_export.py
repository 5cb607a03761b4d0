"""Every family of the registry exported to an ONNX bundle and validated against PyTorch, in one run: the numbers of
the support matrix in docs/models.md.

  .venv/bin/python benchmarks/family_export.py [--out benchmarks/results/family_export] [--sizes drafter,target]

For each family with a tiny checkpoint (``covspec tiny``) and an ONNX vision graph, its tiny checkpoints of each size
are exported with ``covspec.export.onnx_export.export_bundle`` and validated by ``covspec.export.validate`` (float32
PyTorch against ONNX Runtime on the CPU: teacher-forced greedy continuations of the sample prompts, max |logit
error|, top-1 agreement, max |image feature error|), then quantized to int8 (dynamic) and compared with the fp32
bundle along its greedy sequences (top-1 agreement). Families without an ONNX graph are listed with their reason.
Writes family_export.json and family_export.png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table


def export_family(arch: str, size: str, root: Path) -> dict[str, Any]:
    from covspec.bench.quantization import top1_agreement
    from covspec.demo.samples import SCENES
    from covspec.export.onnx_export import export_bundle
    from covspec.models.loading import quiet_transformers
    from covspec.models.tiny import build_tiny
    from covspec.quant.bundle import quantize_bundle
    from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

    checkpoint = build_tiny(arch, size, root / f"{arch}-{size}")
    started = time.perf_counter()
    with quiet_transformers():
        manifest = export_bundle(checkpoint, root / f"{arch}-{size}-fp32")
    export_s = time.perf_counter() - started
    quantize_bundle(root / f"{arch}-{size}-fp32", root / f"{arch}-{size}-int8", "int8")
    agreement = top1_agreement(
        OnnxDrafterEngine(root / f"{arch}-{size}-fp32"),
        OnnxDrafterEngine(root / f"{arch}-{size}-int8"),
        SCENES("heldout", 4),
        max_new_tokens=12,
    )
    validation = manifest.validation or {}
    sample = SCENES("heldout", 1)[0]
    return {
        "family": arch,
        "size": size,
        "image_tokens": OnnxDrafterEngine(root / f"{arch}-{size}-fp32").start(sample.image, sample.prompt).image_tokens,
        "export_s": round(export_s, 1),
        "max_abs_logit_error": validation.get("max_abs_logit_error"),
        "top1_agreement": validation.get("top1_agreement"),
        "max_abs_image_feature_error": validation.get("max_abs_image_feature_error"),
        "rows_compared": validation.get("rows_compared"),
        "int8_top1_agreement_vs_fp32": agreement["top1_agreement"],
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("max_abs_logit_error") is not None]
    labels = [f"{r['family']}\n{r['size']}" for r in done]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(done)), 4))
    ax.bar(range(len(done)), [r["max_abs_logit_error"] for r in done], color="tab:blue")
    ax.set_yscale("log")
    ax.set_xticks(range(len(done)), labels, rotation=60, fontsize=7)
    ax.set_ylabel("max |logit error|, ONNX Runtime vs PyTorch (fp32)")
    ax.set_title("Export validation per family (tiny checkpoints; top-1 agreement 1.0 unless marked)")
    for i, r in enumerate(done):
        if r["top1_agreement"] != 1.0:
            ax.annotate(f"top-1 {r['top1_agreement']:.2f}", (i, r["max_abs_logit_error"]), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/family_export"))
    parser.add_argument("--sizes", default="drafter,target")
    args = parser.parse_args(argv)

    from covspec.models.families import VLM_FAMILIES
    from covspec.models.tiny import TINY_ARCHS

    console = Console(stderr=True)
    sizes = [s for s in args.sizes.split(",") if s]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="covspec-family-export-") as tmp, Progress(console=console) as progress:
        task = progress.add_task("export", total=len(VLM_FAMILIES) * len(sizes))
        for arch, family in VLM_FAMILIES.items():
            for size in sizes:
                progress.update(task, description=f"export {arch} {size}")
                if family.vision is None or arch not in TINY_ARCHS:
                    rows.append({"family": arch, "size": size, "no_export": family.no_export or "no tiny checkpoint"})
                else:
                    rows.append(export_family(arch, size, Path(tmp)))
                progress.update(task, advance=1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "family_export.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    plot(rows, args.out / "family_export.png")
    table = Table(title="ONNX export validation (tiny checkpoints, CPU)")
    for column in ("family", "size", "image tok", "max |logit err|", "top-1", "max |feat err|", "int8 top-1", "note"):
        table.add_column(column)
    for r in rows:
        if "no_export" in r:
            table.add_row(r["family"], r["size"], "", "", "", "", "", r["no_export"][:60])
            continue
        table.add_row(
            r["family"],
            r["size"],
            str(r["image_tokens"]),
            f"{r['max_abs_logit_error']:.2e}",
            f"{r['top1_agreement']:.3f}",
            f"{r['max_abs_image_feature_error']:.2e}",
            f"{r['int8_top1_agreement_vs_fp32']:.3f}",
            "",
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
