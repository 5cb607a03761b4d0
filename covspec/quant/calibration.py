"""Calibration data for static int8: the very inputs the fp32 engine feeds each graph, recorded while it prefills
and decodes over calibration images and prompts.

Recording engine feeds (rather than synthesising tensors) gives each graph the activation ranges it meets in use:
real pixel batches for the vision encoder, real prompt embeddings and KV caches of real lengths for the decoder,
both its prefill and its one-token decode shapes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
DEFAULT_PROMPT = "Describe the image."
PROMPTS_FILE = "prompts.txt"  # optional, in the calibration folder: one prompt per line, cycled over the images


@dataclass(frozen=True)
class CalibrationSample:
    """One prompt, with its image (None for a text-only drafter)."""

    image: Any | None
    prompt: str


def samples_from_folder(folder: Path | str, limit: int | None = None) -> list[CalibrationSample]:
    """The images of ``folder`` (sorted by name), each with a prompt from ``folder/prompts.txt`` (cycled) or
    the default ``"Describe the image."``."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in calibration folder {folder}")
    prompts_file = folder / PROMPTS_FILE
    prompts = (
        [line.strip() for line in prompts_file.read_text().splitlines() if line.strip()]
        if prompts_file.exists()
        else []
    )
    prompts = prompts or [DEFAULT_PROMPT]
    files = files[:limit] if limit is not None else files
    samples = []
    for i, path in enumerate(files):
        with Image.open(path) as image:
            samples.append(CalibrationSample(image.convert("RGB"), prompts[i % len(prompts)]))
    return samples


@dataclass(frozen=True)
class Calibration:
    """What static int8 calibrates on: the feeds each graph role saw (``record_feeds``), and where they came from
    (recorded in the quantized bundle's manifest)."""

    feeds: dict[str, list[dict[str, np.ndarray]]]
    info: dict[str, Any]


@dataclass(frozen=True)
class SampleSource:
    """Samples drawn by split: ``"train"`` ones calibrate static int8 and size TensorRT profiles, ``"heldout"`` ones
    measure a quantized bundle. quant and export sit below ``demo`` and know no dataset, so their callers pass one;
    the CLI passes the demo's synthetic scenes (``covspec.demo.samples.SCENES``)."""

    name: str  # recorded, with the split, as a manifest's calibration source
    draw: Callable[[str, int], list[CalibrationSample]]  # (split, n) -> n samples

    def __call__(self, split: str, n: int) -> list[CalibrationSample]:
        return self.draw(split, n)


class FeedRecorder:
    """A ``feed_recorder`` for an engine: keeps a copy of every feed dict, by graph role."""

    def __init__(self) -> None:
        self.feeds: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)

    def __call__(self, role: str, feeds: Mapping[str, Any]) -> None:
        self.feeds[role].append({name: np.array(value, copy=True) for name, value in feeds.items()})


def greedy_tokens(engine: Any, sample: CalibrationSample, steps: int) -> list[int]:
    """Prefill ``sample`` and decode ``steps`` greedy tokens one at a time (stops at EOS); returns them."""
    eos = set(engine.fingerprint.eos_token_ids)
    sequence = engine.start(sample.image if engine.accepts_images else None, sample.prompt)
    token = int(np.argmax(sequence.prefill_logits))
    tokens = [token]
    while len(tokens) < steps and token not in eos:
        token = int(np.argmax(sequence.extend([token])[-1]))
        tokens.append(token)
    return tokens


def record_feeds(
    engine: Any,
    samples: list[CalibrationSample],
    *,
    decode_steps: int = 4,
    max_per_role: int = 48,
    progress: Any = None,
) -> dict[str, list[dict[str, np.ndarray]]]:
    """Run ``engine`` (one exposing ``feed_recorder``) over ``samples`` (prefill + ``decode_steps`` greedy steps
    each) and return the feeds each graph role saw, at most ``max_per_role`` per role (evenly spaced, so prefill
    and decode feeds both stay represented)."""
    recorder = FeedRecorder()
    previous: Callable[..., Any] | None = getattr(engine, "feed_recorder", None)
    engine.feed_recorder = recorder
    task = progress.add_task("calibrate", total=len(samples)) if progress is not None else None
    try:
        for sample in samples:
            greedy_tokens(engine, sample, decode_steps + 1)
            if task is not None:
                progress.update(task, advance=1)
    finally:
        engine.feed_recorder = previous
    out = {}
    for role, feeds in recorder.feeds.items():
        if len(feeds) > max_per_role:
            keep = np.unique(np.linspace(0, len(feeds) - 1, max_per_role).round().astype(int))
            feeds = [feeds[i] for i in keep]
        out[role] = feeds
        log.info("calibration: %d feeds for %s", len(feeds), role)
    return out


def feed_reader(feeds: list[dict[str, np.ndarray]]) -> Any:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over recorded ``feeds`` (rewindable)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._iter: Iterator[dict[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._iter, None)

        def rewind(self) -> None:
            self._iter = iter(feeds)

        def __len__(self) -> int:
            return len(feeds)

    if not feeds:
        raise ValueError("no calibration feeds were recorded for this graph")
    return _Reader()


__all__ = [
    "DEFAULT_PROMPT",
    "Calibration",
    "CalibrationSample",
    "FeedRecorder",
    "SampleSource",
    "feed_reader",
    "greedy_tokens",
    "record_feeds",
    "samples_from_folder",
]
