"""`covspec distill`: a drafter for a target, by online logit distillation on the target's own answers."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from covspec.distill import DistillConfig

_D = DistillConfig()


def distill(
    target: str = typer.Option(..., "--target", help="The target checkpoint (folder or Hub id)."),
    images: Path = typer.Option(..., "--images", help="A folder of training images."),
    out: Path = typer.Option(..., "--out", help="Where the drafter checkpoint goes (resumes a stopped run there)."),
    drafter: str | None = typer.Option(None, "--drafter", help="Start from this drafter checkpoint."),
    drafter_arch: str | None = typer.Option(
        None,
        "--drafter-arch",
        help="Start from the target's config with these fields overridden, e.g. "
        "'text.num_hidden_layers=1,text.hidden_size=64,vision.image_size=96,vision.patch_size=8'.",
    ),
    prompts: Path | None = typer.Option(
        None,
        "--prompts",
        help='JSON lines {"image": NAME, "prompt": TEXT}, or one prompt per line for every image '
        "(default: a few generic caption and question prompts per image).",
    ),
    steps: int = typer.Option(_D.steps, "--steps", min=1),
    batch_size: int = typer.Option(_D.batch_size, "--batch-size", min=1),
    lr: float = typer.Option(_D.lr, "--lr"),
    warmup: int = typer.Option(_D.warmup, "--warmup", min=0),
    temperature: float = typer.Option(_D.temperature, "--temperature", help="Distillation temperature."),
    label_weight: float = typer.Option(
        _D.label_weight, "--label-weight", help="Weight of the cross-entropy on the target's answer beside the KL."
    ),
    max_new_tokens: int = typer.Option(_D.max_new_tokens, "--max-new-tokens", min=1),
    eval_examples: int = typer.Option(
        _D.eval_examples, "--eval", min=0, help="Held-out examples the AAL is measured on."
    ),
    draft_len: int = typer.Option(_D.draft_len, "--k", min=1, help="Draft length K of the AAL measurement."),
    seed: int = typer.Option(_D.seed, "--seed"),
    checkpoint_every: int = typer.Option(_D.checkpoint_every, "--checkpoint-every", min=1),
    threads: int | None = typer.Option(_D.threads, "--threads", min=1, help="Torch threads."),
    device: str = typer.Option(_D.device, "--device", help="Torch device to train on (cpu, cuda)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Distil a drafter for --target (shared tokenizer) and report its AAL against it before and after."""
    from rich.console import Console

    from covspec.distill import distill as run_distill
    from covspec.distill import load_examples
    from covspec.distill.train import training_progress
    from covspec.errors import CovspecError

    console = Console(stderr=True)
    try:
        config = DistillConfig(
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            warmup=warmup,
            weight_decay=_D.weight_decay,
            temperature=temperature,
            label_weight=label_weight,
            max_new_tokens=max_new_tokens,
            eval_examples=eval_examples,
            draft_len=draft_len,
            seed=seed,
            checkpoint_every=checkpoint_every,
            threads=threads,
            device=device,
        )
        examples = load_examples(images, prompts)
        with training_progress(console=console, transient=True) as progress:
            report = run_distill(
                target, out, examples, drafter=drafter, arch=drafter_arch, config=config, progress=progress
            )
    except (CovspecError, ValueError) as exc:
        typer.echo(f"covspec distill: error [{getattr(exc, 'code', 'bad_config')}]: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
        return
    before, after = report.before, report.after
    typer.echo(f"drafter: {report.out}")
    typer.echo(
        f"AAL (greedy, K={after['k']}, {report.eval_examples} held-out examples): "
        f"{before['aal']:.2f} before -> {after['aal']:.2f} after; "
        f"acceptance {before['acceptance_rate']:.3f} -> {after['acceptance_rate']:.3f}"
    )
