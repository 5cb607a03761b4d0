"""N devices against one edge (``covspec bench load``): batched verification against one-at-a-time and against the
target alone batched, in one run (DESIGN.md §10).

Every mode has its own `covspec serve` (its batch size and schedule), all pinned to the edge's CPUs and idle while
another mode runs; for each device count the modes take turns. Device 0 is the real drafter; the others are
emulated (``covspec.bench.replay``: the real drafter's recorded drafts at its measured step times), all threads of
this process on the device's CPUs, each with its own connection. In the target-only mode every device is a client
of the edge's chat completions, which the edge batches the same way. The edge's own series (batch sizes, busy
seconds) are read from its ``/metrics`` before and after each run.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from covspec.bench.replay import ReplayEngine, record_drafts
from covspec.bench.sidebyside import BenchItem, link_url
from covspec.cpus import CpuSplit
from covspec.link.presets import LinkProfile
from covspec.runtime_device.client import EdgeClient
from covspec.runtime_device.engines.base import DrafterEngine
from covspec.runtime_device.loop import GenerationConfig, GenerationResult, generate, generate_target_only
from covspec.runtime_edge.schedules import Schedule
from covspec.runtime_edge.server import ServeProcess


@dataclass(frozen=True)
class LoadMode:
    """One line of the plot: speculative or target-only, and how the edge batches."""

    name: str
    speculative: bool
    max_batch: int
    schedule: Schedule = Schedule.FCFS

    def serve_args(self, window_s: float, max_sessions: int) -> tuple[str, ...]:
        return ("--max-batch", str(self.max_batch), "--schedule", self.schedule.value,
                "--batch-window-ms", f"{window_s * 1000:g}", "--max-sessions", str(max_sessions))  # fmt: skip


def load_modes(max_batch: int, schedules: Sequence[Schedule] = (Schedule.FCFS,)) -> list[LoadMode]:
    """Batched (first schedule), one at a time, the target alone batched, then batched under each other schedule."""
    first, *others = list(schedules) or [Schedule.FCFS]
    modes = [
        LoadMode("batched", True, max_batch, first),
        LoadMode("one-at-a-time", True, 1),
        LoadMode("target-only batched", False, max_batch),
    ]
    return modes + [LoadMode(f"batched {s.value}", True, max_batch, s) for s in others]


@dataclass
class _Device:
    tokens: int = 0
    seconds: float = 0.0
    up: int = 0
    down: int = 0
    identical: bool = True
    round_ms: list[float] = field(default_factory=list)
    error: str | None = None


def run_load(
    engine: DrafterEngine,
    target: Any,
    items: Sequence[BenchItem],
    devices: Sequence[int],
    *,
    cpus: CpuSplit,
    config: GenerationConfig,
    modes: Sequence[LoadMode],
    link: LinkProfile,
    questions: int = 4,
    window_s: float = 0.0,
    progress: Any = None,
) -> dict[str, Any]:
    """``{"rows": [...one per (devices, mode)...], "drafter_times": ..., ...}``. This process must already be pinned
    to ``cpus.device``; the edges run on ``cpus.edge``. Every device answers the first ``questions`` items, device i
    starting at item i (so all do the same work, in different orders, and their tokens/s compare), greedy, with
    ``config``'s policy and K."""
    if config.temperature != 0:
        raise ValueError("emulated devices replay greedy drafts: the load test is greedy")
    items = list(items[:questions])
    references = [(item.image, item.prompt, item.reference) for item in items]
    records, times = record_drafts(engine, references, max(config.draft_len, 1), progress)
    rows = []
    with ExitStack() as stack:
        urls = {}
        for mode in modes:
            args = mode.serve_args(window_s, 2 * max(devices) + 2)
            server = ServeProcess(target, threads=len(cpus.edge), cpus=set(cpus.edge), extra_args=args)
            stack.callback(server.stop)
            urls[mode.name] = (server, stack.enter_context(link_url(server, link, shared=True)))
        for server, _ in urls.values():
            server.wait_ready()
        task = progress.add_task("devices x modes", total=len(devices) * len(modes)) if progress else None
        for mode in modes:  # a first generation per mode, untimed: connections, the models' first calls
            _run_devices(engine, records, times, items, 1, 1, urls[mode.name][1], mode, config)
        for n in devices:
            for mode in modes:  # the modes take turns at each device count
                server, url = urls[mode.name]
                before = _edge_series(server.url)
                started = time.perf_counter()
                results, misses = _run_devices(engine, records, times, items, n, questions, url, mode, config)
                wall = time.perf_counter() - started
                edge = {k: v - before.get(k, 0.0) for k, v in _edge_series(server.url).items()}
                rows.append(_row(mode, n, results, wall, edge, misses))
                if progress is not None:
                    progress.advance(task)
    _add_ratios(rows)
    return {
        "rows": rows,
        "devices": list(devices),
        "questions_per_device": questions,
        "drafter_times": times.as_dict(),
        "draft_len": config.draft_len,
        "policy": config.policy.value,
        "verify_mode": config.verify_mode.value,
        "max_new_tokens": config.max_new_tokens,
        "link": link.as_dict(),
        "shared_cell": link.shaped,
        "batch_window_s": window_s,
        "edge_cpus": sorted(cpus.edge),
        "device_cpus": sorted(cpus.device),
        "emulated": "device 0 runs the real drafter; devices 1..N-1 are emulated: they replay its recorded greedy "
        "drafts at its measured prefill and step times (DESIGN.md §2), with the real device loop, policy, protocol "
        "and connection; target-only devices are real chat-completion clients",
        "edge_bound": "edge_bound_tokens_per_s: committed tokens over the seconds the edge's model thread was busy "
        "(batched forwards and prefills): the throughput if the edge never waited for a device; "
        "edge_decode_tokens_per_s: the same over the batched forwards' seconds alone (no prefills); "
        "edge_prefill_share: the share of the busy seconds that were prefills",
    }


def _run_devices(engine, records, times, items, n, questions, url, mode, config) -> tuple[list[_Device], int]:
    """``n`` devices at once, started together; each answers ``questions`` items on one connection, device i
    starting at item i."""
    devices = [_Device() for _ in range(n)]
    orders = [[(i + q) % len(items) for q in range(questions)] for i in range(n)]
    engines: list[Any] = [
        engine if i == 0 else ReplayEngine(engine, [records[j] for j in order], times) for i, order in enumerate(orders)
    ]
    start = threading.Barrier(n)

    def device(i: int) -> None:
        client, state = EdgeClient(url), devices[i]
        try:
            start.wait(timeout=120)
            began = time.perf_counter()
            for j in orders[i]:
                item = items[j]
                result = _generate(engines[i], client, item, mode, config)
                _add(state, result, item)
            state.seconds = time.perf_counter() - began
        except Exception as exc:  # a device that fails is reported, not hidden; the run goes on
            state.error = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()

    threads = [threading.Thread(target=device, args=(i,), name=f"device-{i}") for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return devices, sum(e.misses for e in engines if isinstance(e, ReplayEngine))


def _generate(engine, client, item: BenchItem, mode: LoadMode, config: GenerationConfig) -> GenerationResult:
    if not mode.speculative:
        return generate_target_only(client, item.image, item.prompt, config)
    return generate(engine, client, item.image, item.prompt, config)


def _add(state: _Device, result: GenerationResult, item: BenchItem) -> None:
    s = result.stats
    state.tokens += s["generated_tokens"]
    state.up += s["uplink_bytes"] + s["setup_uplink_bytes"]
    state.down += s["downlink_bytes"] + s["setup_downlink_bytes"]
    state.identical &= result.tokens == item.reference
    state.round_ms += [o.exchange_s * 1000 for o in result.rounds]


_SERIES = {
    "batches": r"covspec_batch_size_count\{[^}]*\} (\S+)",
    "batch_rows": r"covspec_batch_size_sum\{[^}]*\} (\S+)",
    "busy_s": r"covspec_model_busy_seconds_total\{[^}]*\} (\S+)",
    "batch_busy_s": r'covspec_model_busy_seconds_total\{work="batch"\} (\S+)',
    "committed": r"covspec_committed_tokens_total (\S+)",
    "chat_tokens": r"covspec_chat_completion_tokens_total (\S+)",
}


def _edge_series(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    return {name: sum(float(x) for x in re.findall("^" + pattern, text, re.M)) for name, pattern in _SERIES.items()}


def _row(mode: LoadMode, n: int, devices: list[_Device], wall: float, edge: dict[str, float], misses: int) -> dict:
    ok = [d for d in devices if d.error is None]
    tokens = sum(d.tokens for d in ok)
    per_device = [d.tokens / d.seconds if d.seconds else 0.0 for d in ok]
    rounds = [ms for d in ok for ms in d.round_ms]
    committed = edge.get("committed", 0.0) + edge.get("chat_tokens", 0.0)
    busy = edge.get("busy_s", 0.0)
    return {
        "mode": mode.name,
        "devices": n,
        "batched": mode.max_batch > 1,
        "speculative": mode.speculative,
        "schedule": mode.schedule.value,
        "max_batch": mode.max_batch,
        "emulated_devices": n - 1 if mode.speculative else 0,
        "tokens_per_s": tokens / wall if wall else 0.0,
        "per_device_tokens_per_s": per_device,
        "min_device_tokens_per_s": min(per_device) if per_device else 0.0,
        "jain_index": jain_index(per_device),
        "p50_round_ms": _quantile(rounds, 0.5),
        "p95_round_ms": _quantile(rounds, 0.95),
        "mean_batch_size": edge["batch_rows"] / edge["batches"] if edge.get("batches") else None,
        "edge_busy_share": busy / wall if wall else None,
        "edge_bound_tokens_per_s": committed / busy if busy else None,
        "edge_prefill_share": 1 - edge.get("batch_busy_s", 0.0) / busy if busy else None,
        "edge_decode_tokens_per_s": committed / edge["batch_busy_s"] if edge.get("batch_busy_s") else None,
        "bytes_per_token": sum(d.up + d.down for d in ok) / tokens if tokens else None,
        "uplink_bytes_per_token": sum(d.up for d in ok) / tokens if tokens else None,
        "generated_tokens": tokens,
        "wall_s": wall,
        "identical_to_target": all(d.identical for d in ok) and len(ok) == n,
        "real_device_identical": devices[0].error is None and devices[0].identical,
        "replay_misses": misses,
        "errors": [d.error for d in devices if d.error is not None],
    }


def _add_ratios(rows: list[dict]) -> None:
    """Each row's throughput over the target alone batched and over one at a time, at the same device count."""
    for row in rows:
        same = {r["mode"]: r["tokens_per_s"] for r in rows if r["devices"] == row["devices"]}
        base, single = same.get("target-only batched"), same.get("one-at-a-time")
        row["vs_target_only"] = row["tokens_per_s"] / base if base else None
        row["vs_one_at_a_time"] = row["tokens_per_s"] / single if single else None


def jain_index(values: Sequence[float]) -> float | None:
    """Jain's fairness index (sum x)^2 / (n sum x^2): 1 when all are equal, 1/n when one takes everything."""
    squares = sum(v * v for v in values)
    return sum(values) ** 2 / (len(values) * squares) if values and squares else None


def _quantile(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


def plot_load(result: dict[str, Any], path: Any) -> None:
    """Aggregate tokens/s and p95 round latency against the device count, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        xs = [r["devices"] for r in mine]
        left.plot(xs, [r["tokens_per_s"] for r in mine], marker="o", label=mode)
        latency = [(r["devices"], r["p95_round_ms"]) for r in mine if r["p95_round_ms"] is not None]
        if latency:
            right.plot(*zip(*latency, strict=True), marker="o", label=mode)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(result["devices"], [str(d) for d in result["devices"]])
        ax.set_xlabel("devices")
        ax.grid(alpha=0.3)
    left.set(ylabel="aggregate tokens/s", title="throughput")
    right.set(ylabel="p95 round latency (ms)", title="round latency (speculative modes)")
    left.legend(fontsize=8)
    fig.suptitle(f"covspec bench load: one edge, link {result['link']['name']} (device 0 real, the rest emulated)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
