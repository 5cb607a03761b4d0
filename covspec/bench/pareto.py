"""`covspec bench pareto`: operating points of the pair swept side by side, and the Pareto fronts of tokens/s, bytes
per token, joules per token and accuracy, with the point each objective picks.

The sweep is not a full factorial: one factor at a time around a base point (verify mode, draft length or policy,
the drafter's visual-token budget and reducer, the drafter's precision, the link), plus draft length x link. Every
point answers the same items through one edge server, item by item in turn (as `covspec.bench.sidebyside` does), so
the machine's noise hits them alike. Joules come from a model (:class:`covspec.spec.cost_model.EnergyInputs`)
applied to what each generation measured, and are labelled as estimated wherever they are shown.

Generic over the pair, the engines and the items: ``covspec.demo.pareto`` feeds it the demo pair.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import html
import json
import math
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covspec.bench.sidebyside import BenchItem, Lane, Tally, interleave, link_url
from covspec.cpus import CpuSplit
from covspec.link.presets import LinkProfile
from covspec.protocol import VerifyMode
from covspec.reduce import Budget, TokenReduction
from covspec.runtime_device.engines.base import DrafterEngine
from covspec.runtime_device.loop import GenerationConfig
from covspec.runtime_edge.server import ServeProcess
from covspec.spec.cost_model import EnergyInputs, Objective
from covspec.spec.policy import PolicyKind

ESTIMATED = "estimated (model)"
DESIGN = (
    "one factor at a time around the base point (verify mode, draft length / policy, keep ratio and reducer, drafter "
    "precision, link), plus draft length x link; not a full factorial: factors are not crossed otherwise"
)


class Direction(str, enum.Enum):
    """Which way an axis improves."""

    MAX = "max"
    MIN = "min"


AXES: dict[str, Direction] = {
    "tokens_per_s": Direction.MAX,
    "bytes_per_token": Direction.MIN,
    "joules_per_token": Direction.MIN,
    "accuracy": Direction.MAX,
}
AXIS_LABELS = {
    "tokens_per_s": "tokens/s",
    "bytes_per_token": "bytes/token (up + down, per round)",
    "joules_per_token": f"mJ/token on the device, {ESTIMATED}",
    "accuracy": "accuracy (exact match)",
}
# (x, y) of each panel: y against x
PANELS: tuple[tuple[str, str], ...] = (
    ("joules_per_token", "tokens_per_s"),
    ("bytes_per_token", "tokens_per_s"),
    ("bytes_per_token", "joules_per_token"),
    ("tokens_per_s", "accuracy"),
)


# ---------------------------------------------------------------------------------------------------------------------
# fronts and picks: pure


def dominates(a: Mapping[str, float], b: Mapping[str, float], axes: Mapping[str, Direction]) -> bool:
    """``a`` is at least as good as ``b`` on every axis and strictly better on one."""
    better = False
    for axis, direction in axes.items():
        x, y = (a[axis], b[axis]) if direction is Direction.MAX else (b[axis], a[axis])
        if x < y:
            return False
        better |= x > y
    return better


def pareto_front(points: Sequence[Mapping[str, Any]], axes: Mapping[str, Direction]) -> list[int]:
    """Indices, in input order, of the points no other point dominates over ``axes``. A point without a finite value
    on one of the axes is left out (target-only has no AAL, a run without answers no accuracy); points equal on
    every axis do not dominate each other, so ties are all kept."""
    if not axes:
        raise ValueError("a front needs at least one axis")
    usable = [i for i, p in enumerate(points) if all(_finite(p.get(axis)) for axis in axes)]
    return [i for i in usable if not any(dominates(points[j], points[i], axes) for j in usable if j != i)]


def objective_value(objective: Objective, point: Mapping[str, Any]) -> float | None:
    """Higher is better: tokens/s (latency), tokens per joule (energy), (tokens/s) / (J/token) (balanced)."""
    speed, joules = point.get("tokens_per_s"), point.get("joules_per_token")
    if objective is Objective.LATENCY:
        return speed if _finite(speed) else None
    if not _finite(joules) or joules <= 0:
        return None
    if objective is Objective.ENERGY:
        return 1.0 / joules
    return speed / joules if _finite(speed) else None


def pick(points: Sequence[Mapping[str, Any]], objective: Objective, *, lossy_allowed: bool = False) -> int | None:
    """Index of the point ``objective`` prefers (the first of equals), among lossless points unless ``lossy_allowed``;
    None when no point can be rated."""
    best, best_value = None, -math.inf
    for i, point in enumerate(points):
        if point.get("lossy") and not lossy_allowed:
            continue
        value = objective_value(objective, point)
        if value is not None and value > best_value:
            best, best_value = i, value
    return best


def analyse(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The fronts of every panel's axis pair and of all four axes (over all points and over the lossless ones, by
    name) and each objective's pick, lossless and with lossy points allowed."""
    lossless = [i for i, p in enumerate(points) if not p.get("lossy")]

    def fronts(axes: dict[str, Direction]) -> dict[str, list[str]]:
        sub = [points[i] for i in lossless]
        return {
            "all": [points[i]["name"] for i in pareto_front(points, axes)],
            "lossless": [sub[i]["name"] for i in pareto_front(sub, axes)],
        }

    pairs = [
        {"x": x, "y": y, "directions": [AXES[x].value, AXES[y].value], **fronts({x: AXES[x], y: AXES[y]})}
        for x, y in PANELS
    ]
    picks: dict[str, dict[str, str | None]] = {}
    for key, lossy in (("lossless", False), ("lossy_allowed", True)):
        picks[key] = {}
        for objective in Objective:
            index = pick(points, objective, lossy_allowed=lossy)
            picks[key][objective.value] = points[index]["name"] if index is not None else None
    return {"fronts": pairs, "front_all_axes": fronts(dict(AXES)), "picks": picks}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------------------------------
# operating points and the sweep


@dataclass(frozen=True)
class OperatingPoint:
    """One point of the sweep. ``verify_mode`` None is target-only (the edge's chat completions). ``reducer`` with
    ``keep`` < 1: the drafter reads that share of the visual tokens; ``reduce_target`` makes it LOSSY (the target
    reads only those too). ``precision`` names the drafter engine the sweep is given for it."""

    name: str
    factor: str
    verify_mode: VerifyMode | None = VerifyMode.COMPACT
    policy: PolicyKind = PolicyKind.FIXED
    draft_len: int = 4
    objective: Objective = Objective.LATENCY
    reducer: str | None = None
    keep: float = 1.0
    reduce_target: bool = False
    precision: str = "fp32"
    link: str = "loopback"
    persistent: bool = True

    def __post_init__(self) -> None:
        if self.reduce_target and (self.reducer is None or self.keep >= 1):
            raise ValueError(f"{self.name}: a lossy target reduction needs a reducer and keep < 1")
        if self.verify_mode is not None and self.draft_len < 1:
            raise ValueError(f"{self.name}: a speculative point drafts at least one token")

    @property
    def lossy(self) -> bool:
        return self.reduce_target

    @property
    def reduction(self) -> TokenReduction | None:
        if self.reducer is None or self.keep >= 1:
            return None
        return TokenReduction(self.reducer, Budget(ratio=self.keep))

    def config(self, max_new_tokens: int, energy: EnergyInputs | None) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            draft_len=self.draft_len,
            verify_mode=self.verify_mode or VerifyMode.COMPACT,
            policy=self.policy,
            objective=self.objective,
            energy=energy,
            reduction=self.reduction,
            reduce_target=self.reduce_target,
        )

    def settings(self) -> dict[str, Any]:
        speculative = self.verify_mode is not None
        return {
            "verify_mode": self.verify_mode.value if speculative else "target_only",
            "policy": self.policy.value if speculative else None,
            "draft_len": self.draft_len if speculative else 0,
            "objective": self.objective.value if speculative and self.policy is PolicyKind.COST else None,
            "reducer": self.reducer if self.reduction is not None else None,
            "keep": self.keep if self.reduction is not None else 1.0,
            "reduce_target": self.reduce_target,
            "precision": self.precision if speculative else None,
            "link": self.link,
            "persistent": self.persistent,
        }


BASE = OperatingPoint("base", "base")


def sweep_points(
    links: Sequence[str],
    *,
    base: OperatingPoint = BASE,
    draft_lens: Sequence[int] = (1, 2, 3, 4, 5, 6),
    max_draft_len: int = 6,
    keeps: Sequence[float] = (0.5, 0.25),
    reducers: Sequence[str] = ("covspec", "pool"),
    precisions: Sequence[str] = ("int8", "int4"),
    link_draft_lens: Sequence[int] = (1, 2, 6),
) -> list[OperatingPoint]:
    """Target-only and the base point on ``links[0]``, then one factor at a time around the base: verify mode,
    fixed K (``draft_lens``), margin and the cost policy per objective (up to ``max_draft_len``), each reducer at
    each keep share (drafter only, then LOSSY with the target reduced too), each drafter precision, the base and
    target-only at every other link, and K x link (``link_draft_lens`` at every other link)."""
    if not links:
        raise ValueError("the sweep needs at least one link")
    home = links[0]
    base = _with(base, name="base", factor="base", link=home)
    points = [OperatingPoint("target-only", "reference", verify_mode=None, draft_len=0, link=home), base]
    for mode in (VerifyMode.VANILLA, VerifyMode.DSSD):
        if mode is not base.verify_mode:
            points.append(_with(base, name=mode.value, factor="verify mode", verify_mode=mode))
    for k in draft_lens:
        if k != base.draft_len:
            points.append(_with(base, name=f"K={k}", factor="draft length", draft_len=k))
    points.append(_with(base, name=f"margin K<={max_draft_len}", factor="policy", policy=PolicyKind.MARGIN,
                        draft_len=max_draft_len))  # fmt: skip
    for objective in Objective:
        points.append(_with(base, name=f"cost {objective.value}", factor="policy", policy=PolicyKind.COST,
                            draft_len=max_draft_len, objective=objective))  # fmt: skip
    for lossy in (False, True):
        for reducer in reducers:
            for keep in keeps:
                name = f"{reducer} {keep:g}" + (" +target LOSSY" if lossy else "")
                factor = "target reduction (lossy)" if lossy else "keep ratio / reducer"
                points.append(_with(base, name=name, factor=factor, reducer=reducer, keep=keep, reduce_target=lossy))
    for precision in precisions:
        if precision != base.precision:
            points.append(_with(base, name=precision, factor="drafter precision", precision=precision))
    for link in links[1:]:
        points.append(_with(base, name=f"@{link}", factor="link", link=link))
        points.append(OperatingPoint(f"target-only @{link}", "reference", verify_mode=None, draft_len=0, link=link))
    for link in links[1:]:
        for k in link_draft_lens:
            if k != base.draft_len:
                points.append(_with(base, name=f"K={k} @{link}", factor="draft length x link", draft_len=k, link=link))
    _check_unique(points)
    return points


def quick_points(links: Sequence[str], *, base: OperatingPoint = BASE) -> list[OperatingPoint]:
    """Three points: target-only, the base, and the base at the second link (or K=2 with one link)."""
    home = links[0]
    base = _with(base, name="base", factor="base", link=home)
    third = (
        _with(base, name=f"@{links[1]}", factor="link", link=links[1])
        if len(links) > 1
        else _with(base, name="K=2", factor="draft length", draft_len=2)
    )
    return [OperatingPoint("target-only", "reference", verify_mode=None, draft_len=0, link=home), base, third]


def _with(point: OperatingPoint, **changes: Any) -> OperatingPoint:
    return dataclasses.replace(point, **changes)


def _check_unique(points: Sequence[OperatingPoint]) -> None:
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ValueError(f"operating point names repeat: {names}")


def run_pareto(
    engines: Mapping[str, DrafterEngine],
    target: Path,
    items: Sequence[BenchItem],
    points: Sequence[OperatingPoint],
    links: Mapping[str, LinkProfile],
    *,
    cpus: CpuSplit,
    energy: EnergyInputs,
    energy_label: str = ESTIMATED,
    max_new_tokens: int = 40,
    warmup_items: Sequence[BenchItem] = (),
    progress: Any = None,
) -> dict[str, Any]:
    """Every point over ``items`` through one pinned `covspec serve` of ``target`` (on ``cpus.edge``; this process,
    already pinned to ``cpus.device``, is the device), behind one emulated link per name in ``links``; item by item,
    every point in turn, after ``warmup_items`` answered untimed. ``engines``: the drafter per precision the points
    name. Returns ``{"points": [...], "fronts": [...], "front_all_axes": {...}, "picks": {...}, ...}``."""
    _check_unique(points)
    missing = {p.precision for p in points if p.verify_mode is not None} - set(engines)
    if missing:
        raise ValueError(f"no drafter engine for precision {', '.join(sorted(missing))}")
    unknown = {p.link for p in points} - set(links)
    if unknown:
        raise ValueError(f"no link profile for {', '.join(sorted(unknown))}")
    with ExitStack() as stack:
        server = ServeProcess(target, threads=len(cpus.edge), cpus=set(cpus.edge))
        stack.callback(server.stop)
        server.wait_ready()
        urls = {
            name: stack.enter_context(link_url(server, links[name])) for name in dict.fromkeys(p.link for p in points)
        }
        lanes = []
        for p in points:
            engine = engines[p.precision] if p.verify_mode is not None else None
            lanes.append(Lane(urls[p.link], links[p.link], p.config(max_new_tokens, energy), engine, p.persistent))
        task = progress.add_task("pareto sweep", total=len(items) * len(points)) if progress is not None else None
        interleave(lanes, items, warmup_items, progress=progress, task=task)
    rows = [_point_row(p, lane.tally, energy_label) for p, lane in zip(points, lanes, strict=True)]
    add_speedups(rows)
    return {
        "points": rows,
        **analyse(rows),
        "design": DESIGN,
        "items": len(items),
        "warmup_items": len(warmup_items),
        "max_new_tokens": max_new_tokens,
        "links": {name: links[name].as_dict() for name in urls},
        "energy": {
            "label": energy_label,
            "inputs": dataclasses.asdict(energy),
            "formula": "per generation: wall_s x wait_w + drafting_s x (draft_w - wait_w) + bytes x J/byte, with "
            "drafting_s the rounds' drafting and catch-up, bytes every byte on the socket (setup included); the "
            "drafter's prefill counts at the waiting draw",
        },
        "edge_cpus": sorted(cpus.edge),
        "device_cpus": sorted(cpus.device),
        "cpus_shared": cpus.shared,
        "bound": "analytical bound without overlap (as covspec bench ablation): per round the measured drafting "
        "and catch-up, the edge's reported verify time and the link's nominal round trip and serialisation",
        "note": "bytes_per_token counts per-round traffic both ways (DESIGN.md §2); total_bytes_per_token adds the "
        "setup (connection, open, image); speedup is over target-only on the same link (speedup_over names it)",
    }


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """Each row's ``speedup`` over target-only on its own link (else on the first link that has one), and the name of
    that row in ``speedup_over``; None without a target-only row."""
    references: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["verify_mode"] == "target_only":
            references.setdefault(row["link"], row)
    for row in rows:  # over target-only on the same link, else on the first link that has one
        reference = references.get(row["link"]) or next(iter(references.values()), None)
        row["speedup_over"] = reference["name"] if reference else None
        row["speedup"] = (
            row["tokens_per_s"] / reference["tokens_per_s"] if reference and reference["tokens_per_s"] else None
        )


def _point_row(point: OperatingPoint, t: Tally, energy_label: str) -> dict[str, Any]:
    n = max(t.tokens, 1)
    bound = t.bound_tokens_per_s if point.verify_mode is not None else None
    return {
        "name": point.name,
        "factor": point.factor,
        "lossy": point.lossy,
        **point.settings(),
        "tokens_per_s": t.tokens_per_s,
        "bytes_per_token": (t.up + t.down) / n,
        "uplink_bytes_per_token": t.up / n,
        "downlink_bytes_per_token": t.down / n,
        "total_bytes_per_token": (t.up + t.down + t.setup_up + t.setup_down) / n,
        "joules_per_token": t.joules / n,
        "joules": energy_label,
        "drafting_share": t.drafting_s / t.seconds if t.seconds else 0.0,
        "accuracy": t.accuracy,
        "identical_to_target": t.identical_to_target,
        "identical_share": t.identical / t.generations if t.generations else None,
        "aal": t.aal,
        "acceptance_rate": t.acceptance_rate,
        "bound_tokens_per_s": bound,
        "of_bound": t.tokens_per_s / bound if bound else None,
        "generated_tokens": t.tokens,
        "generations": t.generations,
    }


# ---------------------------------------------------------------------------------------------------------------------
# plot and report

_FACTOR_COLOURS = {
    "reference": "black",
    "base": "tab:red",
    "verify mode": "tab:blue",
    "draft length": "tab:orange",
    "policy": "tab:green",
    "keep ratio / reducer": "tab:purple",
    "target reduction (lossy)": "tab:brown",
    "drafter precision": "tab:pink",
    "link": "tab:cyan",
    "draft length x link": "tab:olive",
}
_SCALE = {"joules_per_token": 1e3}  # plotted in mJ
_SHORT = {"tokens_per_s": "tokens/s", "bytes_per_token": "bytes/token", "joules_per_token": "mJ/token",
          "accuracy": "accuracy"}  # fmt: skip
_PICK_STYLE = {"latency": ("*", "gold"), "energy": ("P", "limegreen"), "balanced": ("D", "deepskyblue")}


def plot_pareto(result: dict[str, Any], path: Path) -> None:
    """A 2 x 2 grid of fronts (``PANELS``): every point coloured by the factor it varies (LOSSY points as crosses),
    the lossless front as a solid step line (with lossy points allowed, dotted, where it differs), the front's
    points named, each objective's pick marked and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result["points"]
    by_name = {p["name"]: p for p in points}
    fig, axes = plt.subplots(2, 2, figsize=(14, 11))
    legend: dict[str, Any] = {}
    for ax, front in zip(axes.flat, result["fronts"], strict=True):
        x, y = front["x"], front["y"]
        sx, sy = _SCALE.get(x, 1.0), _SCALE.get(y, 1.0)
        shown = [p for p in points if _finite(p.get(x)) and _finite(p.get(y))]
        for factor in dict.fromkeys(p["factor"] for p in shown):
            for lossy in (False, True):
                mine = [p for p in shown if p["factor"] == factor and p["lossy"] == lossy]
                if mine:
                    legend[factor] = ax.scatter(
                        [p[x] * sx for p in mine], [p[y] * sy for p in mine], s=26, label=factor,
                        color=_FACTOR_COLOURS.get(factor, "grey"), marker="x" if lossy else "o",
                    )  # fmt: skip
        for key, style in (("lossless", "-"), ("all", ":")):
            if key == "all" and front["all"] == front["lossless"]:
                continue
            ranked = sorted((by_name[name] for name in front[key]), key=lambda p: p[x])
            if ranked:
                where = "post" if AXES[x] is Direction.MIN else "pre"
                (line,) = ax.step([p[x] * sx for p in ranked], [p[y] * sy for p in ranked], where=where, ls=style,
                                  lw=1.2, color="grey")  # fmt: skip
                legend[f"front ({'lossless' if key == 'lossless' else 'lossy allowed'})"] = line
        for name in dict.fromkeys(front["lossless"] + front["all"]):
            p = by_name[name]
            note = ax.annotate(name, (p[x] * sx, p[y] * sy), textcoords="offset points", xytext=(4, -9), fontsize=6)
            note.set_in_layout(False)
        _mark_picks(ax, result["picks"], by_name, (x, sx), (y, sy), legend)
        if x == "bytes_per_token" and _spread(shown, x) > 20:
            ax.set_xscale("log")
        ax.margins(x=0.12, y=0.08)  # room for the labels of the extreme points
        ax.set(xlabel=AXIS_LABELS[x], ylabel=AXIS_LABELS[y])
        ax.set_title(f"{_SHORT[y]} ({AXES[y].value}) vs {_SHORT[x]} ({AXES[x].value})", fontsize=10)
        ax.grid(alpha=0.3)
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=6, fontsize=8)
    title = (
        f"covspec bench pareto: {len(points)} operating points x {result['items']} items; joules "
        f"{result['energy']['label']}; x: LOSSY point"
    )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mark_picks(
    ax: Any,
    picks: dict[str, dict[str, str | None]],
    by_name: dict[str, Any],
    x: tuple[str, float],
    y: tuple[str, float],
    legend: dict[str, Any],
) -> None:
    """A marker per objective on the point it picks, and one label per picked point naming its objectives."""
    labels: dict[str, dict[str, list[str]]] = {}
    rightmost = max((p[x[0]] for p in by_name.values() if _finite(p.get(x[0])) and _finite(p.get(y[0]))), default=0)
    for key, suffix in (("lossless", ""), ("lossy_allowed", " (lossy ok)")):
        for objective, name in picks[key].items():
            if name is None or (key == "lossy_allowed" and name == picks["lossless"][objective]):
                continue
            p = by_name[name]
            if not (_finite(p.get(x[0])) and _finite(p.get(y[0]))):
                continue
            marker, colour = _PICK_STYLE[objective]
            legend[f"{objective} pick"] = ax.scatter(
                [p[x[0]] * x[1]], [p[y[0]] * y[1]], s=170, marker=marker, facecolor="none", edgecolor=colour,
                linewidths=1.8, zorder=5,
            )  # fmt: skip
            labels.setdefault(name, {}).setdefault(suffix, []).append(objective)
    for name, groups in labels.items():
        p = by_name[name]
        text = "; ".join(", ".join(objectives) + suffix for suffix, objectives in groups.items())
        at_right = p[x[0]] >= rightmost  # its label goes to the left, inside the panel
        note = ax.annotate(text, (p[x[0]] * x[1], p[y[0]] * y[1]), textcoords="offset points",
                           xytext=(-9 if at_right else 7, 7), ha="right" if at_right else "left", fontsize=7,
                           fontweight="bold", color="dimgrey")  # fmt: skip
        note.set_in_layout(False)


def _spread(points: Sequence[Mapping[str, Any]], axis: str) -> float:
    values = [p[axis] for p in points if p[axis] > 0]
    return max(values) / min(values) if values else 1.0


_COLUMNS = (
    ("name", "point", "{}"),
    ("factor", "factor", "{}"),
    ("link", "link", "{}"),
    ("tokens_per_s", "tok/s", "{:.1f}"),
    ("speedup", "speedup", "{:.2f}x"),
    ("bound_tokens_per_s", "bound tok/s", "{:.1f}"),
    ("bytes_per_token", "B/token", "{:.1f}"),
    ("total_bytes_per_token", "B/token incl. setup", "{:.0f}"),
    ("joules_per_token", "mJ/token (est.)", "{:.3f}"),
    ("accuracy", "accuracy", "{:.0%}"),
    ("aal", "AAL", "{:.2f}"),
    ("identical_to_target", "same as target", "{}"),
)


def report_html(result: dict[str, Any], png: Path) -> str:
    """A self-contained page: the scenario, the picks, the fronts (the PNG inlined as base64), every point, limits."""
    image = base64.b64encode(png.read_bytes()).decode()
    esc = html.escape
    picks = result["picks"]
    pick_rows = "".join(
        f"<tr><td>{esc(o)}</td><td>{esc(str(picks['lossless'][o]))}</td><td>{esc(str(picks['lossy_allowed'][o]))}"
        f"</td></tr>"
        for o in picks["lossless"]
    )
    head = "".join(f"<th>{esc(label)}</th>" for _, label, _ in _COLUMNS)
    body = "".join(
        f'<tr class="{"lossy" if p["lossy"] else ""}">'
        + "".join(f"<td>{esc(_cell(p, key, fmt))}</td>" for key, _, fmt in _COLUMNS)
        + "</tr>"
        for p in result["points"]
    )
    fronts = "".join(
        f"<li>{esc(AXIS_LABELS[f['y']])} vs {esc(AXIS_LABELS[f['x']])}: lossless {esc(', '.join(f['lossless']))}; "
        f"with lossy points {esc(', '.join(f['all']))}</li>"
        for f in result["fronts"]
    )
    scenario = "".join(f"<li>{esc(str(line))}</li>" for line in result.get("scenario_lines", []))
    inputs = result["energy"]["inputs"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>covspec bench pareto</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}td:first-child{{text-align:left}}
tr.lossy{{background:#fbeaea}}</style></head><body>
<h1>covspec bench pareto</h1>
<section id="scenario"><h2>Scenario</h2><ul>{scenario}
<li>{esc(result["design"])}</li>
<li>{result["items"]} items per point after {result["warmup_items"]} untimed warm-up items, up to
{result["max_new_tokens"]} new tokens; edge CPUs {result["edge_cpus"]}, device CPUs {result["device_cpus"]}</li>
<li>Joules: {esc(result["energy"]["label"])}: draft {inputs["draft_w"]:.2f} W, waiting {inputs["wait_w"]:.2f} W,
{inputs["up_joules_per_byte"] * 1e6:.2f} / {inputs["down_joules_per_byte"] * 1e6:.2f} µJ per byte up / down.
{esc(result["energy"]["formula"])}</li></ul></section>
<section id="picks"><h2>Picks</h2><p>latency: most tokens/s; energy: fewest joules per token; balanced: most
(tokens/s) / (J/token).</p>
<table><tr><th>objective</th><th>lossless</th><th>lossy points allowed</th></tr>{pick_rows}</table></section>
<section id="fronts"><h2>Fronts</h2><img alt="Pareto fronts" style="max-width:100%"
src="data:image/png;base64,{image}"><ul>{fronts}
<li>all four axes: lossless {esc(", ".join(result["front_all_axes"]["lossless"]))}; with lossy points
{esc(", ".join(result["front_all_axes"]["all"]))}</li></ul></section>
<section id="points"><h2>Points</h2><table><tr>{head}</tr>{body}</table>
<p>{esc(result["note"])}. {esc(result["bound"])}.</p></section>
<section id="limits"><h2>Limits</h2><ul>
<li>Joules are {esc(result["energy"]["label"])}, not a meter reading.</li>
<li>Not a full factorial: a point differs from the base in one factor (or in K and link).</li>
<li>LOSSY points (shaded) change what the target reads; only they may differ from the target's output.</li>
</ul></section></body></html>
"""


def _cell(point: Mapping[str, Any], key: str, fmt: str) -> str:
    value = point.get(key)
    if value is None:
        return "-"
    if key == "joules_per_token":
        value *= 1e3
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return fmt.format(value)


def write_outputs(result: dict[str, Any], out: Path) -> dict[str, Path]:
    """``pareto.json``, ``pareto.png`` and ``report.html`` in ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "pareto.json", "png": out / "pareto.png", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    plot_pareto(result, paths["png"])
    paths["html"].write_text(report_html(result, paths["png"]))
    return paths


__all__ = [
    "AXES",
    "BASE",
    "DESIGN",
    "ESTIMATED",
    "PANELS",
    "Direction",
    "OperatingPoint",
    "add_speedups",
    "analyse",
    "dominates",
    "objective_value",
    "pareto_front",
    "pick",
    "plot_pareto",
    "quick_points",
    "report_html",
    "run_pareto",
    "sweep_points",
    "write_outputs",
]
