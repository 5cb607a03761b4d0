"""`covspec run`: the device runtime against an edge server."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import typer

from covspec.cli.options import POWER_PROFILES, RADIOS
from covspec.protocol import VerifyMode
from covspec.reduce import Budget, TokenReduction
from covspec.runtime_device.client import RetryPolicy
from covspec.runtime_device.loop import GenerationConfig
from covspec.spec.cost_model import Objective
from covspec.spec.policy import PolicyKind

_D = GenerationConfig()
_PAIRED = ("verify_mode", "policy", "draft_len", "max_burst")  # what --pairing sets unless given on the command line


def run(
    ctx: typer.Context,
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
    max_new_tokens: int = typer.Option(_D.max_new_tokens, "--max-new-tokens", min=1),
    temperature: float = typer.Option(_D.temperature, "--temperature", min=0.0, help="0 = greedy."),
    top_k: int = typer.Option(_D.top_k, "--top-k", min=0, help="0 = off."),
    top_p: float = typer.Option(_D.top_p, "--top-p", min=0.0, max=1.0),
    seed: int | None = typer.Option(_D.seed, "--seed", min=0),
    draft_len: int = typer.Option(
        _D.draft_len, "--draft-len", min=0, help="K per round (fixed policy), or the largest K (margin, cost)."
    ),
    verify_mode: VerifyMode = typer.Option(_D.verify_mode, "--verify-mode", help="auto: the cheapest lossless."),
    policy: PolicyKind = typer.Option(
        _D.policy, "--policy", help="fixed K; margin: stop a block on low drafter margin; cost: K or burst by model."
    ),
    max_burst: int = typer.Option(
        _D.max_burst, "--max-burst", min=0, help="Longest burst of target tokens (cost policy; 0: never)."
    ),
    objective: Objective = typer.Option(
        _D.objective,
        "--objective",
        help="What the cost policy maximises: tokens/s (latency), tokens per device joule (energy), or both "
        "(balanced: tokens^2 per second-joule). energy and balanced need --power-profile.",
    ),
    power_profile: str | None = typer.Option(
        None,
        "--power-profile",
        help=f"The device's power for --objective energy|balanced, from the documented ESTIMATE (docs/energy.md): "
        f"{POWER_PROFILES}.",
    ),
    radio: str = typer.Option(
        "none", "--radio", help=f"The device's radio for the energy objectives: {RADIOS}, or none (wired)."
    ),
    keep: str = typer.Option(
        "1.0",
        "--keep",
        help="Visual tokens the drafter reads: a share (0.25) or a count (64); the target reads all (lossless).",
    ),
    reducer: str = typer.Option(
        "covspec", "--reducer", help="How the drafter picks them: covspec, pool, random, merge, elastic."
    ),
    reduce_target: bool = typer.Option(
        False,
        "--reduce-target",
        help="LOSSY: the target reads only the kept visual tokens too; the output is then no longer the full-view "
        "target's.",
    ),
    upload_resize: bool = typer.Option(
        _D.upload_resize,
        "--upload-resize/--no-upload-resize",
        help="Upload the image already resized as the target's processor would (PNG; the target's pixel values stay "
        "bit-identical), when the edge publishes its processor; otherwise, or when no smaller, the original file.",
    ),
    upload_quality: int | None = typer.Option(
        _D.upload_quality,
        "--upload-quality",
        min=1,
        max=100,
        help="LOSSY: upload the image as JPEG at this quality; the target then reads other pixels (off by default).",
    ),
    link: str | None = typer.Option(
        None, "--link", help="Run through an emulated link to the edge (a preset of `covspec link`)."
    ),
    dtype: str = typer.Option("auto", "--dtype", help="Drafter dtype (torch engine)."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="Drafter CPU threads (default: one per CPU this process may use)."
    ),
    api_key_file: Path | None = typer.Option(None, "--api-key-file"),
    reconnect_window_s: float = typer.Option(
        RetryPolicy.reconnect_window_s,
        "--reconnect-window-s",
        min=0.0,
        help="Seconds to keep reconnecting to an edge lost mid-generation (a restart), then continue on a new session.",
    ),
    pairing: Path | None = typer.Option(
        None,
        "--pairing",
        exists=True,
        dir_okay=False,
        help="Start warm from `covspec pair`'s file: its verify mode, policy, draft length for the link in use and "
        "warm start (flags given here win). Refused for another drafter or target.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (DESIGN.md §7)."),
) -> None:
    """Generate an answer about IMAGE: drafted here, verified by the edge; identical to the target's own output."""
    from covspec.apikey import read_api_key_file
    from covspec.cpus import resolve_threads
    from covspec.errors import CovspecError, GenerationInterrupted
    from covspec.link.presets import link_profile
    from covspec.link.relay import relayed_url
    from covspec.profile.energy.objective import energy_inputs
    from covspec.runtime_device.client import EdgeClient
    from covspec.runtime_device.engines import load_engine
    from covspec.runtime_device.loop import generate
    from covspec.runtime_device.pairing_file import Pairing

    try:
        api_key = read_api_key_file(api_key_file) if api_key_file else None
        if (drafter is None) == (bundle is None):
            raise ValueError("give exactly one of --drafter (a checkpoint) or --bundle (a device bundle)")
        if bundle is not None:
            if engine_kind not in ("onnxruntime", "tensorrt"):
                raise ValueError(f"unknown --engine {engine_kind!r}; choose onnxruntime or tensorrt")
            engine = load_engine(engine_kind, bundle, ep=ep, threads=resolve_threads(threads))
        else:
            engine = load_engine("torch", drafter, dtype=dtype, threads=resolve_threads(threads))
        reduction = TokenReduction(reducer, Budget.parse(keep))
        energy = None
        if power_profile is not None:
            on_gpu = bundle is not None and (ep in ("cuda", "tensorrt") or engine_kind == "tensorrt")
            energy = energy_inputs(
                power_profile, None if radio == "none" else radio, resolve_threads(threads), drafter_on_gpu=on_gpu
            )
        config = GenerationConfig(
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            draft_len,
            verify_mode,
            policy,
            max_burst,
            reduction=reduction if reduction.reduces else None,
            reduce_target=reduce_target,
            upload_resize=upload_resize,
            upload_quality=upload_quality,
            objective=objective,
            energy=energy,
        )
        with ExitStack() as stack:
            url = stack.enter_context(relayed_url(edge, link_profile(link) if link is not None else None))
            client = EdgeClient(url, api_key=api_key, retry=RetryPolicy(reconnect_window_s=reconnect_window_s))
            stack.callback(client.close)
            paired = None
            if pairing is not None:
                explicit = {n for n in _PAIRED if ctx.get_parameter_source(n).name == "COMMANDLINE"}
                if power_profile is not None:
                    explicit.add("energy")
                config, paired = Pairing.load(pairing).apply(config, engine.fingerprint, client.info(), link, explicit)
            if config.objective is not Objective.LATENCY and config.energy is None:
                raise ValueError(
                    f"--objective {config.objective.value} needs --power-profile (the device's watts) or a pairing "
                    "file with measured watts (`covspec pair --energy`)"
                )
            result = generate(engine, client, image.read_bytes(), prompt, config)
            if paired is not None:
                result.stats["pairing"] = {"path": str(pairing), **paired}
    except (CovspecError, ValueError) as exc:
        code = getattr(exc, "code", "bad_config")
        if isinstance(exc, GenerationInterrupted):  # what was committed is the target's own output: show it
            typer.echo(json.dumps({"text": exc.text, "tokens": exc.tokens, "partial": True}) if as_json else exc.text)
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
        (f"AAL (K<={stats['draft_len']}, {stats['verify_mode']}, {stats['policy']})", f"{stats['aal']:.2f}"),
        ("draft rounds / bursts", f"{stats['draft_rounds']} / {stats['bursts']} ({stats['burst_tokens']} tokens)"),
        ("acceptance rate", f"{stats['acceptance_rate']:.3f}"),
        ("tokens/s", f"{stats['tokens_per_s']:.1f}"),
        ("device joules (ESTIMATE)", _joules_row(stats)),
        ("uplink bytes (rounds)", f"{stats['uplink_bytes']}  ({stats['uplink_bytes_per_token']:.1f}/token)"),
        ("downlink bytes (rounds)", f"{stats['downlink_bytes']}  ({stats['downlink_bytes_per_token']:.1f}/token)"),
        ("setup bytes up / down", f"{stats['setup_uplink_bytes']} / {stats['setup_downlink_bytes']}"),
        ("image upload", _upload_row(stats)),
        ("drafter's visual tokens", f"{stats['drafter_image_tokens']} ({stats['reducer'] or 'all kept'})"),
        ("target", "LOSSY: reads the kept visual tokens only" if stats["target_reduced"] else "reads every token"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)


def _joules_row(stats: dict) -> str:
    joules = stats["device_joules"]
    if joules is None:
        return "not estimated (give --power-profile)"
    per_token = joules / stats["generated_tokens"] if stats["generated_tokens"] else 0.0
    return f"{joules:.3f} J ({per_token * 1000:.1f} mJ/token; objective {stats['objective']})"


def _upload_row(stats: dict) -> str:
    sent, original = stats["upload_image_bytes"], stats["upload_original_bytes"]
    how = "resized" if stats["upload_resized"] else f"original ({stats['upload_fallback'] or 'resizing off'})"
    lossy = f", LOSSY JPEG q{stats['upload_quality']}" if stats["upload_quality"] is not None else ""
    return f"{sent} of {original} bytes: {how}{lossy}"
