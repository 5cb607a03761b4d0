"""Static int8's calibration: the fp32 bundle run by the ONNX Runtime engine over calibration samples, its feeds to
each graph recorded (``covspec.quant.calibration.record_feeds``). Here, above the device runtime, so that quant
itself depends on the bundle alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from covspec.errors import ExportError
from covspec.quant.calibration import Calibration, SampleSource, record_feeds, samples_from_folder
from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

CALIBRATION_SAMPLES = 16  # images (or "train" samples) the fp32 engine runs over to record calibration feeds


def calibrate_bundle(
    bundle_dir: Path | str,
    *,
    calibration_images: Path | str | None = None,
    samples: SampleSource | None = None,
    n: int = CALIBRATION_SAMPLES,
    progress: Any = None,
) -> Calibration:
    """The feeds the fp32 bundle at ``bundle_dir`` gives each graph over the images of ``calibration_images`` (with
    the folder's ``prompts.txt``) or, without a folder, over ``samples("train", n)``."""
    if calibration_images is not None:
        drawn = samples_from_folder(Path(calibration_images), limit=n)
        source = f"folder:{calibration_images}"
    elif samples is not None:
        drawn = samples("train", n)
        source = f"{samples.name} train"
    else:
        raise ExportError("static int8 calibrates on sample images: pass calibration_images (a folder) or samples")
    feeds = record_feeds(OnnxDrafterEngine(bundle_dir), drawn, progress=progress)
    info = {
        "source": source,
        "samples": len(drawn),
        "feeds": {role: len(items) for role, items in feeds.items()},
        "method": "MinMax",
        "per_channel": True,
        "activations": "int8 symmetric",
    }
    return Calibration(feeds, info)


__all__ = ["CALIBRATION_SAMPLES", "calibrate_bundle"]
