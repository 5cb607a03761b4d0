"""``quantize_bundle`` on an exported tiny LLaVA drafter: each precision writes a loadable bundle whose manifest
records the scheme, graphs use the expected ops, and sizes shrink. quant measures nothing (``covspec.bench.
quantization`` does) and records nothing itself: static int8 takes the feeds the caller recorded."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from covspec.bundle import load_bundle  # noqa: E402
from covspec.errors import ExportError  # noqa: E402
from covspec.quant import quantize_bundle  # noqa: E402
from tests.quant.bundles import calibration_folder, shared_fp32_bundle  # noqa: E402


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return shared_fp32_bundle(tmp_path_factory)


def _check_common(section, out, fp32) -> None:
    from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

    bundle = load_bundle(out)  # verifies every file's hash
    assert bundle.manifest.quantization["scheme"] == section["scheme"] == bundle.manifest.precision
    assert json.loads(json.dumps(section)) == section  # JSON-able
    assert section["bytes_after"] < section["bytes_before"]
    assert section["report"] is None  # measuring is bench's
    engine = OnnxDrafterEngine(out, threads=1)
    sequence = engine.start(None, "What is in the image?")
    assert sequence.extend([5, 6]).shape == (2, engine.vocab_size)
    assert not any(name.startswith("tensorrt/") for name in bundle.manifest.files)
    assert load_bundle(fp32).manifest.precision == "fp32"  # the source is untouched


def test_int4_bundle(fp32, tmp_path) -> None:
    out = tmp_path / "q4"
    section = quantize_bundle(fp32, out, "int4")
    _check_common(section, out, fp32)
    graphs = section["graphs"]
    assert graphs["decoder"]["file"] == "decoder_model_merged_q4.onnx" and graphs["decoder"]["ops"]["MatMulNBits"] > 0
    assert graphs["embed_tokens"]["ops"]["GatherBlockQuantized"] == 1
    assert section["block_size"] == 32 and section["symmetric"] is True
    assert graphs["decoder"]["bytes_after"] < 0.7 * graphs["decoder"]["bytes_before"]


def test_int8_dynamic_and_fp16_bundles(fp32, tmp_path) -> None:
    section = quantize_bundle(fp32, tmp_path / "int8", "int8")
    _check_common(section, tmp_path / "int8", fp32)
    assert section["calibration"] is None
    assert section["graphs"]["decoder"]["ops"]["MatMulInteger"] > 0
    section = quantize_bundle(fp32, tmp_path / "fp16", "fp16")
    _check_common(section, tmp_path / "fp16", fp32)
    assert set(section["roles"]) == {"vision_encoder", "embed_tokens", "decoder"}
    assert all(g["file"].endswith("_fp16.onnx") for g in section["graphs"].values())


def test_static_int8_from_recorded_calibration_feeds(fp32, tmp_path) -> None:
    from covspec.export.calibration import calibrate_bundle

    calibration = calibrate_bundle(fp32, calibration_images=calibration_folder(tmp_path), n=3)
    out = tmp_path / "int8_qdq"
    section = quantize_bundle(fp32, out, "int8", calibration=calibration)
    _check_common(section, out, fp32)
    assert section["scheme"] == "int8_qdq"
    assert section["calibration"]["samples"] == 3 and section["calibration"]["source"].startswith("folder:")
    assert section["calibration"]["feeds"]["decoder"] > 3  # prefill and decode feeds both recorded
    decoder = section["graphs"]["decoder"]
    assert decoder["file"] == "decoder_model_merged_int8_qdq.onnx"
    assert decoder["ops"]["QuantizeLinear"] > 0 and decoder["ops"]["DequantizeLinear"] > 0
    assert section["graphs"]["embed_tokens"]["quantized"] is False


def test_refusals(fp32, tmp_path) -> None:
    with pytest.raises(ExportError, match="precision"):
        quantize_bundle(fp32, tmp_path / "x", "int3")
    with pytest.raises(ExportError, match="int8 only"):
        quantize_bundle(fp32, tmp_path / "x", "int4", static=True)
    with pytest.raises(ExportError, match="new folder"):
        quantize_bundle(fp32, fp32, "fp16")
    with pytest.raises(ExportError, match="calibrates on the fp32 bundle's own inputs"):
        quantize_bundle(fp32, tmp_path / "x", "int8", static=True)
    assert not (tmp_path / "x").exists()  # all refused before any work
    out = tmp_path / "fp16"
    quantize_bundle(fp32, out, "fp16")
    with pytest.raises(ExportError, match="fp32 bundle"):
        quantize_bundle(out, tmp_path / "again", "int8")


def test_quant_depends_on_the_bundle_alone() -> None:
    """DESIGN.md §3 / issue 12: callers pass calibration feeds and measure; quant imports nothing else of covspec."""
    import ast
    from pathlib import Path

    import covspec.quant

    imported = set()
    for path in Path(covspec.quant.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("covspec."):
                imported.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                imported.update(a.name.split(".")[1] for a in node.names if a.name.startswith("covspec."))
    assert imported <= {"quant", "bundle", "errors"}, imported
