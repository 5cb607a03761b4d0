"""AdamW with linear warm-up and cosine decay to 5%: the schedule every covspec training run uses."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any


def warmup_cosine(steps: int, warmup: int) -> Callable[[int], float]:
    """The learning-rate factor at a step: linear warm-up over ``warmup`` steps, then cosine decay to 0.05."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def adamw_with_schedule(
    named_parameters: Iterable[tuple[str, Any]], *, lr: float, weight_decay: float, steps: int, warmup: int
) -> tuple[Any, Any]:
    """(AdamW, its LambdaLR scheduler). Matrices decay, embeddings, norms and biases do not; β = (0.9, 0.98)."""
    import torch

    named = list(named_parameters)
    decay = [p for n, p in named if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in named if not (p.ndim >= 2 and "embed" not in n)]
    on_cuda = any(p.is_cuda for _, p in named)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
        **({"fused": True} if on_cuda else {}),  # one kernel per step instead of one per tensor group
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, warmup))


__all__ = ["adamw_with_schedule", "warmup_cosine"]
