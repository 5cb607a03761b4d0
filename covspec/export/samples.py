"""Deterministic sample images and prompts for export (example inputs) and validation."""

from __future__ import annotations

from typing import Any

import numpy as np

SAMPLE_PROMPTS = (
    "Describe the image.",
    "What colours and shapes do you see?",
    "How many objects are in the picture?",
)
_SIZES = ((48, 48), (56, 40), (40, 64))  # (width, height): different aspect ratios exercise dynamic resolution


def sample_images(n: int, seed: int = 0) -> list[Any]:
    """``n`` small PIL images of coloured shapes on a coloured background (deterministic in ``seed``)."""
    from PIL import Image, ImageDraw

    images = []
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        width, height = _SIZES[i % len(_SIZES)]
        image = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 5))):
            x0, x1 = sorted(int(v) for v in rng.integers(0, width, 2))
            y0, y1 = sorted(int(v) for v in rng.integers(0, height, 2))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1 + 2, y1 + 2), fill=colour)
        images.append(image)
    return images


__all__ = ["SAMPLE_PROMPTS", "sample_images"]
