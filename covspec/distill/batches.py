"""One forward over several (prompt, answer) rows of any family: the processor's own prompt inputs, the answer
appended, rows padded on the right; families whose image tensors do not stack run row by row."""

from __future__ import annotations

from typing import Any

# per-token inputs that grow with the answer, and what the answer's positions hold in each
SEQUENCE_FILL = {"input_ids": None, "attention_mask": 1, "token_type_ids": 0, "mm_token_type_ids": 0}


def answer_logits(hf_model: Any, prompts: list[dict[str, Any]], answers: list[list[int]], pad_id: int) -> Any:
    """[positions, vocab]: the logits that predict each answer token, rows in order, answer tokens in order.

    ``prompts``: each row's processor output (batch of one, on the model's device); ``answers``: the token ids that
    follow each prompt.
    """
    import torch

    try:
        inputs, rows = _stacked(prompts, answers, pad_id)
    except ValueError:  # image tensors of different shapes (tiles, grids): one row at a time
        return torch.cat([answer_logits(hf_model, [p], [a], pad_id) for p, a in zip(prompts, answers, strict=True)])
    logits = hf_model(**inputs).logits
    return torch.cat([logits[b, index] for b, index in enumerate(rows)])


def _stacked(prompts: list[dict[str, Any]], answers: list[list[int]], pad_id: int) -> tuple[dict[str, Any], list[Any]]:
    """The rows as one batch, and per row the positions whose logits predict its answer."""
    import torch

    lengths = [int(p["input_ids"].shape[1]) for p in prompts]
    total = max(n + len(a) for n, a in zip(lengths, answers, strict=True))
    batch: dict[str, Any] = {}
    for key in prompts[0]:
        values = [p[key] for p in prompts]
        if key in SEQUENCE_FILL:
            batch[key] = torch.stack(
                [_grown(v[0], a, SEQUENCE_FILL[key], total, pad_id) for v, a in zip(values, answers, strict=True)]
            )
        elif isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape[1:]) for v in values}
            if len(shapes) > 1:
                raise ValueError(f"{key}: shapes {sorted(shapes)} do not stack")
            batch[key] = torch.cat(values)
        else:
            raise ValueError(f"{key}: not a tensor")
    rows = [torch.arange(n - 1, n - 1 + len(a)) for n, a in zip(lengths, answers, strict=True)]
    return batch, rows


def _grown(row: Any, answer: list[int], fill: int | None, total: int, pad_id: int) -> Any:
    """One row of a per-token input with the answer's entries appended (the ids themselves, or ``fill``), then
    right padding (``pad_id`` for ids, 0 otherwise) up to ``total``."""
    import torch

    added = torch.tensor(answer if fill is None else [fill] * len(answer), dtype=row.dtype, device=row.device)
    grown = torch.cat([row, added])
    padding = torch.full((total - len(grown),), pad_id if fill is None else 0, dtype=row.dtype, device=row.device)
    return torch.cat([grown, padding])


__all__ = ["SEQUENCE_FILL", "answer_logits"]
