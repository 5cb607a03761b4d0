"""Side by side: every mode through one edge server and, per link, one emulated link, interleaved item by item so
that the machine's noise hits the modes alike (DESIGN.md §10). The speculative rows are set beside their
analytical bound: the time the same rounds would take with no overhead at all, from what was measured in them
(drafting, the edge's verify time, the setup) and the link's nominal round trip and bandwidth.

Generic over the pair and the items: `covspec demo` and `covspec bench ablation` feed it the demo pair and scenes.
Its tally and interleaved loop (:class:`Tally`, :class:`Lane`, :func:`interleave`) serve `covspec bench pareto` too.
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
from covspec.spec.cost_model import EnergyInputs
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

    def config(self, max_new_tokens: int) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            draft_len=self.draft_len,
            verify_mode=self.verify_mode or VerifyMode.COMPACT,
            policy=self.policy,
        )


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
class Tally:
    """What one row (a bench mode, an operating point) measured over the timed items, folded one generation at a
    time, and the numbers every side-by-side table derives from it. Joules only with energy inputs (a model)."""

    generations: int = 0
    tokens: int = 0
    seconds: float = 0.0
    bound_seconds: float = 0.0
    drafting_s: float = 0.0  # the rounds' drafting and catch-up
    joules: float = 0.0
    rounds: int = 0
    draft_rounds: int = 0
    bursts: int = 0
    committed_in_draft_rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    up: int = 0
    down: int = 0
    setup_up: int = 0
    setup_down: int = 0
    correct: int = 0
    scored: int = 0
    identical: int = 0  # generations that committed exactly the item's reference
    by_task: dict[str, list[float]] = field(default_factory=dict)  # task: [tokens, seconds]

    def add(
        self, result: GenerationResult, item: BenchItem, link: LinkProfile, energy: EnergyInputs | None = None
    ) -> None:
        """Fold in one generation of ``item`` over ``link``; ``energy``: also its device joules (target-only, which
        has no rounds, waits the whole generation out), setup bytes included."""
        s = result.stats
        n = s["generated_tokens"]
        self.generations += 1
        self.tokens += n
        self.seconds += s["wall_s"]
        self.drafting_s += sum(o.draft_s + o.catchup_s for o in result.rounds)
        self.up += s["uplink_bytes"]
        self.down += s["downlink_bytes"]
        self.setup_up += s["setup_uplink_bytes"]
        self.setup_down += s["setup_downlink_bytes"]
        if energy is not None:
            spent = s.get("device_joules")  # the loop's model over the generation's rounds (None: target-only)
            if spent is None:
                spent = energy.joules(s["wall_s"], 0.0, s["uplink_bytes"], s["downlink_bytes"])
            self.joules += spent + energy.joules(0.0, 0.0, s["setup_uplink_bytes"], s["setup_downlink_bytes"])
        self.identical += result.tokens == item.reference
        if item.answer is not None:
            self.scored += 1
            self.correct += result.text.strip() == item.answer.strip()
        if result.rounds:
            self.bound_seconds += bound_seconds(result, link)
            drafts = [o for o in result.rounds if not o.burst]
            self.rounds += len(result.rounds)
            self.draft_rounds += len(drafts)
            self.bursts += len(result.rounds) - len(drafts)
            self.committed_in_draft_rounds += sum(o.committed for o in drafts)
            self.drafted += sum(o.drafted for o in drafts)
            self.accepted += sum(o.accepted for o in drafts)
        task = self.by_task.setdefault(item.task, [0, 0.0])
        task[0] += n
        task[1] += s["wall_s"]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def bound_tokens_per_s(self) -> float | None:
        """Tokens/s of the same rounds with no overhead (``bound_seconds``); None without rounds."""
        return self.tokens / self.bound_seconds if self.bound_seconds else None

    @property
    def aal(self) -> float | None:
        return self.committed_in_draft_rounds / self.draft_rounds if self.draft_rounds else None

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None

    @property
    def identical_to_target(self) -> bool:
        return self.identical == self.generations


@dataclass
class Lane:
    """One row of an interleaved run: how it answers an item (``engine`` None: target-only, the edge's chat
    completions), through which URL and link, and its tally. ``persistent``: one connection across generations
    (target-only always); otherwise a fresh connection (and device) per generation."""

    url: str
    link: LinkProfile
    config: GenerationConfig
    engine: DrafterEngine | None = None
    persistent: bool = True
    tally: Tally = field(default_factory=Tally)

    def answer(self, client: EdgeClient, item: BenchItem) -> GenerationResult:
        if self.engine is None:
            return generate_target_only(client, item.image, item.prompt, self.config)
        return generate(self.engine, client, item.image, item.prompt, self.config)


def interleave(
    lanes: Sequence[Lane],
    items: Sequence[BenchItem],
    warmup_items: Sequence[BenchItem] = (),
    *,
    progress: Any = None,
    task: Any = None,
) -> None:
    """Every lane answers every item, item by item and every lane in turn, so that the machine's noise hits them
    alike (DESIGN.md §10); ``warmup_items`` first, untimed. Timed generations go into each lane's tally (with its
    config's energy inputs) and advance ``task`` of ``progress``."""
    with ExitStack() as stack:
        clients: dict[int, EdgeClient] = {}
        for i, lane in enumerate(lanes):
            if lane.persistent or lane.engine is None:
                clients[i] = EdgeClient(lane.url)
                stack.callback(clients[i].close)
        for index, item in enumerate([*warmup_items, *items]):
            for i, lane in enumerate(lanes):
                client = clients.get(i) or EdgeClient(lane.url)
                try:
                    result = lane.answer(client, item)
                finally:
                    if i not in clients:
                        client.close()
                if index >= len(warmup_items):
                    lane.tally.add(result, item, lane.link, lane.config.energy)
                    if progress is not None:
                        progress.advance(task)


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
    lanes = [
        Lane(url, link, mode.config(max_new_tokens), engine if mode.verify_mode else None, mode.persistent)
        for mode in modes
    ]
    interleave(lanes, items, warmup_items, progress=progress, task=task)
    rows = [_row(mode, lane.tally) for mode, lane in zip(modes, lanes, strict=True)]
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["speedup"] = row["tokens_per_s"] / base if base else None
    return rows


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


def _row(mode: BenchMode, t: Tally) -> dict[str, Any]:
    n = max(t.tokens, 1)
    speculative = mode.verify_mode is not None
    bound = t.bound_tokens_per_s if speculative else None
    return {
        "mode": mode.name,
        "verify_mode": mode.verify_mode.value if mode.verify_mode else None,
        "policy": mode.policy.value if speculative else None,
        "draft_len": mode.draft_len,
        "persistent": mode.persistent,
        "tokens_per_s": t.tokens_per_s,
        "aal": t.aal,
        "acceptance_rate": t.acceptance_rate,
        "rounds_per_token": t.rounds / n if speculative else None,
        "bursts_per_generation": t.bursts / t.generations if t.generations else 0.0,
        "wasted_drafts_per_token": (t.drafted - t.accepted) / n if speculative else None,
        "uplink_bytes_per_token": t.up / n,
        "downlink_bytes_per_token": t.down / n,
        "setup_uplink_bytes_per_generation": t.setup_up / max(t.generations, 1),
        "setup_downlink_bytes_per_generation": t.setup_down / max(t.generations, 1),
        "total_uplink_bytes_per_token": (t.up + t.setup_up) / n,
        "total_downlink_bytes_per_token": (t.down + t.setup_down) / n,
        "accuracy": t.accuracy,
        "identical_to_target": t.identical_to_target,
        "bound_tokens_per_s": bound,
        "of_bound": t.tokens_per_s / bound if bound else None,
        "generated_tokens": t.tokens,
        "tokens_per_s_by_task": {k: v[0] / v[1] for k, v in t.by_task.items() if v[1] > 0},
    }


def pinned(cpus: CpuSplit) -> ExitStack:
    """Pin this process (the device) to ``cpus.device`` until the returned stack closes."""
    stack = ExitStack()
    stack.callback(pin_process, pin_process(cpus.device))
    return stack
