"""Qwen2-VL multimodal rotary positions (M-RoPE) in numpy, so a device computes them without torch.

Text tokens get the same position in all three rows (temporal, height, width), counting on from the previous
segment; each run of image (or video) tokens takes the next grid and gets ``(t, h, w)`` grid coordinates offset by
the running position; the running position then advances by ``max(h, w) / merge``. After the prompt, a token at
sequence position ``p`` has position ``p + delta`` in all three rows, with ``delta = max position + 1 - length``.
This mirrors ``Qwen2VLModel.get_rope_index`` (checked against it in tests).
"""

from __future__ import annotations

import numpy as np

TEXT, IMAGE, VIDEO = 0, 1, 2


def token_types(input_ids: np.ndarray, image_token_id: int, video_token_id: int | None = None) -> np.ndarray:
    """0 text, 1 image, 2 video for every id of ``input_ids`` [L]."""
    types = np.zeros(input_ids.shape, dtype=np.int64)
    types[input_ids == image_token_id] = IMAGE
    if video_token_id is not None:
        types[input_ids == video_token_id] = VIDEO
    return types


def _runs(types: np.ndarray) -> list[tuple[int, int, int]]:
    """(type, start, end) of every maximal run of equal values."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    for i in range(1, len(types) + 1):
        if i == len(types) or types[i] != types[start]:
            runs.append((int(types[start]), start, i))
            start = i
    return runs


def rope_index(
    types: np.ndarray,
    spatial_merge_size: int,
    image_grid_thw: np.ndarray | None = None,
    video_grid_thw: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """M-RoPE positions [3, L] (int64) of one prompt with token ``types`` [L], and its delta."""
    grids = {
        IMAGE: iter(np.asarray(image_grid_thw).reshape(-1, 3).tolist()) if image_grid_thw is not None else iter(()),
        VIDEO: iter(np.asarray(video_grid_thw).reshape(-1, 3).tolist()) if video_grid_thw is not None else iter(()),
    }
    pieces: list[np.ndarray] = []
    current = 0
    for kind, start, end in _runs(np.asarray(types)):
        if kind == TEXT:
            length = end - start
            pieces.append(np.broadcast_to(np.arange(length, dtype=np.int64) + current, (3, length)))
            current += length
            continue
        try:
            t, h, w = (int(v) for v in next(grids[kind]))
        except StopIteration:
            raise ValueError("more image/video placeholder runs than grids") from None
        gh, gw = h // spatial_merge_size, w // spatial_merge_size
        tt, hh, ww = np.meshgrid(np.arange(t), np.arange(gh), np.arange(gw), indexing="ij")
        block = np.stack([tt.ravel(), hh.ravel(), ww.ravel()]).astype(np.int64) + current
        if block.shape[1] != end - start:
            raise ValueError(f"grid {t}x{h}x{w} gives {block.shape[1]} positions for {end - start} placeholder tokens")
        pieces.append(block)
        current += max(gh, gw)
    if not pieces:
        return np.zeros((3, 0), dtype=np.int64), 0
    positions = np.concatenate(pieces, axis=1)
    delta = int(positions.max()) + 1 - positions.shape[1]
    return positions, delta


def prompt_position_ids(
    input_ids: np.ndarray,
    *,
    image_token_id: int,
    video_token_id: int | None,
    spatial_merge_size: int,
    image_grid_thw: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Decoder ``position_ids`` [4, 1, L] of a prompt (row 0 plain positions, rows 1-3 M-RoPE) and its delta."""
    ids = np.asarray(input_ids).reshape(-1)
    length = ids.shape[0]
    text = np.arange(length, dtype=np.int64)
    if image_grid_thw is None:
        mrope, delta = np.broadcast_to(text, (3, length)), 0
    else:
        types = token_types(ids, image_token_id, video_token_id)
        mrope, delta = rope_index(types, spatial_merge_size, image_grid_thw)
    return np.concatenate([text[None], mrope], axis=0)[:, None, :].astype(np.int64), delta


def extend_position_ids(start: int, count: int, delta: int) -> np.ndarray:
    """Decoder ``position_ids`` [4, 1, count] of tokens appended at sequence position ``start``."""
    text = np.arange(start, start + count, dtype=np.int64)
    rows = np.concatenate([text[None], np.broadcast_to(text + delta, (3, count))], axis=0)
    return rows[:, None, :].astype(np.int64)


__all__ = ["extend_position_ids", "prompt_position_ids", "rope_index", "token_types"]
