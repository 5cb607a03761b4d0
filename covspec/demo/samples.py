"""The demo's synthetic scenes as the samples quantization and TensorRT builds draw on.

``covspec.quant`` and ``covspec.export`` sit below ``demo`` (DESIGN.md §3) and know no dataset: they take a
``SampleSource``. ``SCENES`` is the one ``covspec quantize`` and ``covspec export`` pass, so static int8 calibrates on
training scenes, TensorRT profiles are sized on one, and the quantization report measures on held-out ones.
"""

from __future__ import annotations

from covspec.demo import scenes
from covspec.quant.calibration import CalibrationSample, SampleSource


def scene_samples(split: str, n: int, *, seed: int = 0) -> list[CalibrationSample]:
    """``n`` scenes of ``split`` ("train" or "heldout"), each with its question as the prompt."""
    return [CalibrationSample(item.scene.image, item.question) for item in scenes.dataset(split, n, seed=seed)]


SCENES = SampleSource("synthetic:covspec.demo.scenes", scene_samples)

__all__ = ["SCENES", "scene_samples"]
