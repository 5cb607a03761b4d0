"""Side by side: every mode through one edge server and, per link, one emulated link, interleaved item by item so
that the machine's noise hits the modes alike (DESIGN.md §10). The speculative rows are set beside their
analytical bound: the time the same rounds would take with no overhead at all, from what was measured in them
(drafting, the edge's verify time, the setup) and the link's nominal round trip and bandwidth.

Generic over the pair and the items: `covspec demo` and `covspec bench ablation` feed it the demo pair and scenes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covspec.cpus import CpuSplit, pin_process
from covspec.link.presets import LinkProfile
from covspec.link.relay import TcpRelay
from covspec.protocol import VerifyMode
from covspec.runtime_device.client import EdgeClient
from covspec.runtime_device.engines.base import DrafterEngine
from covspec.runtime_device.loop import GenerationConfig, GenerationResult, generate, generate_target_only
from covspec.runtime_edge.server import ServeProcess
from covspec.spec.policy import PolicyKind, RoundObservation


@dataclass(frozen=True)
class BenchMode:
    """One row. ``verify_mode`` None is target-only (the edge's chat completions). ``persistent``: one connection
    across generations, images named by hash once held; otherwise a fresh connection (and device) per generation."""

    name: str
    verify_mode: VerifyMode | None
    policy: PolicyKind = PolicyKind.FIXED
    draft_len: int = 4
    persistent: bool = True


@dataclass(frozen=True)
class BenchItem:
    image: bytes
    prompt: str
    reference: list[int]  # the target's own generate(): what every row must commit
    answer: str | None = None  # scored by exact match when given
    task: str = ""


ABLATION_MODES: tuple[BenchMode, ...] = (
    BenchMode("target-only", None, draft_len=0),
    BenchMode("vanilla", VerifyMode.VANILLA, persistent=False),
    BenchMode("dssd", VerifyMode.DSSD, persistent=False),
    BenchMode("compact", VerifyMode.COMPACT, persistent=False),
    BenchMode("+ one-round-trip sessions", VerifyMode.COMPACT),
    BenchMode("+ margin gating", VerifyMode.COMPACT, PolicyKind.MARGIN, draft_len=6),
    BenchMode("+ cost policy", VerifyMode.COMPACT, PolicyKind.COST, draft_len=6),
)


@dataclass
class _Totals:
    generations: int = 0
    tokens: int = 0
    seconds: float = 0.0
    bound_seconds: float = 0.0
    rounds: int = 0
    draft_rounds: int = 0
    bursts: int = 0
    drafted: int = 0
    accepted: int = 0
    up: int = 0
    down: int = 0
    setup_up: int = 0
    setup_down: int = 0
    correct: int = 0
    scored: int = 0
    identical: bool = True
    committed_in_draft_rounds: int = 0
    by_task: dict[str, list[float]] = field(default_factory=dict)


def run_side_by_side(
    engine: DrafterEngine,
    target: Path,
    items: Sequence[BenchItem],
    links: Sequence[LinkProfile],
    *,
    cpus: CpuSplit,
    modes: Sequence[BenchMode] = ABLATION_MODES,
    max_new_tokens: int = 40,
    warmup_items: Sequence[BenchItem] = (),
    progress: Any = None,
) -> dict[str, Any]:
    """``{"links": [{"link": name, "link_profile": {...}, "rows": [...]}, ...], ...}``; the device (this process,
    which must already be pinned to ``cpus.device``) and the edge (a subprocess on ``cpus.edge``) never share a
    CPU unless there is one only. Each mode first answers ``warmup_items`` untimed, per link (its connection, its
    policy's first measurements, the model's first calls), so the rows are steady state."""
    if not modes or modes[0].verify_mode is not None:
        raise ValueError("the first mode must be target-only: it is the baseline of every speedup")
    results = []
    with ExitStack() as stack:
        server = ServeProcess(target, threads=len(cpus.edge), cpus=set(cpus.edge))
        stack.callback(server.stop)
        server.wait_ready()
        for link in links:
            with link_url(server, link) as url:
                task = progress.add_task(f"{link.name}", total=len(items) * len(modes)) if progress else None
                rows = _run_link(engine, url, items, warmup_items, modes, max_new_tokens, link, progress, task)
            results.append({"link": link.name, "link_profile": link.as_dict(), "rows": rows})
    return {
        "links": results,
        "items": len(items),
        "warmup_items": len(warmup_items),
        "max_new_tokens": max_new_tokens,
        "edge_cpus": sorted(cpus.edge),
        "device_cpus": sorted(cpus.device),
        "cpus_shared": cpus.shared,
        "bound": "analytical bound without overlap: per round the measured drafting and catch-up, the edge's reported "
        "verify time and the link's nominal round trip (mean jitter included) and serialisation; the first round "
        "starts when both the edge's prefill and (for a draft) the drafter's prefill and drafting are done; "
        "measured / bound is the share of the time that is not the system's own overhead",
        "note": "bytes per token count per-round traffic; setup (connection, hello, open, image) is reported per "
        "generation and in the totals (target-only: its request is setup, its response is downlink)",
    }


@contextmanager
def link_url(server: ServeProcess, link: LinkProfile, *, shared: bool = False) -> Iterator[str]:
    """The server's URL, behind an emulated ``link`` when it is shaped (``shared``: one cell every connection
    through it shares)."""
    if not link.shaped:
        yield server.url
        return
    with TcpRelay("127.0.0.1", server.port, link=link, shared=shared) as relay:
        yield relay.url


def _run_link(engine, url, items, warmup_items, modes, max_new_tokens, link, progress, task) -> list[dict[str, Any]]:
    totals = {mode.name: _Totals() for mode in modes}
    persistent = {mode.name: EdgeClient(url) for mode in modes if mode.persistent or mode.verify_mode is None}
    try:
        warmup = len(warmup_items)
        for index, item in enumerate(list(warmup_items) + list(items)):  # item by item, every mode in turn
            for mode in modes:
                client = persistent.get(mode.name) or EdgeClient(url)
                try:
                    result = _generate(engine, client, item, mode, max_new_tokens)
                finally:
                    if mode.name not in persistent:
                        client.close()
                if index >= warmup:
                    _add(totals[mode.name], result, item, link)
                    if progress is not None:
                        progress.advance(task)
    finally:
        for client in persistent.values():
            client.close()
    rows = [_row(mode, totals[mode.name]) for mode in modes]
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["speedup"] = row["tokens_per_s"] / base if base else None
    return rows


def _generate(engine, client, item: BenchItem, mode: BenchMode, max_new_tokens: int) -> GenerationResult:
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        draft_len=mode.draft_len,
        verify_mode=mode.verify_mode or VerifyMode.COMPACT,
        policy=mode.policy,
    )
    if mode.verify_mode is None:
        return generate_target_only(client, item.image, item.prompt, config)
    return generate(engine, client, item.image, item.prompt, config)


def _add(total: _Totals, result: GenerationResult, item: BenchItem, link: LinkProfile) -> None:
    s = result.stats
    n = s["generated_tokens"]
    total.generations += 1
    total.tokens += n
    total.seconds += s["wall_s"]
    total.rounds += s["rounds"]
    total.draft_rounds += s.get("draft_rounds", 0)
    total.bursts += s.get("bursts", 0)
    total.up += s["uplink_bytes"]
    total.down += s["downlink_bytes"]
    total.setup_up += s["setup_uplink_bytes"]
    total.setup_down += s["setup_downlink_bytes"]
    total.identical &= result.tokens == item.reference
    if item.answer is not None:
        total.scored += 1
        total.correct += result.text.strip() == item.answer.strip()
    if result.rounds:
        total.bound_seconds += bound_seconds(result, link)
        draft_rounds = [o for o in result.rounds if not o.burst]
        total.drafted += sum(o.drafted for o in draft_rounds)
        total.accepted += sum(o.accepted for o in draft_rounds)
        total.committed_in_draft_rounds += sum(o.committed for o in draft_rounds)
    total.by_task.setdefault(item.task, [0, 0.0])
    total.by_task[item.task][0] += n
    total.by_task[item.task][1] += s["wall_s"]


def bound_seconds(result: GenerationResult, link: LinkProfile) -> float:
    """A generation with no overhead. The first round goes up behind the open frame: the edge verifies it once its
    prefill is done and the round is there (a draft needs the drafter's prefill and drafting first, a burst nothing);
    every later round follows the one before."""
    first, later = result.rounds[0], result.rounds[1:]
    drafter_ready = 0.0 if first.burst else result.stats["setup_s"] + first.draft_s
    start = max(result.stats.get("edge_prefill_s") or 0.0, drafter_ready)
    first_s = start + round_bound_seconds(first, link) - first.draft_s
    return first_s + sum(round_bound_seconds(o, link) for o in later)


def round_bound_seconds(observation: RoundObservation, link: LinkProfile) -> float:
    """A round with no overhead: its measured compute, and the link's nominal delay (mean jitter included) and
    serialisation."""
    wire = link.rtt_s + link.jitter_s  # uniform jitter in [0, jitter) each way
    if link.uplink_bps:
        wire += observation.uplink_bytes * 8 / link.uplink_bps
    if link.downlink_bps:
        wire += observation.downlink_bytes * 8 / link.downlink_bps
    return observation.draft_s + observation.verify_s + observation.catchup_s + wire


def _row(mode: BenchMode, t: _Totals) -> dict[str, Any]:
    n = max(t.tokens, 1)
    speculative = mode.verify_mode is not None
    bound = t.tokens / t.bound_seconds if speculative and t.bound_seconds else None
    tokens_per_s = t.tokens / t.seconds if t.seconds else 0.0
    return {
        "mode": mode.name,
        "verify_mode": mode.verify_mode.value if mode.verify_mode else None,
        "policy": mode.policy.value if speculative else None,
        "draft_len": mode.draft_len,
        "persistent": mode.persistent,
        "tokens_per_s": tokens_per_s,
        "aal": t.committed_in_draft_rounds / t.draft_rounds if t.draft_rounds else None,
        "acceptance_rate": t.accepted / t.drafted if t.drafted else None,
        "rounds_per_token": t.rounds / n if speculative else None,
        "bursts_per_generation": t.bursts / t.generations if t.generations else 0.0,
        "wasted_drafts_per_token": (t.drafted - t.accepted) / n if speculative else None,
        "uplink_bytes_per_token": t.up / n,
        "downlink_bytes_per_token": t.down / n,
        "setup_uplink_bytes_per_generation": t.setup_up / max(t.generations, 1),
        "setup_downlink_bytes_per_generation": t.setup_down / max(t.generations, 1),
        "total_uplink_bytes_per_token": (t.up + t.setup_up) / n,
        "total_downlink_bytes_per_token": (t.down + t.setup_down) / n,
        "accuracy": t.correct / t.scored if t.scored else None,
        "identical_to_target": t.identical,
        "bound_tokens_per_s": bound,
        "of_bound": tokens_per_s / bound if bound else None,
        "generated_tokens": t.tokens,
        "tokens_per_s_by_task": {k: v[0] / v[1] for k, v in t.by_task.items() if v[1] > 0},
    }


def pinned(cpus: CpuSplit) -> ExitStack:
    """Pin this process (the device) to ``cpus.device`` until the returned stack closes."""
    stack = ExitStack()
    stack.callback(pin_process, pin_process(cpus.device))
    return stack
