"""`covspec pair`: check that a drafter and an edge's target belong together, measure the link, the drafter and the
edge, calibrate the acceptance, and write the pairing file `covspec run --pairing` starts warm from."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import typer

from covspec.cli.options import POWER_PROFILES, RADIOS, check_links
from covspec.profile.pairing import PairConfig

_D = PairConfig()


def pair(
    drafter: str | None = typer.Option(None, "--drafter", help="Drafter checkpoint (torch engine): folder or hub id."),
    bundle: Path | None = typer.Option(
        None, "--bundle", file_okay=False, help="Device bundle from `covspec export` (ONNX Runtime engine)."
    ),
    ep: str = typer.Option("auto", "--ep", help="Execution provider for --bundle: cpu, cuda, tensorrt, auto."),
    dtype: str = typer.Option("auto", "--dtype", help="Drafter dtype (torch engine)."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="Drafter CPU threads (default: one per CPU this process may use)."
    ),
    edge: str = typer.Option(..., "--edge", help="Edge server URL, e.g. http://127.0.0.1:8000"),
    calibration: int = typer.Option(
        _D.calibration, "--calibration", min=1, help="Calibration generations (after one untimed warm-up)."
    ),
    max_new_tokens: int = typer.Option(_D.max_new_tokens, "--max-new-tokens", min=2),
    images: list[Path] = typer.Option(
        [],
        "--image",
        exists=True,
        dir_okay=False,
        readable=True,
        help="Calibration image (repeatable; default: the demo's synthetic scenes).",
    ),
    prompts: list[str] = typer.Option(
        [], "--prompt", help="Calibration prompt (repeatable; default: 'Describe the image.' or the demo's questions)."
    ),
    link: str | None = typer.Option(
        None,
        "--link",
        callback=lambda name: name if name is None else check_links(name),
        help="Measure through an emulated link (a preset of `covspec link`).",
    ),
    energy: str | None = typer.Option(
        None,
        "--energy",
        help="Also measure the device's watts idle and drafting with this meter (auto, jetson, nvml, rapl, battery, "
        "estimate) for `covspec run --objective energy|balanced`.",
    ),
    power_profile: str | None = typer.Option(
        None, "--power-profile", help=f"The estimate meter's power profile: {POWER_PROFILES}."
    ),
    radio: str | None = typer.Option(
        None, "--radio", help=f"The device's radio, added by its model: {RADIOS} (a SoC meter does not see it)."
    ),
    out: Path = typer.Option(Path("pairing.json"), "--out", dir_okay=False, help="Where to write the pairing file."),
    api_key_file: Path | None = typer.Option(None, "--api-key-file"),
    as_json: bool = typer.Option(False, "--json", help="Print the pairing file's content as JSON."),
) -> None:
    """Check, measure and calibrate a drafter with the edge's target; write the pairing file (docs/pairing.md).
    Exit code 2 when the pair does not belong together (the message names the first difference)."""
    from rich.console import Console
    from rich.progress import Progress

    from covspec.apikey import read_api_key_file
    from covspec.cpus import resolve_threads
    from covspec.errors import CovspecError
    from covspec.link.presets import link_profile
    from covspec.runtime_device.engines import load_engine
    from covspec.runtime_device.pairing_file import MEASURED

    config = PairConfig(
        calibration=calibration, max_new_tokens=max_new_tokens, energy=energy, power_profile=power_profile, radio=radio
    )
    try:
        api_key = read_api_key_file(api_key_file) if api_key_file else None
        if (drafter is None) == (bundle is None):
            raise ValueError("give exactly one of --drafter (a checkpoint) or --bundle (a device bundle)")
        if bundle is not None:
            engine = load_engine("onnxruntime", bundle, ep=ep, threads=resolve_threads(threads))
        else:
            engine = load_engine("torch", drafter, dtype=dtype, threads=resolve_threads(threads))
        items = _calibration_items(images, prompts, calibration)
        through = link_profile(link) if link is not None else None
        with ExitStack() as stack, Progress(console=Console(stderr=True), transient=True) as progress:
            pairing = _run(stack, engine, edge, api_key, through, items, config, progress)
        pairing.save(out)
    except (CovspecError, ValueError) as exc:
        code = getattr(exc, "code", "bad_config")
        typer.echo(f"covspec pair: error [{code}]: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(pairing.to_dict()))
        return
    _print(pairing, out, MEASURED if link is None else link)


def _run(stack: ExitStack, engine: Any, edge: str, api_key: str | None, through: Any, items: list, config: PairConfig,
         progress: Any) -> Any:  # fmt: skip
    from covspec.link.relay import relayed_url
    from covspec.profile.pairing import measure_pair
    from covspec.runtime_device.client import EdgeClient

    url = stack.enter_context(relayed_url(edge, through if through is not None and through.shaped else None))
    client = EdgeClient(url, api_key=api_key)
    stack.callback(client.close)
    task = progress.add_task("checking the pair", total=None)

    def stage(description: str, completed: int | None = None, total: int | None = None) -> None:
        progress.update(task, description=description, completed=completed or 0, total=total)

    return measure_pair(engine, client, items, config, through=through, edge_url=edge, on_stage=stage)


def _calibration_items(images: list[Path], prompts: list[str], n: int) -> list[tuple[bytes, str]]:
    """(image bytes, prompt) pairs: the given images and prompts crossed, else ``n`` held-out demo scenes asked to
    be described (answers long enough for several rounds)."""
    if images:
        asked = prompts or ["Describe the image."]
        return [(path.read_bytes(), prompt) for path in images for prompt in asked]
    if prompts:
        raise ValueError("--prompt needs --image (the demo scenes come with their own questions)")
    import io

    from covspec.demo import scenes

    items = []
    for qa in scenes.dataset("heldout", n, tasks=("describe",)):
        buffer = io.BytesIO()
        qa.scene.image.save(buffer, format="PNG")
        items.append((buffer.getvalue(), qa.question))
    return items


def _print(pairing: Any, out: Path, link: str) -> None:
    from rich.console import Console
    from rich.table import Table

    m = pairing.measurements
    console = Console()
    console.print(f"pair ok: {', '.join(pairing.checks)}")
    ln = m["link"]
    console.print(
        f"link ({ln['through']}): round trip {ln['rtt_s'] * 1e3:.2f} ms (p10-p90 {ln['rtt_p10_s'] * 1e3:.2f}-"
        f"{ln['rtt_p90_s'] * 1e3:.2f}), up {ln['uplink_bytes_per_s'] * 8 / 1e6:.1f} Mbit/s, down "
        f"{ln['downlink_bytes_per_s'] * 8 / 1e6:.1f} Mbit/s"
    )
    console.print(
        f"drafter step {m['drafter']['step_s'] * 1e3:.2f} ms; verify v(K) = {m['verify']['base_s'] * 1e3:.2f} ms + "
        f"{m['verify']['slope_s'] * 1e3:.3f} ms x K; a_i = "
        + ", ".join(f"{a:.2f}" for a in m["acceptance"]["accept_probs"])
    )
    table = Table(title=f"recommendation ({pairing.verify_mode.value}, {pairing.policy.value} policy)")
    for column in ("link", "round trip ms", "K", "expected tok/s", "target-only tok/s", "speedup", "drafting pays"):
        table.add_column(column)
    for name, c in pairing.links.items():
        table.add_row(
            name + (" *" if name == link else ""), f"{c.rtt_s * 1e3:.1f}", str(c.draft_len),
            f"{c.expected_tokens_per_s:.1f}", f"{c.target_only_tokens_per_s:.1f}", f"{c.expected_speedup:.2f}",
            "yes" if c.drafting_pays else "no (bursts)",
        )  # fmt: skip
    console.print(table)
    if pairing.energy is not None:
        e, how = pairing.energy, m["energy"]
        label = " (an ESTIMATE)" if how["estimated"] else ""
        radio = f", radio {how['radio']} by its model" if how["radio_modelled"] else ""
        console.print(f"device watts{label}, {how['meter']} meter{radio}: waiting {e.wait_w:.2f} W, drafting "
                      f"{e.draft_w:.2f} W")  # fmt: skip
    console.print(f"wrote {out}")
