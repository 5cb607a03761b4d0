"""`covspec export` and `covspec quantize`: device bundles (ONNX graphs, quantized variants, TensorRT engines)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import typer


def export(
    model: str = typer.Argument(..., help="Drafter checkpoint: a local folder or a hub id."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write."),
    precision: str | None = typer.Option(
        None, "--precision", help="fp32 | fp16 | int8 | int8_qdq | int4 (default: the --device preset's, else fp32)."
    ),
    opset: int | None = typer.Option(None, "--opset", min=14, help="ONNX opset (default: the exporter's)."),
    device: str | None = typer.Option(
        None,
        "--device",
        help="Device preset: jetson-orin, jetson-xavier, arm64-cpu, x86-cpu (see docs/device-presets.md).",
    ),
    tensorrt: bool = typer.Option(False, "--tensorrt", help="Also build TensorRT engines (needs TensorRT and a GPU)."),
    calibration_images: Path | None = typer.Option(
        None, "--calibration-images", exists=True, file_okay=False, help="Images for static int8 (QDQ) calibration."
    ),
    target: str | None = typer.Option(None, "--target", help="Target checkpoint: report the pair's AAL before/after."),
    tolerance: float | None = typer.Option(None, "--tolerance", help="Max |logit error| ONNX vs PyTorch (validation)."),
    validate: bool = typer.Option(True, "--validate/--no-validate", help="Compare ONNX Runtime with PyTorch."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Export a drafter VLM to a device bundle (DESIGN.md §5), validated against PyTorch."""
    from covspec.bench.quantization import quantize_and_measure
    from covspec.demo.samples import SCENES
    from covspec.demo.ship import shipped_target_for
    from covspec.export.device_build import build_device_bundle

    with _progress() as progress:
        manifest = _guard(
            "export",
            build_device_bundle,
            model,
            out,
            precision=precision,
            device=device,
            tensorrt=tensorrt,
            opset=opset,
            validate=validate,
            tolerance=tolerance,
            calibration_images=calibration_images,
            samples=SCENES,  # the demo's scenes: calibration and TensorRT optimization-profile shapes
            quantize=functools.partial(
                quantize_and_measure,
                samples=SCENES,  # ... and the quantization report's held-out samples
                calibration_images=calibration_images,
                target=target if target is not None else shipped_target_for(model),
                progress=progress,
            ),
            overwrite=overwrite,
            progress=progress,
        )
    if as_json:
        typer.echo(json.dumps(manifest))
        return
    _print_bundle(out, manifest)


def quantize(
    bundle: Path = typer.Argument(..., exists=True, file_okay=False, help="An fp32 bundle from `covspec export`."),
    precision: str = typer.Option(..., "--precision", help="int8 | int4 | fp16."),
    out: Path = typer.Option(..., "--out", help="New bundle folder."),
    calibration_images: Path | None = typer.Option(
        None, "--calibration-images", exists=True, file_okay=False, help="Calibrate int8 statically (QDQ form)."
    ),
    static: bool = typer.Option(
        False, "--static", help="int8 as calibrated QDQ even without --calibration-images (demo scenes)."
    ),
    target: str | None = typer.Option(
        None, "--target", help="Target checkpoint for the AAL before/after (default: the demo target, for its drafter)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Quantize a bundle; report sizes, drafter step latency, top-1 agreement with fp32 and the AAL before/after."""
    from covspec.bench.quantization import quantize_and_measure
    from covspec.demo.samples import SCENES

    with _progress() as progress:
        section = _guard(
            "quantize",
            quantize_and_measure,
            bundle,
            out,
            precision,
            samples=SCENES,  # the demo's scenes: calibration without --calibration-images, the report's samples
            calibration_images=calibration_images,
            static=static or calibration_images is not None,
            target=target if target is not None else _demo_target(bundle),
            progress=progress,
        )
    if as_json:
        typer.echo(json.dumps(section))
        return
    _print_quantization(out, section)


def _demo_target(bundle: Path) -> Path | None:
    """``--target``'s default: the demo target when ``bundle`` was exported from the shipped demo drafter. A bundle
    whose manifest cannot be read gets None here; quantizing then refuses it with the reason."""
    from covspec.bundle import read_manifest
    from covspec.demo.ship import shipped_target_for
    from covspec.errors import BundleError

    try:
        return shipped_target_for(read_manifest(bundle).source.get("model"))
    except BundleError:
        return None


def _guard(command: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from covspec.errors import CovspecError

    try:
        return fn(*args, **kwargs)
    except (CovspecError, ValueError) as exc:
        code = getattr(exc, "code", "bad_config")
        typer.echo(f"covspec {command}: error [{code}]: {exc}", err=True)
        raise typer.Exit(2) from None


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import Progress

    return Progress(console=Console(stderr=True), transient=True)


def _print_bundle(out: Path, manifest: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bundle {out}", show_header=False)
    table.add_row("family", manifest["family"])
    table.add_row("precision", manifest["precision"])
    table.add_row("opset", str(manifest.get("opset")))
    for role, name in manifest["graphs"].items():
        if name:
            size = manifest["files"].get(name, {}).get("bytes", 0)
            table.add_row(role, f"{name} ({size / 1e6:.2f} MB)")
    validation = manifest.get("validation") or (manifest.get("quantization") or {}).get("source_bundle", {}).get(
        "validation"
    )
    if validation:
        table.add_row("max |logit error| vs PyTorch", f"{validation.get('max_abs_logit_error', float('nan')):.2e}")
        table.add_row("top-1 agreement vs PyTorch", f"{validation.get('top1_agreement', float('nan')):.3f}")
    if manifest.get("tensorrt"):
        table.add_row("TensorRT engines", ", ".join(manifest["tensorrt"].get("engines", {})))
    Console().print(table)
    if manifest.get("quantization"):
        _print_quantization(out, manifest["quantization"])


def _print_quantization(out: Path, section: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{section['scheme']} ({out})", show_header=False)
    table.add_row("graph bytes fp32 -> quantized", f"{section['bytes_before']:,} -> {section['bytes_after']:,}")
    report = section.get("report") or {}
    latency = report.get("step_latency_ms") or {}
    if latency:
        table.add_row(
            "drafter step, median ms (fp32 / quantized)",
            f"{latency['fp32']['median_ms']:.2f} / {latency['quantized']['median_ms']:.2f}",
        )
    agreement = report.get("agreement") or {}
    if agreement:
        table.add_row("top-1 agreement with fp32", f"{agreement['top1_agreement']:.3f}")
    pair = report.get("pair") or {}
    if pair:
        table.add_row(
            f"AAL vs target, K={pair['fp32']['k']} (fp32 -> quantized)",
            f"{pair['fp32']['aal']:.2f} -> {pair['quantized']['aal']:.2f}",
        )
    Console().print(table)


__all__ = ["export", "quantize"]
