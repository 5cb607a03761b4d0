"""A profile run as JSON-ready numbers (``profile.json``): stage latencies with their spread, drafter steps by
context length, the edge and the radio, energy per token and per stage where the meter allows, memory.

Every latency is a median with its 10th and 90th percentiles over the measured generations (``per`` says over what:
one value per generation, per round or per decoder step). Energy labels what is measured and what is a model.
"""

from __future__ import annotations

import statistics
from typing import Any

from covspec.profile.energy.radio import radio_profile
from covspec.profile.run import GenerationRecord, ProfileRun
from covspec.profile.stage_energy import split_by_time
from covspec.profile.stages import PREFILL_STAGES, bucket_steps, spread_dict

SCHEMA = 1

# the stage energy keys as a report names them
ENERGY_LABELS = {
    **PREFILL_STAGES,
    "prefill_total": "drafter prefill (all stages)",
    "steps": "drafter steps and feeds",
    "edge_wait": "waiting on the edge (at idle watts)",
}

# what each meter measures, as the report says it
METER_SCOPE = {
    "jetson": "the module's INA3221 power rails: the whole board, every process on it",
    "tegrastats": "the module's power rails as tegrastats prints them: the whole board, every process on it",
    "nvml": "one NVIDIA GPU's power: the GPU only (not the CPU, memory or radio)",
    "rapl": "the CPU package (and DRAM) energy counters: every process on these sockets, the edge too if it runs here",
    "battery": "the battery's discharge: the whole device, only while it runs on battery",
    "estimate": "a model, not a sensor: this process's CPU seconds times the power profile's watts per busy core, "
    "plus its idle watts (docs/energy.md)",
    "none": "nothing (--energy none)",
}


def summarize(run: ProfileRun, machine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole ``profile.json`` object."""
    records = run.records
    with_edge = run.edge is not None
    gen = run.config.generation
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "engine": run.engine,
        "edge": run.edge,
        "link": run.config.link,
        "runs": run.config.runs,
        "warmup": run.config.warmup,
        "generations": len(records),
        "tokens_are": "committed" if with_edge else "drafted (no edge: the drafter decodes alone, greedily)",
        "settings": {
            "max_new_tokens": gen.max_new_tokens,
            "draft_len": gen.draft_len,
            "policy": gen.policy.value,
            "verify_mode": gen.verify_mode.value,
            "reducer": gen.reduction.reducer if gen.reduction is not None else None,
            "keep": _keep(gen.reduction),
            "radio": run.config.radio,
        },
        "machine": machine or {},
        "items": _items(run),
        "generation": _generation(records),
        "stages": _stages(records, with_edge),
        "stages_not_run": [],
        "breakdown": _breakdown(records, with_edge),
        "steps": _steps(records, run.config.step_buckets),
        "edge_rounds": _edge(records) if with_edge else None,
        "radio": _radio(records, run.config.radio) if with_edge else None,
        "memory": _memory(run),
    }
    possible = [*PREFILL_STAGES, "prefill_total", "step"] + (["drafting", "edge_wait"] if with_edge else [])
    out["stages_not_run"] = [name for name in possible if name not in out["stages"]]  # e.g. every round a burst
    out["meter"], out["energy"] = _energy(run, out)
    return out


def _keep(reduction: Any) -> float | int | None:
    if reduction is None:
        return None
    budget = reduction.budget
    return budget.count if budget.count is not None else budget.ratio


def _items(run: ProfileRun) -> list[dict[str, Any]]:
    out = []
    for index, item in enumerate(run.items):
        first = next((r for r in run.records if r.item == index), None)
        out.append({
            "label": item.label,
            "prompt": item.prompt,
            "image_bytes": len(item.image),
            "tokens": first.tokens if first is not None else [],
            "text": first.text if first is not None else "",
            "same_tokens_every_run": len({tuple(r.tokens) for r in run.records if r.item == index}) <= 1,
        })  # fmt: skip
    return out


def _generation(records: list[GenerationRecord]) -> dict[str, Any]:
    aal = [r.stats["aal"] for r in records if r.stats.get("aal")]
    return {
        "tokens": spread_dict(len(r.tokens) for r in records),
        "wall_s": spread_dict(r.wall_s for r in records),
        "tokens_per_s": spread_dict(len(r.tokens) / r.wall_s for r in records if r.wall_s > 0),
        "aal": spread_dict(aal) if aal else None,
        "rounds": spread_dict(len(r.rounds) for r in records) if any(r.rounds for r in records) else None,
    }


def _stage(label: str, per: str, values: list[float], calls: list[int] | None = None) -> dict[str, Any]:
    return {
        "label": label,
        "per": per,
        "seconds": spread_dict(values),
        "calls_per_generation": statistics.median(calls) if calls else None,
    }


def _stages(records: list[GenerationRecord], with_edge: bool) -> dict[str, dict[str, Any]]:
    """Per-call latency of every stage, in pipeline order; a stage the engine does not time is absent."""
    prefills = [p for r in records for p in r.prefills]
    out: dict[str, dict[str, Any]] = {}
    for name, label in PREFILL_STAGES.items():
        values = [p.stages[name] for p in prefills if name in p.stages]
        if values:
            out[name] = _stage(label, "generation", values)
    out["prefill_total"] = _stage("drafter start (all prefill stages)", "generation", [p.seconds for p in prefills])
    steps = [s for r in records for s in r.steps if s.tokens == 1]
    out["step"] = _stage("drafter step (1 token)", "step", [s.seconds for s in steps],
                         [sum(s.tokens == 1 for s in r.steps) for r in records])  # fmt: skip
    feeds = [s for r in records for s in r.steps if s.tokens > 1]
    if feeds:
        label = "drafter feed (2+ tokens: a correction and re-fed drafts, or a burst)"
        calls = [sum(s.tokens > 1 for s in r.steps) for r in records]
        out["feed"] = _stage(label, "call", [s.seconds for s in feeds], calls)
    if with_edge:
        rounds = [o for r in records for o in r.rounds]
        drafted = [o for o in rounds if not o.burst]
        out["drafting"] = _stage("drafting a block", "round", [o.draft_s for o in drafted],
                                 [sum(not o.burst for o in r.rounds) for r in records])  # fmt: skip
        out["edge_wait"] = _stage("waiting on the edge (exchange)", "round", [o.exchange_s for o in rounds],
                                  [len(r.rounds) for r in records])  # fmt: skip
        out["edge_verify"] = _stage("of which the edge's verify (as it reports)", "round", [o.verify_s for o in rounds])
        out["link"] = _stage("of which link, framing and the loop", "round",
                             [max(o.exchange_s - o.verify_s, 0.0) for o in rounds])  # fmt: skip
        edge_prefill = [r.stats["edge_prefill_s"] for r in records if r.stats.get("edge_prefill_s") is not None]
        if edge_prefill:
            out["edge_prefill"] = _stage("the edge's target prefill (setup, beside the drafter's)", "generation",
                                         edge_prefill)  # fmt: skip
    return {name: stage for name, stage in out.items() if stage["seconds"] is not None}  # a stage that never ran


def _breakdown(records: list[GenerationRecord], with_edge: bool) -> dict[str, Any]:
    """Where a generation's wall time goes (medians of per-generation sums)."""
    parts: dict[str, list[float]] = {"prefill": [], "drafter steps": [], "other": []}
    if with_edge:
        parts = {"setup (both prefills)": [], "drafting": [], "edge verify": [], "link and loop": [], "other": []}
    for r in records:
        if with_edge:
            setup = r.stats.get("setup_s") or 0.0
            drafting = sum(o.draft_s + o.catchup_s for o in r.rounds)
            verify = sum(o.verify_s for o in r.rounds)
            link = sum(max(o.exchange_s - o.verify_s, 0.0) for o in r.rounds)
            values = [setup, drafting, verify, link]
        else:
            values = [sum(p.seconds for p in r.prefills), sum(s.seconds for s in r.steps)]
        values.append(max(r.wall_s - sum(values), 0.0))
        for name, value in zip(parts, values, strict=True):
            parts[name].append(value)
    return {name: statistics.median(values) if values else 0.0 for name, values in parts.items()}


def _steps(records: list[GenerationRecord], buckets: int) -> dict[str, Any]:
    steps = [s for r in records for s in r.steps]
    return {
        "buckets": bucket_steps(steps, buckets),
        "points": [[s.context, s.seconds] for s in steps if s.tokens == 1],
        "feeds_by_tokens": {
            str(n): spread_dict(s.seconds for s in steps if s.tokens == n) for n in sorted({s.tokens for s in steps})
        },
    }


def _edge(records: list[GenerationRecord]) -> dict[str, Any]:
    rounds = [o for r in records for o in r.rounds]
    return {
        "rounds": len(rounds),
        "bursts": sum(o.burst for o in rounds),
        "uplink_bytes_per_round": spread_dict(o.uplink_bytes for o in rounds),
        "downlink_bytes_per_round": spread_dict(o.downlink_bytes for o in rounds),
        "setup_uplink_bytes": spread_dict(r.stats.get("setup_uplink_bytes", 0) for r in records),
        "setup_downlink_bytes": spread_dict(r.stats.get("setup_downlink_bytes", 0) for r in records),
        "exchange_s_total": spread_dict(sum(o.exchange_s for o in r.rounds) for r in records),
        "verify_s_total": spread_dict(sum(o.verify_s for o in r.rounds) for r in records),
    }


def _radio(records: list[GenerationRecord], radio: str) -> dict[str, Any] | None:
    """Two scenarios of the same bytes: each generation alone (the radio idle before it, so each transfer pays a
    promotion and a full tail: a question now and then), and generations back to back (the radio kept connected:
    its connected power for the generation's wall time, plus the bytes)."""
    found = [r for r in records if r.radio is not None]
    if radio == "none" or not found:
        return None
    connected_w = radio_profile(radio).tail_mw / 1000.0
    return {
        "profile": radio,
        "estimated": True,
        "label": "ESTIMATE from published radio figures (docs/energy.md), applied to the bytes counted on the socket",
        "verified_figures": all(r.radio.verified for r in found),
        "scenario": "each generation alone: the radio idle before it, one promotion and one full tail per transfer",
        "joules_per_generation": spread_dict(r.radio.joules for r in found),
        "bytes_joules_per_generation": spread_dict(r.radio.bytes_j for r in found),
        "overhead_joules_per_generation": spread_dict(r.radio.overhead_j for r in found),
        "transfers_per_generation": spread_dict(r.radio.transfers for r in found),
        "joules_per_token": spread_dict(r.radio.joules / len(r.tokens) for r in found if r.tokens),
        "back_to_back": {
            "scenario": "generations back to back: the radio stays connected, drawing its tail power for the "
            "generation's wall time, plus the bytes",
            "connected_w": connected_w,
            "joules_per_token": spread_dict(
                (r.radio.bytes_j + connected_w * r.wall_s) / len(r.tokens) for r in found if r.tokens
            ),
        },
    }


def _memory(run: ProfileRun) -> dict[str, Any]:
    records = run.records
    prefill_growth = [p.rss_growth_kib for r in records for p in r.prefills if p.rss_growth_kib is not None]
    generation_growth = [
        r.rss_after_kib - r.rss_before_kib for r in records if r.rss_after_kib is not None and r.rss_before_kib
    ]
    kv = [r.kv_bytes for r in records if r.kv_bytes is not None]
    return {
        "peak_rss_kib": run.peak_rss_kib,
        "rss_after_load_kib": run.rss_after_load_kib,
        "prefill_rss_growth_kib": spread_dict(prefill_growth) if prefill_growth else None,
        "generation_rss_growth_kib": spread_dict(generation_growth) if generation_growth else None,
        "drafter_kv_kib_at_end": spread_dict(b / 1024 for b in kv) if kv else None,
        "note": "peak: VmHWM of this process since it started (engine load and warm-up included); growth: VmRSS "
        "after minus before, a measured generation's (the warm-up took the first allocations)",
    }


def _energy(run: ProfileRun, summary: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the meter: what it is and what it could not measure, the energy numbers)."""
    records, meter = run.records, run.meter
    name = meter.name
    estimated = bool(getattr(meter, "estimated", False))
    not_measured: list[str] = []
    notes = list(records[0].reading.notes) if records else []  # the first generation's: the others say alike
    if name == "none":
        not_measured.append("energy: no meter (--energy none)")
    if estimated:
        not_measured.append("no energy sensor: every device joule here is a model estimate from CPU time")
    if name in ("rapl", "nvml"):
        not_measured.append(f"{name} sees only part of the device (see scope)")
    if run.edge is not None:
        not_measured.append("the edge's energy (another machine; `covspec serve` is not metered here)")
        if run.config.radio == "none":
            not_measured.append("radio energy (--radio none: a wired link)")
    not_measured.append(
        "each stage's energy inside a generation: stages last less than a meter sample, so each is measured in a "
        "window of its own (idle, prefill, step), and the prefill's four stages share one window by their time"
    )
    meter_info = {"name": name, "estimated": estimated, "scope": METER_SCOPE.get(name, name),
                  "not_measured": not_measured, "notes": notes}  # fmt: skip
    if name == "none":
        return meter_info, {"measured": False}
    joules = [r.reading.joules for r in records if r.reading.joules is not None]
    tokens = [len(r.tokens) for r in records]
    per_token = [r.reading.joules / len(r.tokens) for r in records if r.reading.joules is not None and r.tokens]
    energy: dict[str, Any] = {
        "measured": True,
        "estimated": estimated,
        "label": "ESTIMATE" if estimated else f"measured by {name}",
        "joules_per_generation": spread_dict(joules),
        "joules_per_token": spread_dict(per_token),
        "mean_watts": spread_dict(r.reading.mean_watts for r in records if r.reading.mean_watts is not None),
        "rails_joules_per_generation": _rails(records),
        "stages": _stage_energy(run, summary, statistics.median(tokens) if tokens else 0),
    }
    radio = summary.get("radio")
    if radio is not None and per_token:
        energy["device_and_radio_joules_per_token"] = statistics.median(per_token) + radio["joules_per_token"]["median"]
    return meter_info, energy


def _rails(records: list[GenerationRecord]) -> dict[str, float]:
    names = sorted({rail for r in records for rail in r.reading.rails_j})
    return {rail: statistics.median(r.reading.rails_j.get(rail, 0.0) for r in records) for rail in names}


def _stage_energy(run: ProfileRun, summary: dict[str, Any], tokens: float) -> dict[str, Any]:
    """Joules per call from the stage windows, and per generation: per call x the calls a generation makes (the
    prefill's stages by their share of its time; waiting on the edge at the idle window's watts)."""
    windows = run.windows
    if not windows or any(w.joules_per_call is None for w in windows.values()):
        return {}
    stages = summary["stages"]
    idle_w = windows["idle"].reading.mean_watts or 0.0
    prefill_j = windows["prefill"].joules_per_call or 0.0
    step_j = windows["step"].joules_per_call or 0.0
    shares = {n: stages[n]["seconds"]["median"] for n in PREFILL_STAGES if n in stages}
    per_generation: dict[str, float] = split_by_time(prefill_j, shares) if shares else {"prefill_total": prefill_j}
    calls = [len(r.steps) for r in run.records]
    per_generation["steps"] = step_j * (statistics.median(calls) if calls else 0)
    if run.edge is not None:
        waits = [sum(o.exchange_s for o in r.rounds) for r in run.records]
        per_generation["edge_wait"] = idle_w * (statistics.median(waits) if waits else 0.0)
    joules = [r.reading.joules for r in run.records if r.reading.joules is not None]
    measured = statistics.median(joules) if joules else None
    return {
        "idle_watts": idle_w,
        "joules_per_prefill": prefill_j,
        "joules_per_step": step_j,
        "joules_per_generation": per_generation,
        "joules_per_token": {k: v / tokens for k, v in per_generation.items()} if tokens else {},
        "labels": {k: ENERGY_LABELS[k] for k in per_generation},
        "windows": {k: w.to_dict() for k, w in windows.items()},
        "how": "prefill and step: repeated in windows of their own; the prefill's stages share its joules by their "
        "time; steps: every decoder call after the prefill at a single step's joules; waiting on the edge: the "
        "idle window's watts x the rounds' exchange time",
        "measured_joules_per_generation": measured,
        "unattributed_joules_per_generation": measured - sum(per_generation.values()) if measured is not None else None,
    }


__all__ = ["ENERGY_LABELS", "METER_SCOPE", "SCHEMA", "summarize"]
