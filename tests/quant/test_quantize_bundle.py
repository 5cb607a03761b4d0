"""``quantize_bundle`` on an exported tiny LLaVA drafter: each precision writes a loadable bundle whose manifest
records the scheme and a report, graphs use the expected ops, and sizes shrink. Random weights make top-1 agreement
low for int8/int4 here, so it is checked as a reported fraction; fp16 must agree exactly with fp32 on these
well-separated logits."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from covspec.bench.inprocess import generate_in_process  # noqa: E402
from covspec.bundle import load_bundle  # noqa: E402
from covspec.demo.samples import SCENES  # noqa: E402
from covspec.errors import ExportError  # noqa: E402
from covspec.quant import quantize_bundle  # noqa: E402
from tests.quant.bundles import calibration_folder, shared_fp32_bundle  # noqa: E402

SMALL = {"samples": SCENES, "eval_samples": 2, "max_new_tokens": 6, "calibration_samples": 3, "threads": 1}


@pytest.fixture(scope="module")
def pair_and_bundle(tiny_pair, tmp_path_factory):
    # the shared bundle is build_tiny("llava", "drafter", seed=0): the same weights as tiny_pair's drafter
    return tiny_pair("llava"), shared_fp32_bundle(tmp_path_factory)


def _check_common(section, out, fp32):
    from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

    bundle = load_bundle(out)  # verifies every file's hash
    assert bundle.manifest.quantization["scheme"] == section["scheme"] == bundle.manifest.precision
    assert json.loads(json.dumps(section)) == section  # JSON-able
    assert section["bytes_after"] < section["bytes_before"]
    agreement = section["report"]["agreement"]
    assert 0.0 <= agreement["top1_agreement"] <= 1.0 and agreement["positions"] > 0
    latency = section["report"]["step_latency_ms"]
    assert latency["fp32"]["median_ms"] > 0 and latency["quantized"]["median_ms"] > 0
    engine = OnnxDrafterEngine(out, threads=1)
    sequence = engine.start(None, "What is in the image?")
    assert sequence.extend([5, 6]).shape == (2, engine.vocab_size)
    assert not any(name.startswith("tensorrt/") for name in bundle.manifest.files)
    assert load_bundle(fp32).manifest.precision == "fp32"  # the source is untouched


def test_int4_bundle(pair_and_bundle, tmp_path):
    pair, fp32 = pair_and_bundle
    out = tmp_path / "q4"
    section = quantize_bundle(fp32, out, "int4", **SMALL)
    _check_common(section, out, fp32)
    graphs = section["graphs"]
    assert graphs["decoder"]["file"] == "decoder_model_merged_q4.onnx" and graphs["decoder"]["ops"]["MatMulNBits"] > 0
    assert graphs["embed_tokens"]["ops"]["GatherBlockQuantized"] == 1
    assert section["block_size"] == 32 and section["symmetric"] is True
    assert graphs["decoder"]["bytes_after"] < 0.7 * graphs["decoder"]["bytes_before"]


def test_int8_dynamic_bundle_with_target_aal(pair_and_bundle, tmp_path):
    pair, fp32 = pair_and_bundle
    out = tmp_path / "int8"
    section = quantize_bundle(fp32, out, "int8", target=pair.target, generate=generate_in_process, **SMALL)
    _check_common(section, out, fp32)
    assert section["calibration"] is None
    assert section["graphs"]["decoder"]["ops"]["MatMulInteger"] > 0
    pair_report = section["report"]["pair"]
    for side in ("fp32", "quantized"):
        assert pair_report[side]["k"] == 4 and pair_report[side]["rounds"] > 0
        assert 1.0 <= pair_report[side]["aal"] <= 5.0


def test_fp16_bundle_agrees_with_fp32(pair_and_bundle, tmp_path):
    pair, fp32 = pair_and_bundle
    out = tmp_path / "fp16"
    section = quantize_bundle(fp32, out, "fp16", **SMALL)
    _check_common(section, out, fp32)
    assert set(section["roles"]) == {"vision_encoder", "embed_tokens", "decoder"}
    assert all(g["file"].endswith("_fp16.onnx") for g in section["graphs"].values())
    assert section["report"]["agreement"]["top1_agreement"] == 1.0


def test_static_int8_from_a_calibration_folder(pair_and_bundle, tmp_path):
    pair, fp32 = pair_and_bundle
    out = tmp_path / "int8_qdq"
    section = quantize_bundle(fp32, out, "int8", calibration_images=calibration_folder(tmp_path), **SMALL)
    _check_common(section, out, fp32)
    assert section["scheme"] == "int8_qdq"
    assert section["calibration"]["samples"] == 3 and section["calibration"]["source"].startswith("folder:")
    assert section["calibration"]["feeds"]["decoder"] > 3  # prefill and decode feeds both recorded
    decoder = section["graphs"]["decoder"]
    assert decoder["file"] == "decoder_model_merged_int8_qdq.onnx"
    assert decoder["ops"]["QuantizeLinear"] > 0 and decoder["ops"]["DequantizeLinear"] > 0
    assert section["graphs"]["embed_tokens"]["quantized"] is False


def test_refusals(pair_and_bundle, tmp_path):
    pair, fp32 = pair_and_bundle
    with pytest.raises(ExportError, match="precision"):
        quantize_bundle(fp32, tmp_path / "x", "int3", report=False)
    with pytest.raises(ExportError, match="int8 only"):
        quantize_bundle(fp32, tmp_path / "x", "int4", static=True, report=False)
    with pytest.raises(ExportError, match="new folder"):
        quantize_bundle(fp32, fp32, "fp16", report=False)
    # quant knows no dataset and sits below bench: what it measures on and with is the caller's to pass
    with pytest.raises(ExportError, match="held-out samples"):
        quantize_bundle(fp32, tmp_path / "x", "fp16")
    with pytest.raises(ExportError, match="calibrates on sample images"):
        quantize_bundle(fp32, tmp_path / "x", "int8", static=True, report=False)
    with pytest.raises(ExportError, match="generate"):
        quantize_bundle(fp32, tmp_path / "x", "fp16", samples=SCENES, target=pair.target)
    assert not (tmp_path / "x").exists()  # all refused before any work
    out = tmp_path / "fp16"
    quantize_bundle(fp32, out, "fp16", report=False)
    with pytest.raises(ExportError, match="fp32 bundle"):
        quantize_bundle(out, tmp_path / "again", "int8", report=False)
