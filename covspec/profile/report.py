"""``report.html``: the profile for people, self-contained (inline CSS, PNGs embedded as base64, no script, nothing
fetched), one section per question a reader has: the machine, the meter, stage latencies, drafter steps, the edge and
the radio, energy, memory."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from covspec.profile.plots import write_plots

# section id -> heading, in page order
SECTIONS = {
    "machine": "Machine",
    "meter": "Energy meter",
    "stages": "Stage latencies",
    "steps": "Drafter steps",
    "edge": "Edge and radio",
    "energy": "Energy",
    "memory": "Memory",
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
    "th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}"
    ".estimate{color:#a33;font-weight:bold}.note{color:#555;font-size:.9em}"
)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _ms(spread: dict[str, Any] | None) -> tuple[str, str, str]:
    if not spread:
        return "-", "-", "-"
    return f"{spread['median'] * 1e3:.3f}", f"{spread['p10'] * 1e3:.3f}", f"{spread['p90'] * 1e3:.3f}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{_e(c)}</td>' if _numeric(c) else f"<td>{_e(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _numeric(cell: Any) -> bool:
    try:
        float(str(cell))
    except ValueError:
        return False
    return True


def _image(path: Path | None, alt: str) -> str:
    if path is None or not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>'


def _machine(profile: dict[str, Any]) -> str:
    machine = profile.get("machine") or {}
    rows = [[k, machine.get(k)] for k in ("system", "machine", "cpus", "python", "covspec") if k in machine]
    ort = machine.get("onnxruntime") or {}
    if ort:
        rows.append(["onnxruntime", f"{ort.get('version')} ({', '.join(ort.get('providers') or [])})"])
    rows += [["engine", profile["engine"]], ["edge", profile["edge"] or "none (device-only)"],
             ["link", profile["link"] or "as given"]]  # fmt: skip
    missing = "".join(f"<li>{_e(m)}</li>" for m in machine.get("missing", []))
    return _table(["", ""], rows) + (f"<p>Missing here:</p><ul>{missing}</ul>" if missing else "")


def _meter(profile: dict[str, Any]) -> str:
    meter = profile["meter"]
    tag = ' <span class="estimate">ESTIMATE</span>' if meter["estimated"] else ""
    items = "".join(f"<li>{_e(n)}</li>" for n in meter["not_measured"])
    notes = "".join(f"<li>{_e(n)}</li>" for n in meter["notes"])
    return (
        f"<p>Meter <b>{_e(meter['name'])}</b>{tag}: {_e(meter['scope'])}.</p>"
        f"<p>What it could not measure:</p><ul>{items}</ul>"
        + (f"<p class='note'>Notes:</p><ul>{notes}</ul>" if notes else "")
    )


def _stages(profile: dict[str, Any], plots: dict[str, Path]) -> str:
    rows = []
    for stage in profile["stages"].values():
        median, p10, p90 = _ms(stage["seconds"])
        calls = stage["calls_per_generation"]
        rows.append([stage["label"], stage["per"], median, p10, p90, stage["seconds"]["n"] if stage["seconds"] else 0,
                     "-" if calls is None else calls])  # fmt: skip
    generation = profile["generation"]
    tokens = generation["tokens"]["median"] if generation["tokens"] else 0
    rate = generation["tokens_per_s"]["median"] if generation["tokens_per_s"] else 0
    breakdown = "".join(f"<li>{_e(k)}: {v * 1e3:.2f} ms</li>" for k, v in profile["breakdown"].items())
    return (
        f"<p>{profile['generations']} measured generations ({profile['runs']} runs over {len(profile['items'])} "
        f"items, after {profile['warmup']} warm-up); median {tokens:g} {_e(profile['tokens_are'])} tokens per "
        f"generation at {rate:.1f} tokens/s.</p>"
        + _table(["stage", "per", "median ms", "p10 ms", "p90 ms", "n", "calls per generation"], rows)
        + (
            f"<p>Stages that did not run: {_e(', '.join(profile['stages_not_run']))} (with an edge, the policy may "
            "have chosen bursts: the edge decodes alone and the device drafts nothing).</p>"
            if profile["stages_not_run"]
            else ""
        )
        + f"<p>A generation's time (medians):</p><ul>{breakdown}</ul>"
        + _image(plots.get("stages"), "stage latency")
    )


def _steps(profile: dict[str, Any], plots: dict[str, Path]) -> str:
    rows = []
    for b in profile["steps"]["buckets"]:
        rows.append([f"{b['context_lo']}-{b['context_hi']}", f"{b['median'] * 1e3:.3f}", f"{b['p10'] * 1e3:.3f}",
                     f"{b['p90'] * 1e3:.3f}", b["n"]])  # fmt: skip
    return _table(["context length", "median ms", "p10 ms", "p90 ms", "steps"], rows) + _image(
        plots.get("steps"), "drafter step latency by context length"
    )


def _edge(profile: dict[str, Any]) -> str:
    edge = profile.get("edge_rounds")
    if edge is None:
        return "<p>No edge (device-only profile): no rounds, no radio traffic.</p>"
    rows = [["rounds measured", edge["rounds"]], ["of which bursts", edge["bursts"]]]
    for key in ("uplink_bytes_per_round", "downlink_bytes_per_round", "setup_uplink_bytes", "setup_downlink_bytes"):
        rows.append([key.replace("_", " ") + " (median)", edge[key]["median"] if edge[key] else "-"])
    for key in ("edge_wait", "edge_verify", "link"):
        if key in profile["stages"]:
            rows.append(
                [profile["stages"][key]["label"] + " ms per round (median)", _ms(profile["stages"][key]["seconds"])[0]]
            )
    radio = profile.get("radio")
    text = _table(["", ""], rows)
    if radio is None:
        return text + "<p>Radio: not modelled (--radio none).</p>"
    return text + (
        f"<p>Radio <b>{_e(radio['profile'])}</b> <span class='estimate'>ESTIMATE</span>: "
        f"{radio['joules_per_generation']['median']:.4f} J per generation "
        f"({radio['bytes_joules_per_generation']['median']:.6f} J for the bytes, "
        f"{radio['overhead_joules_per_generation']['median']:.4f} J promotion and tail over "
        f"{radio['transfers_per_generation']['median']:g} transfers), "
        f"{radio['joules_per_token']['median'] * 1e3:.3f} mJ per token when each generation is alone; "
        f"{radio['back_to_back']['joules_per_token']['median'] * 1e3:.3f} mJ per token back to back (the radio kept "
        f"connected at {radio['back_to_back']['connected_w']:.2f} W). {_e(radio['label'])}"
        + ("" if radio["verified_figures"] else " Its figures are not verified against the source.")
        + "</p>"
    )


def _energy(profile: dict[str, Any], plots: dict[str, Path]) -> str:
    energy = profile["energy"]
    if not energy.get("measured"):
        return "<p>Energy not measured (--energy none).</p>"
    tag = '<span class="estimate">ESTIMATE</span>' if energy["estimated"] else _e(energy["label"])
    per_generation, per_token = energy["joules_per_generation"], energy["joules_per_token"]
    text = (
        f"<p>{tag}: {per_generation['median']:.4f} J per generation (p10 {per_generation['p10']:.4f}, p90 "
        f"{per_generation['p90']:.4f}), <b>{per_token['median'] * 1e3:.3f} mJ per token</b>, "
        f"{energy['mean_watts']['median']:.2f} W mean.</p>"
    )
    if "device_and_radio_joules_per_token" in energy:
        text += f"<p>Device and radio: {energy['device_and_radio_joules_per_token'] * 1e3:.3f} mJ per token.</p>"
    stages = energy.get("stages") or {}
    if stages:
        rows = [[stages["labels"].get(k, k), f"{v:.6f}", f"{stages['joules_per_token'].get(k, 0.0) * 1e3:.4f}"]
                for k, v in stages["joules_per_generation"].items()]  # fmt: skip
        unattributed = stages.get("unattributed_joules_per_generation")
        if unattributed is not None:
            rows.append(["unattributed (loop, client, other work in the window)", f"{unattributed:.6f}", "-"])
        text += (
            f"<p>Per stage (idle {stages['idle_watts']:.2f} W, {stages['joules_per_prefill'] * 1e3:.3f} mJ per "
            f"prefill, {stages['joules_per_step'] * 1e3:.4f} mJ per step):</p>"
            + _table(["stage", "J per generation", "mJ per token"], rows)
            + f"<p class='note'>{_e(stages['how'])}</p>"
        )
    return text + _image(plots.get("energy"), "energy per token")


def _memory(profile: dict[str, Any]) -> str:
    memory = profile["memory"]
    rows = [["peak RSS (VmHWM), MiB", f"{memory['peak_rss_kib'] / 1024:.1f}"]]
    if memory["rss_after_load_kib"] is not None:
        rows.append(["RSS after loading the engine, MiB", f"{memory['rss_after_load_kib'] / 1024:.1f}"])
    for key, label in (("prefill_rss_growth_kib", "RSS growth in a prefill, KiB (median)"),
                       ("generation_rss_growth_kib", "RSS growth in a generation, KiB (median)"),
                       ("drafter_kv_kib_at_end", "drafter KV cache at the end, KiB (median)")):  # fmt: skip
        if memory[key] is not None:
            rows.append([label, f"{memory[key]['median']:.1f}"])
    return _table(["", ""], rows) + f"<p class='note'>{_e(memory['note'])}</p>"


def render_report(profile: dict[str, Any], plots: dict[str, Path]) -> str:
    """The page as one string."""
    bodies = {
        "machine": _machine(profile),
        "meter": _meter(profile),
        "stages": _stages(profile, plots),
        "steps": _steps(profile, plots),
        "edge": _edge(profile),
        "energy": _energy(profile, plots),
        "memory": _memory(profile),
    }
    sections = "".join(f'<section id="{k}"><h2>{_e(SECTIONS[k])}</h2>{bodies[k]}</section>' for k in SECTIONS)
    settings = _e(json.dumps(profile["settings"]))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>covspec profile</title>'
        f"<style>{_STYLE}</style></head><body><h1>covspec profile</h1><p class='note'>{settings}</p>"
        f"{sections}</body></html>"
    )


def write_report(profile: dict[str, Any], plots: dict[str, Path], path: Path) -> Path:
    path.write_text(render_report(profile, plots), encoding="utf-8")
    return path


def write_outputs(profile: dict[str, Any], out: Path) -> dict[str, Path]:
    """``profile.json``, the PNGs and ``report.html`` into ``out`` (created); returns them by name."""
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(profile, out)
    profile["plots"] = {name: path.name for name, path in plots.items()}
    files = {"json": out / "profile.json", **plots, "html": out / "report.html"}
    files["json"].write_text(json.dumps(profile, indent=1), encoding="utf-8")
    write_report(profile, plots, files["html"])
    return files


__all__ = ["SECTIONS", "render_report", "write_outputs", "write_report"]
