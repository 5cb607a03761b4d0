"""`covspec run`: the device runtime against an edge server."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from covspec.protocol import VerifyMode


def run(
    drafter: str | None = typer.Option(None, "--drafter", help="Drafter checkpoint (torch engine): folder or hub id."),
    bundle: Path | None = typer.Option(
        None, "--bundle", file_okay=False, help="Device bundle from `covspec export` (ONNX Runtime engine)."
    ),
    ep: str = typer.Option("auto", "--ep", help="Execution provider for --bundle: cpu, cuda, tensorrt, auto."),
    engine_kind: str = typer.Option(
        "onnxruntime", "--engine", help="Engine for --bundle: onnxruntime, or tensorrt (its native TensorRT engines)."
    ),
    edge: str = typer.Option(..., "--edge", help="Edge server URL, e.g. http://127.0.0.1:8000"),
    image: Path = typer.Option(..., "--image", exists=True, dir_okay=False, readable=True),
    prompt: str = typer.Option(..., "--prompt"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy."),
    top_k: int = typer.Option(0, "--top-k", min=0, help="0 = off."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
    seed: int | None = typer.Option(None, "--seed", min=0),
    draft_len: int = typer.Option(4, "--draft-len", min=0, help="Draft tokens per round (K)."),
    verify_mode: VerifyMode = typer.Option(VerifyMode.COMPACT, "--verify-mode"),
    dtype: str = typer.Option("auto", "--dtype", help="Drafter dtype (torch engine)."),
    api_key_file: Path | None = typer.Option(None, "--api-key-file"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (DESIGN.md §7)."),
) -> None:
    """Generate an answer about IMAGE: drafted here, verified by the edge; identical to the target's own output."""
    from covspec.apikey import read_api_key_file
    from covspec.errors import CovspecError
    from covspec.runtime_device.client import EdgeClient
    from covspec.runtime_device.engines import load_engine
    from covspec.runtime_device.loop import GenerationConfig, generate

    try:
        api_key = read_api_key_file(api_key_file) if api_key_file else None
        if (drafter is None) == (bundle is None):
            raise ValueError("give exactly one of --drafter (a checkpoint) or --bundle (a device bundle)")
        if bundle is not None:
            if engine_kind not in ("onnxruntime", "tensorrt"):
                raise ValueError(f"unknown --engine {engine_kind!r}; choose onnxruntime or tensorrt")
            engine = load_engine(engine_kind, bundle, ep=ep)
        else:
            engine = load_engine("torch", drafter, dtype=dtype)
        client = EdgeClient(edge, api_key=api_key)
        config = GenerationConfig(max_new_tokens, temperature, top_k, top_p, seed, draft_len, verify_mode)
        result = generate(engine, client, image.read_bytes(), prompt, config)
    except (CovspecError, ValueError) as exc:
        code = getattr(exc, "code", "bad_config")
        typer.echo(f"covspec run: error [{code}]: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    typer.echo(result.text)
    _print_stats(result.stats)


def _print_stats(stats: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="covspec run", show_header=False)
    rows = [
        ("generated tokens", f"{stats['generated_tokens']}"),
        ("rounds", f"{stats['rounds']}"),
        (f"AAL (K={stats['draft_len']}, {stats['verify_mode']})", f"{stats['aal']:.2f}"),
        ("acceptance rate", f"{stats['acceptance_rate']:.3f}"),
        ("tokens/s", f"{stats['tokens_per_s']:.1f}"),
        ("uplink bytes (rounds)", f"{stats['uplink_bytes']}  ({stats['uplink_bytes_per_token']:.1f}/token)"),
        ("downlink bytes (rounds)", f"{stats['downlink_bytes']}  ({stats['downlink_bytes_per_token']:.1f}/token)"),
        ("setup bytes up / down", f"{stats['setup_uplink_bytes']} / {stats['setup_downlink_bytes']}"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)
