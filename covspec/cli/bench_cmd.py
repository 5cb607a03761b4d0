"""`covspec bench ...`: side-by-side benchmarks (thin: parse, call, print)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from covspec.cli.options import DemoEngine, check_links
from covspec.cli.tables import print_load_rows, print_pareto_rows, print_reduce_rows, print_rows
from covspec.demo.pareto_settings import ParetoSettings

_PARETO = ParetoSettings()

bench_app = typer.Typer(help="Side-by-side benchmarks.", no_args_is_help=True)


@bench_app.command("ablation")
def ablation(
    link: list[str] = typer.Option(
        ["loopback"], "--link", callback=check_links, help="Link preset (repeat for several)."
    ),
    scenes: int = typer.Option(20, "--scenes", min=1, help="Held-out scenes per task."),
    task: list[str] = typer.Option(["all"], "--task", help="A demo task, or all (repeat for several)."),
    out: Path = typer.Option(Path("covspec-ablation"), "--out", help="Folder for ablation.json and ablation.png."),
    engine: DemoEngine = typer.Option(DemoEngine.ONNXRUNTIME, "--engine", help="Drafter engine."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the tables."),
) -> None:
    """Each step of the runtime added in turn (vanilla, dssd, compact, one-round-trip sessions, margin gating, cost
    policy) beside target-only, on the demo pair, per link and task; with the analytical bound of each row."""
    from rich.console import Console
    from rich.progress import Progress

    from covspec.demo.ablation import plot_ablation, run_ablation
    from covspec.demo.scenes import TASKS

    for name in task:
        if name != "all" and name not in TASKS:
            raise typer.BadParameter(f"unknown task {name!r}; choose all or {', '.join(TASKS)}", param_hint="--task")
    with Progress(console=Console(stderr=True), transient=True) as progress:
        pair, bundle = _demo_pair(engine, progress)
        result = run_ablation(pair, bundle=bundle, links=link, tasks=task, n_scenes=scenes, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_ablation(result, out / "ablation.png")
    if as_json:
        typer.echo(json.dumps(result))
        return
    for run in result["runs"]:
        for link_result in run["links"]:
            print_rows(
                link_result["rows"],
                f"ablation: task {run['task']}, {run['items']} scenes, link {link_result['link']}, "
                f"drafter {result['engine']}",
            )
    typer.echo(f"wrote {out / 'ablation.json'} and {out / 'ablation.png'}")


@bench_app.command("reduce")
def reduce(
    keep: str = typer.Option("0.1,0.25,0.5,1.0", "--keep", help="Shares of visual tokens the drafter reads."),
    reducer: str = typer.Option(
        "covspec,pool,random,merge,elastic", "--reducer", help="Reducers to compare (comma-separated)."
    ),
    scenes: int = typer.Option(20, "--scenes", min=1, help="Held-out scenes."),
    reduce_target: bool = typer.Option(
        False, "--reduce-target", help="Also LOSSY rows where the target reads only the kept tokens (accuracy cost)."
    ),
    out: Path = typer.Option(Path("covspec-reduce"), "--out", help="Folder for reduce.json and reduce.png."),
    engine: DemoEngine = typer.Option(DemoEngine.ONNXRUNTIME, "--engine", help="Drafter engine."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
) -> None:
    """Each reducer at each budget on the demo pair: the drafter's prefill time, the visual tokens it reads, and the
    pair's AAL, beside the drafter reading every token; the output is the target's in every row."""
    from rich.console import Console
    from rich.progress import Progress

    from covspec.bench.reduction import plot_reduce_bench, run_reduce_bench
    from covspec.cpus import split_cpus
    from covspec.demo.runner import MAX_NEW_TOKENS, demo_items, load_drafter
    from covspec.models import load_model
    from covspec.models.loading import quiet_transformers
    from covspec.reduce import reducer_named

    try:
        budgets = sorted({float(k) for k in keep.split(",") if k.strip()})
        names = [r.strip() for r in reducer.split(",") if r.strip()]
        for name in names:
            reducer_named(name)
        if not budgets or not all(0 < b <= 1 for b in budgets):
            raise ValueError("--keep takes shares in (0, 1], comma-separated")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    with Progress(console=Console(stderr=True), transient=True) as progress:
        pair, bundle = _demo_pair(engine, progress)
        drafter = load_drafter(pair, bundle, len(split_cpus().device))
        with quiet_transformers():
            target = load_model(str(pair.target), dtype="float32")
        items = demo_items(pair, scenes, "all", MAX_NEW_TOKENS)
        result = run_reduce_bench(
            drafter,
            target,
            items,
            budgets=budgets,
            reducers=names,
            max_new_tokens=MAX_NEW_TOKENS,
            reduce_target=reduce_target,
            progress=progress,
        )
    result["engine"] = "onnxruntime-fp32" if bundle is not None else "torch-fp32"
    if _written(result, out, "reduce", plot_reduce_bench, as_json):
        print_reduce_rows(result["rows"], f"bench reduce: {result['scenes']} scenes, drafter {result['engine']}")


@bench_app.command("load")
def load(
    devices: str = typer.Option("1,2,4,8,16", "--devices", help="Device counts (comma-separated)."),
    link: str = typer.Option("loopback", "--link", callback=check_links, help="Link preset: one cell all share."),
    schedule: str = typer.Option(
        "fcfs", "--schedule", help="Schedules (comma-separated): the first is the batched row, the others extra rows."
    ),
    max_batch: int = typer.Option(32, "--max-batch", min=2, help="The edge's batch size in the batched modes."),
    batch_window_ms: float = typer.Option(0.0, "--batch-window-ms", min=0.0, help="The edge's batch window."),
    questions: int = typer.Option(4, "--questions", min=1, help="Generations per device in each run."),
    task: str = typer.Option("describe", "--task", help="The demo task every device asks."),
    out: Path = typer.Option(Path("covspec-load"), "--out", help="Folder for load.json and load.png."),
    engine: DemoEngine = typer.Option(DemoEngine.ONNXRUNTIME, "--engine", help="The real device's drafter engine."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
) -> None:
    """N devices against one edge on the demo pair: batched verification, one round at a time, and the target alone
    batched, side by side; device 0 runs the real drafter, the others replay its drafts (emulated, labelled)."""
    from rich.console import Console
    from rich.progress import Progress

    from covspec.bench.load import plot_load
    from covspec.demo.load import run_demo_load
    from covspec.demo.scenes import TASKS
    from covspec.runtime_edge.schedules import Schedule

    if task not in TASKS:
        raise typer.BadParameter(f"unknown task {task!r}; choose one of {', '.join(TASKS)}", param_hint="--task")
    try:
        counts = sorted({int(d) for d in devices.split(",") if d.strip()})
        schedules = [Schedule(s.strip()) for s in schedule.split(",") if s.strip()]
        if not counts or min(counts) < 1:
            raise ValueError("--devices takes counts >= 1, comma-separated")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    with Progress(console=Console(stderr=True), transient=True) as progress:
        pair, bundle = _demo_pair(engine, progress)
        result = run_demo_load(
            pair, bundle=bundle, devices=counts, link=link, schedules=schedules, max_batch=max_batch,
            questions=questions, task=task, window_s=batch_window_ms / 1000, progress=progress,
        )  # fmt: skip
    if _written(result, out, "load", plot_load, as_json):
        print_load_rows(result["rows"], f"bench load: {result['scenario']}; drafter {result['engine']}")


@bench_app.command("pareto")
def pareto(
    links: str = typer.Option(
        ",".join(_PARETO.links), "--links", help="Link presets (comma-separated): the first is the base point's."
    ),
    questions: int = typer.Option(_PARETO.questions, "--questions", min=1, help="Held-out questions per point."),
    power_profile: str = typer.Option(
        _PARETO.power_profile, "--power-profile", help="Device power profile of the energy estimate."
    ),
    radio: str = typer.Option(_PARETO.radio, "--radio", help="The device's radio: wifi, lte or 5g (energy per byte)."),
    quick: bool = typer.Option(_PARETO.quick, "--quick", help="Three points, one question: a smoke run."),
    out: Path = typer.Option(
        Path("covspec-pareto"), "--out", help="Folder for pareto.json, pareto.png and report.html."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the tables."),
) -> None:
    """Operating points of the demo pair side by side (verify mode, draft length and policy, keep ratio and reducer,
    lossy target reduction, drafter precision, link; one factor at a time around a base point, plus K x link) and
    the Pareto fronts of tokens/s, bytes per token, joules per token (estimated) and accuracy, with the point each
    objective (latency, energy, balanced) picks."""
    from rich.console import Console
    from rich.progress import Progress

    from covspec.bench.pareto import write_outputs
    from covspec.demo.pareto import run_demo_pareto
    from covspec.errors import ConfigError

    try:
        settings = ParetoSettings(
            links=tuple(name.strip() for name in links.split(",") if name.strip()),
            questions=questions,
            power_profile=power_profile,
            radio=radio,
            quick=quick,
        )
    except (ValueError, ConfigError) as exc:
        raise typer.BadParameter(str(exc)) from None
    with Progress(console=Console(stderr=True), transient=True) as progress:
        pair, bundle = _demo_pair(DemoEngine.ONNXRUNTIME, progress)
        result = run_demo_pareto(pair, bundle=bundle, settings=settings, progress=progress)
    paths = write_outputs(result, out)
    if as_json:
        typer.echo(json.dumps(result))
        return
    print_pareto_rows(result["points"], f"bench pareto: questions per point: {result['items']}; {result['design']}")
    for key, title in (("lossless", "lossless"), ("lossy_allowed", "lossy points allowed")):
        picks = ", ".join(f"{objective} -> {name}" for objective, name in result["picks"][key].items())
        typer.echo(f"picks ({title}): {picks}")
    typer.echo(f"joules per token are {result['energy']['label']}")
    typer.echo(f"wrote {paths['json']}, {paths['png']} and {paths['html']}")


def _written(result: dict, out: Path, name: str, plot: Callable[[dict, Path], None], as_json: bool) -> bool:
    """Write ``out/NAME.json`` and its plot; print the JSON instead of tables when asked. True: print the tables."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out / f"{name}.png")
    if as_json:
        typer.echo(json.dumps(result))
        return False
    typer.echo(f"wrote {out / f'{name}.json'} and {out / f'{name}.png'}")
    return True


def _demo_pair(engine: DemoEngine, progress: Any) -> tuple[Any, Path | None]:
    """The demo pair, and its device bundle when the drafter runs on ONNX Runtime (built on first use)."""
    from covspec.demo.store import ensure_bundle, ensure_pair

    pair = ensure_pair(progress=progress)
    return pair, ensure_bundle(pair, progress=progress) if engine is DemoEngine.ONNXRUNTIME else None
