"""Synthetic scenes for the demo pair: shapes on a plain background, with questions only an image can answer.

A scene is a 64x64 RGB picture cut into a 4x4 grid of 16-pixel cells. It holds one to four objects, each a circle,
square or triangle, red, green, blue or yellow, small or large, drawn inside one cell; no two objects share a column
(so "left of" is always defined) and no two share both colour and shape (so "the red circle" names one object).

Questions (``qa_items``), by task:

- ``colour``: "What colour is the circle?" -> "red" (asked only when the phrase names exactly one object)
- ``shape``: "What shape is the blue object?" -> "square"
- ``size``: "What size is the red circle?" -> "small" | "large"
- ``count``: "How many triangles are there?" / "How many green shapes are there?" / "How many shapes are there?"
  -> "zero" .. "four"
- ``left`` / ``right``: "What is left of the red circle?" -> the nearest object on that side, "a blue square", or
  "nothing"
- ``describe``: "Describe the image." / "What is in the image?" -> every object, left to right, with its size:
  "a large red circle and a small green triangle."

Everything is deterministic from a seed. ``dataset(split, n, seed)`` draws scene ``i`` from the seed
``SPLIT_OFFSETS[split] + seed * SEED_STRIDE + i``: training scenes come from [0, 2**40), held-out scenes from
[2**40, 2**41), so the two splits never share a scene while ``seed < 2**16`` and ``n <= 2**24``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SIZE = 64
GRID = 4
CELL = IMAGE_SIZE // GRID
MAX_OBJECTS = 4

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 220),
    "yellow": (225, 195, 30),
}
SIZES: dict[str, tuple[int, int]] = {"small": (4, 4), "large": (6, 7)}  # half-extent range in pixels
NUMBERS: tuple[str, ...] = ("zero", "one", "two", "three", "four")
TASKS: tuple[str, ...] = ("colour", "shape", "size", "count", "left", "right", "describe")
DESCRIBE_QUESTIONS: tuple[str, ...] = ("Describe the image.", "What is in the image?")

SPLITS: tuple[str, ...] = ("train", "heldout")
SEED_STRIDE = 1 << 24  # scenes per (split, seed); seed 0's scenes are those of a stride of 2**20
SPLIT_OFFSETS: dict[str, int] = {"train": 0, "heldout": 1 << 40}
MAX_SEED = (1 << 40) // SEED_STRIDE

_BACKGROUND = (236, 236, 232)


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    column: int  # 0 (left) .. GRID - 1
    row: int  # 0 (top) .. GRID - 1
    centre: tuple[int, int]  # pixel (x, y)
    half: int  # half-extent in pixels

    @property
    def name(self) -> str:
        """``"red circle"``: unique within a scene."""
        return f"{self.colour} {self.shape}"

    @property
    def phrase(self) -> str:
        """``"a large red circle"``, as captions say it."""
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    seed: int
    objects: tuple[SceneObject, ...]  # sorted left to right
    image: Any = field(compare=False, repr=False)  # PIL.Image.Image, RGB, IMAGE_SIZE x IMAGE_SIZE


@dataclass(frozen=True)
class QAItem:
    scene: Scene
    task: str  # one of TASKS
    question: str
    answer: str


def make_scene(rng_or_seed: np.random.Generator | int, max_objects: int = MAX_OBJECTS) -> Scene:
    """One scene of 1..``max_objects`` objects from a seed (recorded in ``Scene.seed``) or from a generator
    (``seed`` is then -1)."""
    if not 1 <= max_objects <= MAX_OBJECTS:
        raise ValueError(f"max_objects must lie in [1, {MAX_OBJECTS}]")
    if isinstance(rng_or_seed, np.random.Generator):
        rng, seed = rng_or_seed, -1
    else:
        seed = int(rng_or_seed)
        rng = np.random.default_rng(seed)
    count = int(rng.integers(1, max_objects + 1))
    columns = sorted(int(c) for c in rng.choice(GRID, size=count, replace=False))
    kinds = rng.choice(len(SHAPES) * len(COLOURS), size=count, replace=False)
    colour_names = list(COLOURS)
    objects = []
    for column, kind in zip(columns, kinds, strict=True):
        shape = SHAPES[int(kind) % len(SHAPES)]
        colour = colour_names[int(kind) // len(SHAPES)]
        size = "small" if rng.random() < 0.5 else "large"
        lo, hi = SIZES[size]
        half = int(rng.integers(lo, hi + 1))
        row = int(rng.integers(0, GRID))
        slack = CELL // 2 - half - 1  # keep the object inside its cell
        dx, dy = (int(v) for v in rng.integers(-slack, slack + 1, size=2))
        centre = (column * CELL + CELL // 2 + dx, row * CELL + CELL // 2 + dy)
        objects.append(SceneObject(shape, colour, size, column, row, centre, half))
    image = _render(objects, rng)
    return Scene(seed=seed, objects=tuple(objects), image=image)


def _render(objects: list[SceneObject], rng: np.random.Generator) -> Any:
    from PIL import Image, ImageDraw

    tint = rng.integers(-8, 9, size=3)
    background = tuple(int(np.clip(c + t, 0, 255)) for c, t in zip(_BACKGROUND, tint, strict=True))
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        jitter = rng.integers(-18, 19, size=3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[obj.colour], jitter, strict=True))
        x, y, h = obj.centre[0], obj.centre[1], obj.half
        if obj.shape == "circle":
            draw.ellipse((x - h, y - h, x + h, y + h), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x - h, y - h, x + h, y + h), fill=fill)
        else:
            draw.polygon([(x, y - h), (x - h, y + h), (x + h, y + h)], fill=fill)
    return image


def caption(scene: Scene) -> str:
    """Every object left to right: "a large red circle, a small blue square and a small green triangle."."""
    phrases = [obj.phrase for obj in scene.objects]
    if len(phrases) == 1:
        return phrases[0] + "."
    return ", ".join(phrases[:-1]) + " and " + phrases[-1] + "."


def qa_items(scene: Scene) -> list[QAItem]:
    """Every question this scene supports, in a fixed order (task by task, as listed in ``TASKS``)."""
    objs = scene.objects
    items: list[tuple[str, str, str]] = []

    def add(task: str, question: str, answer: str) -> None:
        items.append((task, question, answer))

    for obj in objs:  # colour of an object named by its shape, or by size and shape
        if sum(o.shape == obj.shape for o in objs) == 1:
            add("colour", f"What colour is the {obj.shape}?", obj.colour)
        elif sum(o.shape == obj.shape and o.size == obj.size for o in objs) == 1:
            add("colour", f"What colour is the {obj.size} {obj.shape}?", obj.colour)
    for obj in objs:
        if sum(o.colour == obj.colour for o in objs) == 1:
            add("shape", f"What shape is the {obj.colour} object?", obj.shape)
    for obj in objs:
        add("size", f"What size is the {obj.name}?", obj.size)
    for shape in SHAPES:
        add("count", f"How many {shape}s are there?", NUMBERS[sum(o.shape == shape for o in objs)])
    for colour in COLOURS:
        add("count", f"How many {colour} shapes are there?", NUMBERS[sum(o.colour == colour for o in objs)])
    add("count", "How many shapes are there?", NUMBERS[len(objs)])
    for i, obj in enumerate(objs):  # objs are sorted left to right, one per column
        add("left", f"What is left of the {obj.name}?", f"a {objs[i - 1].name}" if i > 0 else "nothing")
    for i, obj in enumerate(objs):
        add("right", f"What is right of the {obj.name}?", f"a {objs[i + 1].name}" if i + 1 < len(objs) else "nothing")
    for question in DESCRIBE_QUESTIONS:
        add("describe", question, caption(scene))
    return [QAItem(scene, task, q, a) for task, q, a in items]


def scene_seed(split: str, index: int, seed: int = 0) -> int:
    """The seed of scene ``index`` of ``split`` (see the module docstring for the ranges)."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if not 0 <= seed < MAX_SEED or not 0 <= index < SEED_STRIDE:
        raise ValueError(f"seed must lie in [0, {MAX_SEED}) and index in [0, {SEED_STRIDE})")
    return SPLIT_OFFSETS[split] + seed * SEED_STRIDE + index


def check_task_weights(tasks: tuple[str, ...], weights: tuple[float, ...]) -> None:
    """``weights`` is empty (uniform) or one positive number per entry of ``tasks``."""
    if weights and (len(weights) != len(tasks) or min(weights) <= 0):
        raise ValueError(f"weights must be {len(tasks)} positive numbers, one per task of {tasks}, got {weights}")


def item_for(
    scene: Scene,
    rng: np.random.Generator,
    tasks: tuple[str, ...] = TASKS,
    weights: tuple[float, ...] = (),
) -> QAItem:
    """One question of ``scene``: a task drawn from those of ``tasks`` it supports (``count`` and ``describe`` always
    apply), uniformly or in proportion to ``weights`` (one per entry of ``tasks``), then a question of that task."""
    unknown = set(tasks) - set(TASKS)
    if unknown or not tasks:
        raise ValueError(f"unknown tasks {sorted(unknown)}; choose from {', '.join(TASKS)}")
    check_task_weights(tasks, weights)
    items = qa_items(scene)
    supported = sorted({it.task for it in items if it.task in tasks}, key=TASKS.index)
    if not supported:  # e.g. only "colour" asked of a scene where every shape repeats in the same size
        supported = [t for t in ("count", "describe") if t in tasks] or ["count"]
    if weights and set(supported) <= set(tasks):
        share = np.array([weights[tasks.index(t)] for t in supported], dtype=np.float64)
        pick = int(np.searchsorted(np.cumsum(share / share.sum()), rng.random(), side="right"))
        task = supported[min(pick, len(supported) - 1)]  # a cumsum ending at 1 - eps must not run past the end
    else:
        task = supported[int(rng.integers(len(supported)))]
    of_task = [it for it in items if it.task == task]
    return of_task[int(rng.integers(len(of_task)))]


def dataset(
    split: str,
    n: int,
    seed: int = 0,
    start: int = 0,
    tasks: tuple[str, ...] = TASKS,
    max_objects: int = MAX_OBJECTS,
    weights: tuple[float, ...] = (),
) -> list[QAItem]:
    """``n`` questions of ``split``, one per scene, scenes ``start .. start + n - 1`` (deterministic), drawn from
    ``tasks`` (all by default; ``weights``: how often each, see ``item_for``) about scenes of at most ``max_objects``
    objects."""
    out = []
    for index in range(start, start + n):
        s = scene_seed(split, index, seed)
        scene = make_scene(s, max_objects)
        out.append(item_for(scene, np.random.default_rng([s, 1]), tasks, weights))
    return out


def write_examples(items: list[QAItem], out: Path) -> tuple[Path, Path]:
    """The items as ``covspec distill`` reads them: ``out/images/<seed>.png`` (one per scene) and
    ``out/prompts.jsonl`` (a line per question, naming its image). Returns (images folder, prompts file)."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for item in items:
        name = f"{item.scene.seed}.png"
        if not (images / name).is_file():
            item.scene.image.save(images / name)
        lines.append(json.dumps({"image": name, "prompt": item.question}))
    prompts = out / "prompts.jsonl"
    prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return images, prompts


def majority_baseline(items: list[QAItem], reference: list[QAItem] | None = None) -> float:
    """Exact-match accuracy on ``items`` of a blind guesser: it gives each question the answer most frequent for that
    question in ``reference`` (default: ``items`` themselves, an optimistic bound), never looking at the picture."""
    by_question: dict[str, Counter[str]] = {}
    for it in items if reference is None else reference:
        by_question.setdefault(it.question, Counter())[it.answer] += 1
    guesses = {q: counts.most_common(1)[0][0] for q, counts in by_question.items()}
    hits = sum(guesses.get(it.question) == it.answer for it in items)
    return hits / len(items) if items else 0.0


__all__ = [
    "COLOURS",
    "DESCRIBE_QUESTIONS",
    "IMAGE_SIZE",
    "NUMBERS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "SPLIT_OFFSETS",
    "SEED_STRIDE",
    "MAX_SEED",
    "TASKS",
    "check_task_weights",
    "QAItem",
    "Scene",
    "SceneObject",
    "caption",
    "dataset",
    "item_for",
    "majority_baseline",
    "make_scene",
    "write_examples",
    "qa_items",
]
