"""``quantize_bundle``: an fp32 bundle in, a quantized bundle out, and what changed in it.

The new bundle holds the copied tokenizer / processor / config files, the quantized graphs named with the scheme's
suffix (roles the scheme leaves alone keep their fp32 file), and a manifest whose ``precision`` and ``graphs`` name
the new files and whose ``quantization`` section records the scheme, the calibration and the graph sizes before and
after.

quant reads and writes bundles through ``covspec.bundle`` and depends on nothing else of covspec (DESIGN.md §3):
static int8's calibration feeds are recorded by the caller (``covspec.export.calibration``, which runs the fp32
bundle), and what a quantized drafter costs and gains is measured in ``covspec.bench.quantization``, which fills the
section's ``report``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from covspec.bundle import load_bundle
from covspec.bundle.writing import copy_bundle_files, write_manifest
from covspec.errors import ExportError
from covspec.quant import onnx_quant
from covspec.quant.calibration import Calibration, feed_reader
from covspec.quant.schemes import Scheme, scheme_for

log = logging.getLogger(__name__)

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


def resolve_scheme(precision: str, *, static: bool | None = None, calibrated: bool = False) -> Scheme:
    """The scheme for ``precision`` ("int8", "int4", "fp16"; "int8_qdq" is int8 with ``static``); ``static``
    defaults to whether calibration inputs are given (``calibrated``). ExportError for an unknown one."""
    if static is None:
        static = calibrated or precision == "int8_qdq"
    try:
        return scheme_for(precision, static=static)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc


def quantize_bundle(
    bundle_dir: Path | str,
    out_dir: Path | str,
    precision: str,
    *,
    static: bool | None = None,
    calibration: Calibration | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Write the fp32 bundle at ``bundle_dir`` quantized to ``precision`` into ``out_dir``; returns the manifest's
    ``quantization`` section (JSON-able; its ``report`` is None until ``covspec.bench.quantization`` measures).

    ``static`` (default: whether ``calibration`` is given) makes int8 the calibrated QDQ form for TensorRT, which
    needs ``calibration``: the feeds the fp32 bundle's engine gave each graph (``covspec.export.calibration``)."""
    import onnx
    import onnxruntime

    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    scheme = resolve_scheme(precision, static=static, calibrated=calibration is not None)
    if scheme.calibrated and calibration is None:
        raise ExportError(
            "static int8 calibrates on the fp32 bundle's own inputs: record them first "
            "(covspec.export.calibration.calibrate_bundle) and pass calibration"
        )
    source = load_bundle(bundle_dir, verify=True)
    if source.manifest.precision != "fp32":
        raise ExportError(f"{bundle_dir} is a {source.manifest.precision} bundle; quantize from the fp32 bundle")
    if out_dir.resolve() == bundle_dir.resolve():
        raise ExportError("--out must be a new folder, not the fp32 bundle itself")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} exists and is not empty; choose a new folder")

    feeds = calibration.feeds if scheme.calibrated and calibration is not None else {}

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
        "calibration": calibration.info if scheme.calibrated and calibration is not None else None,
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
    return manifest.quantization


__all__ = ["quantize_bundle", "quantize_graph", "resolve_scheme"]
