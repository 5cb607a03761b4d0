"""One call from a drafter checkpoint to a device bundle: export (fp32, validated), quantize, TensorRT engines.

``covspec export`` is this function; a device preset (``--device``) supplies the precision when none is given and the
TensorRT settings. Missing TensorRT is reported before any work starts, so a long export never ends in that error.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Protocol

from covspec.bundle import read_manifest
from covspec.bundle.platform import import_tensorrt
from covspec.bundle.writing import update_manifest
from covspec.errors import ExportError
from covspec.export.calibration import calibrate_bundle
from covspec.export.onnx_export import DEFAULT_OPSET, export_bundle
from covspec.export.presets import get_preset
from covspec.export.tensorrt import build_bundle_engines, tensorrt_settings
from covspec.models.loading import quiet_transformers
from covspec.quant.bundle import quantize_bundle, resolve_scheme
from covspec.quant.calibration import SampleSource

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8", "int8_qdq", "int4")


class QuantizeStep(Protocol):
    """``step(fp32_dir, out_dir, precision, static=...)``: the fp32 bundle quantized into ``out_dir``. The default
    quantizes only; ``covspec export`` passes ``covspec.bench.quantization.quantize_and_measure`` (bound to its
    samples and target), which also measures and reports."""

    def __call__(self, fp32_dir: Path, out_dir: Path, precision: str, *, static: bool) -> Any: ...


def build_device_bundle(
    model: str | Path,
    out: str | Path,
    *,
    precision: str | None = None,
    device: str | None = None,
    tensorrt: bool = False,
    opset: int | None = None,
    validate: bool = True,
    tolerance: float | None = None,
    calibration_images: str | Path | None = None,
    samples: SampleSource | None = None,
    quantize: QuantizeStep | None = None,
    overwrite: bool = False,
    progress: Any = None,
) -> dict[str, Any]:
    """Write the bundle of ``model`` into ``out`` at ``precision`` (default: the device preset's, else fp32) and
    return its manifest as a dict. ``calibration_images`` makes int8 the calibrated QDQ form (what TensorRT reads).

    Export knows no dataset: ``samples`` is where static int8 (without ``calibration_images``) calibrates and the
    TensorRT optimization profiles draw their prompts and images; ``covspec export`` passes the demo's scenes, and a
    missing one is refused here, before the export. ``quantize`` replaces the plain quantization step (see
    ``QuantizeStep``)."""
    preset = get_preset(device) if device else None
    precision = precision or (preset.precision if preset else "fp32")
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    static = precision == "int8_qdq" or (precision == "int8" and calibration_images is not None)
    quant_precision = "int8" if precision == "int8_qdq" else precision
    if precision != "fp32":
        resolve_scheme(quant_precision, static=static)
        if static and calibration_images is None and samples is None:
            raise ExportError("static int8 calibrates on sample images: pass calibration_images (a folder) or samples")
    step = quantize or _plain_quantize(calibration_images, samples, progress)
    if tensorrt:
        if preset is None:
            preset = get_preset("jetson-orin")
        tensorrt_settings(preset)  # a preset without TensorRT is refused now, before the export
        import_tensorrt()  # fails now, with the install hint, rather than after the export
        if samples is None:
            raise ExportError("TensorRT optimization profiles are sized on a reference sample: pass samples")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out} exists and is not empty; pass --overwrite or choose a new folder")
        shutil.rmtree(out)
    export_args: dict[str, Any] = {"opset": opset or DEFAULT_OPSET, "validate": validate, "tolerance": tolerance}

    def export_fp32(path: Path) -> None:
        with quiet_transformers(), warnings.catch_warnings():
            # torch.onnx notes each dynamic axis name it merges with an equal one; nothing for a user to act on
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used", category=UserWarning)
            export_bundle(model, path, progress=_say(progress), overwrite=True, **export_args)

    if precision == "fp32":
        export_fp32(out)
    else:
        with tempfile.TemporaryDirectory(prefix="covspec-export-") as tmp:
            fp32 = Path(tmp) / "fp32"
            export_fp32(fp32)
            step(fp32, out, quant_precision, static=static)
    if preset is not None:
        update_manifest(out, device_profile=preset.to_dict())  # old key name: existing bundles still load
    if tensorrt:
        assert samples is not None  # checked above, before the export
        build_bundle_engines(out, preset, samples=samples, progress=progress)
    return read_manifest(out).to_dict()


def _plain_quantize(calibration_images: str | Path | None, samples: SampleSource | None, progress: Any) -> QuantizeStep:
    def step(fp32_dir: Path, out_dir: Path, precision: str, *, static: bool) -> Any:
        calibration = None
        if static:
            calibration = calibrate_bundle(
                fp32_dir, calibration_images=calibration_images, samples=samples, progress=progress
            )
        return quantize_bundle(fp32_dir, out_dir, precision, static=static, calibration=calibration, progress=progress)

    return step


def _say(progress: Any) -> Any:
    """export_bundle reports steps as messages; show them as a spinner line when a rich Progress is given."""
    if progress is None:
        return None
    task = progress.add_task("export", total=None)

    def say(message: str) -> None:
        logger.info("%s", message)
        progress.update(task, description=f"export: {message}")

    return say


__all__ = ["PRECISIONS", "QuantizeStep", "build_device_bundle"]
