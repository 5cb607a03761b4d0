"""`covspec info`: what is installed and detected here (thin: probe, print)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def info(
    edge: str | None = typer.Option(None, "--edge", help="Also ask this edge for its /v1/info."),
    api_key_file: Path | None = typer.Option(None, "--api-key-file", help="File whose first line is the bearer key."),
    bundle: Path | None = typer.Option(None, "--bundle", help="Also check this device bundle."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """What this machine has for covspec: libraries, ONNX Runtime providers, CUDA, TensorRT, the Jetson's release,
    energy meters; and what is missing, in plain sentences."""
    from covspec.apikey import read_api_key_file
    from covspec.profile.system import system_report

    api_key = read_api_key_file(api_key_file) if api_key_file else None
    report = system_report(edge=edge, api_key=api_key, bundle=bundle)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"covspec {report['covspec']}, Python {report['python']}, {report['machine']}, {report['cpus']} CPUs")
    typer.echo("packages: " + ", ".join(f"{k} {v}" for k, v in report["packages"].items() if v))
    ort = report["onnxruntime"]
    if ort.get("installed"):
        typer.echo(f"onnxruntime {ort['version']}: providers {', '.join(ort['providers'])}")
    cuda = report["cuda"]
    typer.echo(f"CUDA (torch): {', '.join(cuda.get('devices') or []) or 'none visible'}")
    trt = report["tensorrt"]
    typer.echo(f"TensorRT: {trt.get('version') or 'not installed'}")
    jetson = report["jetson"]
    if jetson:
        typer.echo(f"Jetson: {jetson['model']}, Jetson Linux {jetson['l4t']}, JetPack {jetson['jetpack']}")
        if jetson["max_power_mode"]:
            mode = jetson["max_power_mode"]
            typer.echo(f"  fastest power mode: sudo nvpmodel -m {mode['id']} ({mode['name']})")
        for note in jetson["notes"]:
            typer.echo(f"  note: {note}")
    else:
        typer.echo("Jetson: not a Jetson")
    typer.echo("energy meters:")
    for kind, status in report["energy_meters"].items():
        typer.echo(f"  {kind}: {status}")
    for key in ("edge", "bundle"):
        if key in report:
            typer.echo(f"{key}: " + json.dumps(report[key]))
    if report["missing"]:
        typer.echo("missing:")
        for sentence in report["missing"]:
            typer.echo(f"  - {sentence}")
