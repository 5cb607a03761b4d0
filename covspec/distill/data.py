"""What the drafter is distilled on: (image, prompt) examples read from a folder and a prompts file."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from covspec.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Used when no prompts file is given: each image is asked every one of these (captions and generic questions).
DEFAULT_PROMPTS = (
    "Describe the image.",
    "What is in the picture?",
    "What colour is the main object?",
    "How many objects are there?",
    "What is on the left?",
    "What shape do you see?",
)


@dataclass(frozen=True)
class Example:
    image: Path
    prompt: str

    def load_image(self) -> Any:
        from PIL import Image

        with Image.open(self.image) as image:
            return image.convert("RGB")


def load_examples(images: Path, prompts: Path | None = None) -> list[Example]:
    """The examples of ``images`` (a folder) and ``prompts``.

    ``prompts`` is a JSON-lines file of ``{"image": NAME, "prompt": TEXT}`` (a prompt per named image of the folder),
    or a text file with one prompt per line, asked of every image; None asks every image the ``DEFAULT_PROMPTS``.
    """
    folder = Path(images)
    if not folder.is_dir():
        raise ConfigError(f"--images {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"--images {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    if prompts is None:
        return [Example(f, p) for f in files for p in DEFAULT_PROMPTS]
    path = Path(prompts)
    if not path.is_file():
        raise ConfigError(f"--prompts {path}: no such file")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        return [_named_example(folder, line, path, n) for n, line in enumerate(lines, 1)]
    return [Example(f, p.strip()) for f in files for p in lines]


def _named_example(folder: Path, line: str, path: Path, number: int) -> Example:
    try:
        row = json.loads(line)
        name, prompt = str(row["image"]), str(row["prompt"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f'{path}:{number}: expected {{"image": NAME, "prompt": TEXT}}') from None
    image = folder / name
    if not image.is_file():
        raise ConfigError(f"{path}:{number}: image {name!r} is not in {folder}")
    return Example(image, prompt)


def split_examples(examples: list[Example], held_out: int, seed: int) -> tuple[list[Example], list[Example]]:
    """(training, held-out): ``held_out`` examples drawn by ``seed`` whose images the training part never shows."""
    if held_out <= 0:
        return list(examples), []
    per_image = Counter(e.image for e in examples)
    images = sorted(per_image)
    order = np.random.default_rng(seed).permutation(len(images))
    chosen: set[Path] = set()
    count = 0
    for i in order:
        if count >= held_out:
            break
        chosen.add(images[i])
        count += per_image[images[i]]
    train = [e for e in examples if e.image not in chosen]
    evaluation = [e for e in examples if e.image in chosen][:held_out]
    if not train:
        raise ConfigError(f"{len(examples)} examples leave none to train on after {held_out} held out")
    return train, evaluation


__all__ = ["DEFAULT_PROMPTS", "IMAGE_SUFFIXES", "Example", "load_examples", "split_examples"]
