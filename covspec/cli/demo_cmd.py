"""`covspec demo` and `covspec demo-train`: the embedded default pair, trained on first use, and the showcase."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from covspec.cli.options import DemoEngine, check_links


def demo_train(
    out: Path | None = typer.Option(None, "--out", help="Train into this folder (default: the user cache)."),
    seed: int = typer.Option(0, "--seed"),
    evaluate: bool = typer.Option(False, "--evaluate", help="Score the pair on the held-out split."),
    heldout: int = typer.Option(300, "--heldout", min=1, help="Held-out questions to score with --evaluate."),
    reduced: bool = typer.Option(False, "--reduced", help="The seconds-long reduced recipe (tests, smoke runs)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Train the demo target/drafter pair (LLaVA family) on the synthetic scenes; --evaluate prints its quality."""
    from rich.console import Console
    from rich.progress import Progress

    from covspec.demo.evaluate import evaluate_pair
    from covspec.demo.store import ensure_pair
    from covspec.demo.train import PairPaths, TrainConfig, train_pair

    config = TrainConfig.reduced() if reduced else TrainConfig()
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        if out is not None:
            paths = PairPaths(out) if PairPaths(out).exists() else train_pair(out, config, seed, progress=progress)
        else:
            paths = ensure_pair(config=config, seed=seed, progress=progress)
        report = evaluate_pair(paths, heldout, progress=progress) if evaluate else None
    if as_json:
        typer.echo(json.dumps({"pair": str(paths.root), "evaluation": report}))
        return
    typer.echo(f"demo pair: {paths.root}")
    if report is not None:
        _print_evaluation(report)


def _print_evaluation(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"held-out evaluation ({report['n_questions']} questions)", show_header=False)
    table.add_row("target accuracy (greedy, exact)", f"{report['target_accuracy']:.1%}")
    table.add_row("drafter accuracy alone", f"{report['drafter_accuracy']:.1%}")
    table.add_row("majority-answer baseline", f"{report['majority_baseline']:.1%}")
    table.add_row("AAL (greedy, K=4, compact)", f"{report['aal']:.2f}")
    table.add_row("acceptance rate", f"{report['acceptance_rate']:.3f}")
    table.add_row("speculative output identical to target", f"{report['identical_to_target']:.1%}")
    Console().print(table)


def demo(
    scenes: int = typer.Option(20, "--scenes", min=1, help="Held-out scenes to run."),
    link: str = typer.Option(
        "loopback", "--link", callback=check_links, help="Emulated link preset (covspec link's, docs/links.md)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (DESIGN.md §7)."),
    reduced: bool = typer.Option(False, "--reduced", help="Use the reduced recipe's pair (tests, smoke runs)."),
    engine: DemoEngine = typer.Option(DemoEngine.ONNXRUNTIME, "--engine", help="Drafter engine."),
) -> None:
    """Serve the demo target, run the device runtime on held-out scenes in each mode, print one table."""
    from rich.console import Console
    from rich.progress import Progress

    from covspec.demo.runner import run_demo
    from covspec.demo.store import ensure_bundle, ensure_pair
    from covspec.demo.train import TrainConfig

    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        pair = ensure_pair(config=TrainConfig.reduced() if reduced else TrainConfig(), progress=progress)
        bundle = ensure_bundle(pair, progress=progress) if engine is DemoEngine.ONNXRUNTIME else None
        result = run_demo(pair, bundle=bundle, n_scenes=scenes, link=link, progress=progress)
    if as_json:
        typer.echo(json.dumps(result))
        return
    _print_rows(result)


def _print_rows(result: dict) -> None:
    from rich.console import Console

    from covspec.cli.tables import print_rows

    title = f"covspec demo: {result['scenes']} held-out scenes, link {result['link']}, drafter {result['engine']}"
    print_rows(result["rows"], title)
    console = Console(width=max(Console().width, 100))
    console.print(_cpus_line(result), style="dim")
    console.print("same = output identical to the target's own generate(); " + result["note"], style="dim")


def _cpus_line(result: dict) -> str:
    """Where each side ran (DESIGN.md §10): disjoint CPU sets, or one CPU shared, which the timings then reflect."""
    from covspec.cpus import describe

    pool = "onnxruntime" if result["engine"].startswith("onnxruntime") else "torch"
    edge = describe("edge", result["edge_threads"], result["edge_cpus"])
    device = describe("device", result["device_threads"], result["device_cpus"], pool=pool)
    how = "shared: one CPU usable, so each side's time includes the other's" if result["cpus_shared"] else "disjoint"
    return f"{edge}; {device} ({how})"
