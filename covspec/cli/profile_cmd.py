"""`covspec profile`: where a device's time, joules and memory go (thin: parse, call, print)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import typer

from covspec.cli.options import POWER_PROFILES, RADIOS, check_links
from covspec.profile.energy import MeterKind
from covspec.profile.run import ProfileConfig, ProfileItem
from covspec.protocol import VerifyMode
from covspec.runtime_device.loop import GenerationConfig
from covspec.spec.policy import PolicyKind

_D = ProfileConfig()
_G = GenerationConfig()
DEMO_SCENES = 3  # held-out demo scenes profiled when no --image/--prompt is given
DEMO_TASK = "describe"  # the demo's longest answers: the most rounds and steps per question


def profile(
    bundle: Path = typer.Option(
        ..., "--bundle", exists=True, file_okay=False, help="Device bundle from `covspec export` (ONNX Runtime)."
    ),
    edge: str | None = typer.Option(
        None, "--edge", help="Edge server URL (covspec serve of the pair's target); without it, device-only stages."
    ),
    energy: MeterKind = typer.Option(MeterKind.AUTO, "--energy", help="Energy meter (docs/energy.md)."),
    power_profile: str | None = typer.Option(
        None,
        "--power-profile",
        help=f"Power profile of the ESTIMATE meter: {POWER_PROFILES} (default: the meter's own).",
    ),
    radio: str = typer.Option(
        _D.radio, "--radio", help=f"Radio model for the socket's bytes (an ESTIMATE): {RADIOS}, or none (wired)."
    ),
    link: str | None = typer.Option(
        None, "--link", callback=lambda v: check_links(v) if v else v, help="Emulated link preset before the edge."
    ),
    runs: int = typer.Option(_D.runs, "--runs", min=1, help="Timed passes over the items (medians and spread)."),
    image: Path | None = typer.Option(None, "--image", exists=True, dir_okay=False, readable=True),
    prompt: str | None = typer.Option(None, "--prompt"),
    scenes: int = typer.Option(
        DEMO_SCENES, "--scenes", min=1, help="Demo scenes to profile when no --image/--prompt is given."
    ),
    keep: str = typer.Option("1.0", "--keep", help="Visual tokens the drafter reads: a share (0.25) or a count (64)."),
    reducer: str = typer.Option("covspec", "--reducer", help="How the drafter picks them (with --keep < 1)."),
    max_new_tokens: int = typer.Option(_G.max_new_tokens, "--max-new-tokens", min=1),
    draft_len: int = typer.Option(_G.draft_len, "--draft-len", min=0, help="K, or the largest K (adaptive)."),
    policy: PolicyKind = typer.Option(_G.policy, "--policy", help="Drafting policy, as in `covspec run`."),
    verify_mode: VerifyMode = typer.Option(_G.verify_mode, "--verify-mode"),
    ep: str = typer.Option("cpu", "--ep", help="Execution provider: cpu, cuda, tensorrt, auto."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Drafter CPU threads."),
    stage_window_s: float = typer.Option(
        _D.stage_window_s, "--stage-window-s", min=0.01, help="Least seconds of each stage energy window."
    ),
    api_key_file: Path | None = typer.Option(None, "--api-key-file"),
    out: Path = typer.Option(Path("covspec-profile"), "--out", help="Folder for profile.json, PNGs, report.html."),
    as_json: bool = typer.Option(False, "--json", help="Print profile.json's object instead of the summary."),
) -> None:
    """Profile the device: per-stage latency (preprocessing, vision encoder, token reduction, drafter prefill, drafter
    steps by context length, waiting on the edge, radio), energy per token and per stage where the meter allows, and
    memory; writes profile.json, PNG plots and a self-contained report.html."""
    from rich.console import Console
    from rich.progress import Progress

    from covspec.apikey import read_api_key_file
    from covspec.cpus import resolve_threads
    from covspec.errors import CovspecError
    from covspec.models.loading import quiet_transformers
    from covspec.profile.energy.radio import radio_profile
    from covspec.profile.report import write_outputs
    from covspec.profile.run import profile_meter, run_profile
    from covspec.profile.summary import summarize
    from covspec.profile.system import system_report
    from covspec.reduce import Budget, TokenReduction
    from covspec.runtime_device.engines import load_engine

    err = Console(stderr=True)
    try:
        if (image is None) != (prompt is None):
            raise ValueError("give --image and --prompt together (or neither, for the demo scenes)")
        if radio != "none":
            radio_profile(radio)
        meter = profile_meter(energy, power_profile)
        reduction = TokenReduction(reducer, Budget.parse(keep))
        generation = GenerationConfig(
            max_new_tokens=max_new_tokens, draft_len=draft_len, policy=policy, verify_mode=verify_mode,
            reduction=reduction if reduction.reduces else None,
        )  # fmt: skip
        config = ProfileConfig(runs=runs, radio=radio, link=link, stage_window_s=stage_window_s, generation=generation)
        config.validate()
        api_key = read_api_key_file(api_key_file) if api_key_file else None
        with quiet_transformers():
            engine = load_engine("onnxruntime", bundle, ep=ep, threads=resolve_threads(threads))
        if image is not None and prompt is not None:
            items = [ProfileItem(image.read_bytes(), prompt, image.name)]
        else:
            items = _demo_items(scenes, engine, err)
        with Progress(console=err, transient=True) as progress:
            result = run_profile(engine, items, meter, config, edge=edge, api_key=api_key, progress=progress)
        summary = summarize(result, system_report())
        files = write_outputs(summary, out)
    except (CovspecError, ValueError) as exc:
        code = getattr(exc, "code", "bad_config")
        typer.echo(f"covspec profile: error [{code}]: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(summary))
        return
    _print_summary(summary)
    typer.echo("wrote " + ", ".join(str(p) for p in files.values()))


def _demo_items(n: int, engine: Any, err: Any) -> list[ProfileItem]:
    """Held-out demo scenes, each with a describe question; a note when the bundle is not the demo drafter."""
    from covspec.demo import scenes
    from covspec.demo.ship import shipped_target_for

    if shipped_target_for(engine.bundle.manifest.source.get("model")) is None:
        err.print(
            "note: this bundle is not the demo drafter; profiling it on the demo's synthetic 64x64 scenes "
            "(give --image and --prompt for your own)"
        )
    items = []
    for index, qa in enumerate(scenes.dataset("heldout", n, tasks=(DEMO_TASK,))):
        png = io.BytesIO()
        qa.scene.image.save(png, format="PNG")
        items.append(ProfileItem(png.getvalue(), qa.question, f"demo held-out scene {index}"))
    return items


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"covspec profile ({summary['generations']} generations)")
    for column in ("stage", "per", "median ms", "p10 ms", "p90 ms"):
        table.add_column(column)
    for stage in summary["stages"].values():
        s = stage["seconds"]
        if s is not None:
            table.add_row(stage["label"], stage["per"], f"{s['median'] * 1e3:.3f}", f"{s['p10'] * 1e3:.3f}",
                          f"{s['p90'] * 1e3:.3f}")  # fmt: skip
    console = Console(highlight=False)
    console.print(table)
    meter, energy = summary["meter"], summary["energy"]
    if energy.get("measured"):
        tag = "ESTIMATE" if energy["estimated"] else f"measured by {meter['name']}"
        console.print(f"energy ({meter['name']}): {energy['joules_per_token']['median'] * 1e3:.3f} mJ per "
                      f"{summary['tokens_are'].split(' ')[0]} token, {tag}", markup=False)  # fmt: skip
    else:
        console.print("energy: not measured")
    if summary.get("radio"):
        radio = summary["radio"]
        alone, chained = radio["joules_per_token"]["median"], radio["back_to_back"]["joules_per_token"]["median"]
        console.print(
            f"radio {radio['profile']} (ESTIMATE): {alone * 1e3:.3f} mJ/token with each generation alone (promotion "
            f"and full tail), {chained * 1e3:.3f} mJ/token back to back (kept connected)"
        )
    console.print(f"peak RSS: {summary['memory']['peak_rss_kib'] / 1024:.1f} MiB")
    for line in meter["not_measured"]:
        console.print(f"not measured: {line}", markup=False)
