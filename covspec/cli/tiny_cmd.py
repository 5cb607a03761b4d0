"""`covspec tiny`: small random-weight checkpoints of a real family, built offline."""

from __future__ import annotations

import enum
from pathlib import Path

import typer

from covspec.models.tiny import TINY_ARCHS

# the families with a tiny checkpoint, from the registry
Arch = enum.Enum("Arch", {name: name for name in TINY_ARCHS}, type=str)  # type: ignore[misc]


class Size(str, enum.Enum):
    target = "target"
    drafter = "drafter"


def tiny(
    arch: Arch = typer.Option(..., "--arch", help="Model family."),  # type: ignore[valid-type]
    size: Size = typer.Option(
        ..., "--size", help="target or drafter (a target and a drafter of one seed share the tokenizer)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder to write the checkpoint to."),
    seed: int = typer.Option(0, "--seed", help="Weight seed."),
) -> None:
    """Write a tiny checkpoint (model, processor, tokenizer, chat template) loadable with from_pretrained."""
    from covspec.models import build_tiny

    path = build_tiny(arch.value, size.value, out, seed=seed)
    typer.echo(str(path))
