"""``SCENES``: the demo's scenes as the ``SampleSource`` quantization and TensorRT builds draw on."""

from __future__ import annotations

from covspec.demo import scenes
from covspec.demo.samples import SCENES
from covspec.quant.calibration import CalibrationSample


def test_scenes_are_the_demo_questions_by_split() -> None:
    for split in ("train", "heldout"):
        drawn = SCENES(split, 3)
        items = scenes.dataset(split, 3)
        assert all(isinstance(s, CalibrationSample) for s in drawn)
        assert [s.prompt for s in drawn] == [item.question for item in items]
        assert [s.image.tobytes() for s in drawn] == [item.scene.image.tobytes() for item in items]
    assert SCENES.name == "synthetic:covspec.demo.scenes"  # the calibration source a manifest records
