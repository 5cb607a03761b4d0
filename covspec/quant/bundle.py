"""``covspec quantize``: an fp32 bundle in, a quantized bundle out, with a report of what it cost and gained.

The new bundle holds the copied tokenizer / processor / config files, the quantized graphs named with the scheme's
suffix (roles the scheme leaves alone keep their fp32 file), and a manifest whose ``precision`` and ``graphs`` name
the new files and whose ``quantization`` section records the scheme, the calibration and the report: graph sizes
before and after, the median drafter decode step of both bundles measured side by side through ONNX Runtime, top-1
agreement with the fp32 bundle along its greedy sequences and, given a target checkpoint, the pair's AAL (greedy,
K=4) before and after.

quant sits below ``demo`` and ``bench`` (DESIGN.md §3), so what it measures on and with is passed in: a
``SampleSource`` for held-out (and calibration) samples, a ``PairGenerator`` for the AAL. ``covspec quantize`` passes
the demo's scenes, the in-process loop and, for the shipped demo drafter, the demo target.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from covspec.bundle import load_bundle
from covspec.errors import ExportError
from covspec.export.writing import copy_bundle_files, write_manifest
from covspec.quant import onnx_quant
from covspec.quant.calibration import CalibrationSample, SampleSource, record_feeds, samples_from_folder
from covspec.quant.report import PairGenerator, pair_acceptance, step_latency, top1_agreement
from covspec.quant.schemes import Scheme, scheme_for

log = logging.getLogger(__name__)

CALIBRATION_SAMPLES = 16  # images (or "train" samples) the fp32 engine runs over to record calibration feeds
EVAL_SAMPLES = 8  # "heldout" samples for agreement and AAL
EVAL_MAX_NEW_TOKENS = 24
_REPORTED_OPS = (
    "MatMul",
    "Gemm",
    "MatMulInteger",
    "DynamicQuantizeLinear",
    "MatMulNBits",
    "GatherBlockQuantized",
    "QuantizeLinear",
    "DequantizeLinear",
    "Cast",
)


def quantize_graph(scheme: Scheme, role: str, src: Path, dst: Path, feeds: list[dict[str, Any]] | None) -> Path:
    """Rewrite one graph of ``role`` with ``scheme`` (``feeds``: recorded calibration inputs, static int8 only)."""
    if scheme.name == "fp16":
        return onnx_quant.convert_fp16(src, dst)
    if scheme.name == "int4":
        return onnx_quant.quantize_int4(
            src, dst, block_size=scheme.block_size or 32, symmetric=scheme.symmetric, embeddings=role == "embed_tokens"
        )
    if scheme.name == "int8":
        op_types = ("Gather",) if role == "embed_tokens" else onnx_quant.WEIGHT_OPS
        return onnx_quant.quantize_int8_dynamic(src, dst, op_types=op_types)
    if scheme.name == "int8_qdq":
        from covspec.quant.calibration import feed_reader

        if not feeds:
            raise ExportError(f"no calibration inputs were recorded for the {role} graph")
        return onnx_quant.quantize_int8_qdq(src, dst, feed_reader(feeds))
    raise ExportError(f"unknown quantization scheme {scheme.name}")


def _copy_graph(src: Path, dst: Path) -> None:
    shutil.copy2(src, dst)
    for suffix in ("_data", ".data"):
        extra = src.with_name(src.name + suffix)
        if extra.exists():
            shutil.copy2(extra, dst.with_name(dst.name + suffix))


def _calibration(
    bundle_dir: Path, calibration_images: Path | None, samples: SampleSource | None, n: int, progress: Any
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

    if calibration_images is not None:
        drawn = samples_from_folder(calibration_images, limit=n)
        source = f"folder:{calibration_images}"
    else:
        assert samples is not None  # resolve_scheme refused this
        drawn = samples("train", n)
        source = f"{samples.name} train"
    engine = OnnxDrafterEngine(bundle_dir)
    feeds = record_feeds(engine, drawn, progress=progress)
    info = {
        "source": source,
        "samples": len(drawn),
        "feeds": {role: len(items) for role, items in feeds.items()},
        "method": "MinMax",
        "per_channel": True,
        "activations": "int8 symmetric",
    }
    return feeds, info


_NEEDS_GENERATE = (
    "the pair's AAL runs drafter and target in one process: pass generate "
    "(covspec.bench.inprocess.generate_in_process) with target"
)


def measure(
    fp32_dir: Path,
    quant_dir: Path,
    samples: list[CalibrationSample],
    *,
    target: str | Path | None = None,
    generate: PairGenerator | None = None,
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
    threads: int | None = None,
) -> dict[str, Any]:
    """Step latency, top-1 agreement and (with ``target``, run through ``generate``) AAL of the bundle at
    ``quant_dir`` against ``fp32_dir``, over ``samples``."""
    from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

    if target is not None and generate is None:
        raise ExportError(_NEEDS_GENERATE)
    kwargs = {"threads": threads} if threads is not None else {}
    reference = OnnxDrafterEngine(fp32_dir, **kwargs)
    candidate = OnnxDrafterEngine(quant_dir, **kwargs)
    report: dict[str, Any] = {
        "step_latency_ms": step_latency({"fp32": reference, "quantized": candidate}, samples[0]),
        "agreement": top1_agreement(reference, candidate, samples, max_new_tokens=max_new_tokens),
        "pair": None,
    }
    if target is not None and generate is not None:
        from covspec.models import load_model

        target_model = load_model(str(target), dtype="float32")
        report["pair"] = {
            "target": str(target),
            "fp32": pair_acceptance(reference, target_model, samples, generate=generate, max_new_tokens=max_new_tokens),
            "quantized": pair_acceptance(
                candidate, target_model, samples, generate=generate, max_new_tokens=max_new_tokens
            ),
        }
    return report


def resolve_scheme(
    precision: str,
    *,
    static: bool | None = None,
    calibration_images: Path | str | None = None,
    samples: SampleSource | None = None,
    report: bool = True,
    target: str | Path | None = None,
    generate: PairGenerator | None = None,
) -> Scheme:
    """The scheme ``quantize_bundle`` applies for these arguments, after checking it was given what that needs
    (ExportError otherwise). ``build_device_bundle`` calls it too, so a missing input is said before a long export."""
    if static is None:
        static = calibration_images is not None or precision == "int8_qdq"
    try:
        scheme = scheme_for(precision, static=static)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    if scheme.calibrated and calibration_images is None and samples is None:
        raise ExportError("static int8 calibrates on sample images: pass calibration_images (a folder) or samples")
    if report and samples is None:
        raise ExportError("the report measures on held-out samples: pass samples, or report=False")
    if report and target is not None and generate is None:
        raise ExportError(_NEEDS_GENERATE)
    return scheme


def quantize_bundle(
    bundle_dir: Path | str,
    out_dir: Path | str,
    precision: str,
    *,
    samples: SampleSource | None = None,
    calibration_images: Path | str | None = None,
    static: bool | None = None,
    target: str | Path | None = None,
    generate: PairGenerator | None = None,
    progress: Any = None,
    calibration_samples: int = CALIBRATION_SAMPLES,
    eval_samples: int = EVAL_SAMPLES,
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
    threads: int | None = None,
    report: bool = True,
) -> dict[str, Any]:
    """Write the fp32 bundle at ``bundle_dir`` quantized to ``precision`` ("int8", "int4", "fp16"; "int8_qdq" is
    "int8" with ``static``) into ``out_dir``.

    ``static`` (default: whether ``calibration_images`` is given) makes int8 the calibrated QDQ form for TensorRT;
    calibration runs over the images of ``calibration_images`` or, without one, over ``samples("train", n)``.
    ``samples`` (a ``SampleSource``) also gives the ``eval_samples`` held-out samples the report measures on; quant
    has no dataset of its own, and ``covspec quantize`` passes the demo's scenes (``covspec.demo.samples.SCENES``).
    ``target`` (a checkpoint ``covspec.models.load_model`` reads) adds the pair's AAL before and after, run through
    ``generate`` (``covspec.bench.inprocess.generate_in_process``); ``covspec quantize`` defaults it to the demo target
    for the shipped demo drafter (``covspec.demo.ship.shipped_target_for``). ``report`` False skips the measurements
    (sizes only; then neither ``samples`` nor ``generate`` is needed unless calibrating). Returns the manifest's
    ``quantization`` section (JSON-able)."""
    import onnx
    import onnxruntime

    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    calibration_images = Path(calibration_images) if calibration_images is not None else None
    scheme = resolve_scheme(
        precision,
        static=static,
        calibration_images=calibration_images,
        samples=samples,
        report=report,
        target=target,
        generate=generate,
    )
    source = load_bundle(bundle_dir, verify=True)
    if source.manifest.precision != "fp32":
        raise ExportError(f"{bundle_dir} is a {source.manifest.precision} bundle; quantize from the fp32 bundle")
    if out_dir.resolve() == bundle_dir.resolve():
        raise ExportError("--out must be a new folder, not the fp32 bundle itself")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} exists and is not empty; choose a new folder")

    feeds: dict[str, list[dict[str, Any]]] = {}
    calibration = None
    if scheme.calibrated:
        feeds, calibration = _calibration(bundle_dir, calibration_images, samples, calibration_samples, progress)

    copy_bundle_files(bundle_dir, out_dir)
    graphs: dict[str, str] = {}
    graph_report: dict[str, Any] = {}
    roles = [role for role, name in source.manifest.graphs.items() if name]
    task = progress.add_task(f"quantize {scheme.name}", total=len(roles)) if progress is not None else None
    for role in roles:
        src = source.graph_path(role)
        rewrite = role in scheme.roles
        name = scheme.file_name(src.name) if rewrite else src.name
        dst = out_dir / name
        if rewrite:
            log.info("quantizing %s (%s) -> %s", role, src.name, name)
            quantize_graph(scheme, role, src, dst, feeds.get(role))
        else:
            _copy_graph(src, dst)
        ops = onnx_quant.op_counts(dst)
        graphs[role] = name
        graph_report[role] = {
            "source": src.name,
            "file": name,
            "quantized": rewrite,
            "bytes_before": onnx_quant.graph_bytes(src),
            "bytes_after": onnx_quant.graph_bytes(dst),
            "ops": {op: ops[op] for op in _REPORTED_OPS if ops[op]},
        }
        if task is not None:
            progress.update(task, advance=1)

    before = sum(g["bytes_before"] for g in graph_report.values())
    after = sum(g["bytes_after"] for g in graph_report.values())
    section: dict[str, Any] = {
        **{k: v for k, v in asdict(scheme).items() if k not in ("roles",)},
        "scheme": scheme.name,
        "roles": list(scheme.roles),
        "calibration": calibration,
        "source_bundle": {"precision": source.manifest.precision, "validation": source.manifest.validation},
        "graphs": graph_report,
        "bytes_before": before,
        "bytes_after": after,
        "size_ratio": after / before if before else None,
        "tools": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__},
        "report": None,
    }
    manifest = source.manifest
    manifest.precision = scheme.name
    manifest.graphs = graphs
    manifest.quantization = section
    manifest.tensorrt = None
    manifest.validation = None
    write_manifest(out_dir, manifest)

    if report:
        assert samples is not None  # resolve_scheme refused this
        section["report"] = measure(
            bundle_dir,
            out_dir,
            samples("heldout", eval_samples),
            target=target,
            generate=generate,
            max_new_tokens=max_new_tokens,
            threads=threads,
        )
        manifest.quantization = section
        write_manifest(out_dir, manifest)
    return manifest.quantization


__all__ = ["CALIBRATION_SAMPLES", "EVAL_SAMPLES", "measure", "quantize_bundle", "quantize_graph", "resolve_scheme"]
