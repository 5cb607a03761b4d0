"""One forward for several sequences of one model: how an edge verifies many sessions' rounds at once.

Each sequence keeps its own ``DynamicCache`` (sessions come and go, roll back by different amounts, and a paged or
static cache would need attention kernels transformers' CPU path does not have). A batched forward gathers the
caches into one, each row right-aligned behind left padding, feeds every row's new tokens right-padded with its own
positions (M-RoPE rows included), masks both paddings, and appends each row's new keys and values to its own cache.
The relative distance between any two real positions is the same as in the row's own cache, so index-based masks
(causal, sliding window) see what they would alone. Gathering copies the cached keys and values once per forward, as
``DynamicCache.update``'s concatenation already does for one sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch


def plain_cache(cache: Any) -> bool:
    """Whether every layer of ``cache`` is a filled full-attention ``DynamicLayer`` (what ``gather_caches`` stacks);
    hybrid caches (convolution or recurrent states) are extended one sequence at a time."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers)


def gather_caches(caches: Sequence[Any]) -> tuple[Any, int, list[int]]:
    """One ``DynamicCache`` holding every cache of ``caches`` as a row, right-aligned: (cache, its length, each row's
    own length)."""
    from torch.nn.utils.rnn import pad_sequence
    from transformers import DynamicCache

    lengths = [int(cache.get_seq_length()) for cache in caches]
    layers = []
    for index in range(len(caches[0].layers)):
        stacked = []
        for part in ("keys", "values"):
            rows = [getattr(cache.layers[index], part)[0].transpose(0, 1) for cache in caches]  # [L_b, heads, dim]
            padded = pad_sequence(rows, batch_first=True, padding_side="left")  # [rows, width, heads, dim]
            stacked.append(padded.transpose(1, 2))
        layers.append((stacked[0], stacked[1]))
    return DynamicCache(ddp_cache_data=layers), max(lengths), lengths


def padding_mask(lengths: Sequence[int], width: int, new_counts: Sequence[int], new_width: int) -> torch.Tensor:
    """[rows, width + new_width] 1 where a key is real: the last ``lengths[b]`` cached positions and the first
    ``new_counts[b]`` new ones."""
    import torch

    mask = torch.zeros((len(lengths), width + new_width), dtype=torch.long)
    for row, (length, count) in enumerate(zip(lengths, new_counts, strict=True)):
        mask[row, width - length : width + count] = 1
    return mask


def append_new_entries(caches: Sequence[Any], batched: Any, width: int, new_counts: Sequence[int]) -> None:
    """Append each row's real new keys and values (the forward wrote them behind ``width``) to its own cache."""
    for index, layer in enumerate(batched.layers):
        for row, (cache, count) in enumerate(zip(caches, new_counts, strict=True)):
            keys = layer.keys[row : row + 1, :, width : width + count]
            values = layer.values[row : row + 1, :, width : width + count]
            cache.layers[index].update(keys.clone(), values.clone())
