"""``covspec quantize`` (``quantize_and_measure``) on an exported tiny LLaVA drafter: the quantized bundle's manifest
carries the report — drafter step latency side by side, top-1 agreement with fp32 along its greedy sequences, and
with a target the pair's AAL before and after. Random weights make top-1 agreement low for int8 here, so it is checked
as a reported fraction; fp16 must agree exactly with fp32 on these well-separated logits."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")

from covspec.bundle import load_bundle  # noqa: E402
from covspec.demo.samples import SCENES  # noqa: E402
from covspec.errors import ExportError  # noqa: E402
from tests.quant.bundles import calibration_folder, shared_fp32_bundle  # noqa: E402

SMALL = {"samples": SCENES, "eval_samples": 2, "max_new_tokens": 6, "threads": 1}


@pytest.fixture(scope="module")
def pair_and_bundle(tiny_pair, tmp_path_factory):
    # the shared bundle is build_tiny("llava", "drafter", seed=0): the same weights as tiny_pair's drafter
    return tiny_pair("llava"), shared_fp32_bundle(tmp_path_factory)


def _check_report(section, out) -> None:
    assert load_bundle(out).manifest.quantization == section  # the report is written into the manifest
    agreement = section["report"]["agreement"]
    assert 0.0 <= agreement["top1_agreement"] <= 1.0 and agreement["positions"] > 0
    latency = section["report"]["step_latency_ms"]
    assert latency["fp32"]["median_ms"] > 0 and latency["quantized"]["median_ms"] > 0


def test_int8_report_with_the_pair_aal(pair_and_bundle, tmp_path) -> None:
    from covspec.bench.quantization import quantize_and_measure

    pair, fp32 = pair_and_bundle
    out = tmp_path / "int8"
    section = quantize_and_measure(fp32, out, "int8", target=pair.target, **SMALL)
    _check_report(section, out)
    pair_report = section["report"]["pair"]
    for side in ("fp32", "quantized"):
        assert pair_report[side]["k"] == 4 and pair_report[side]["rounds"] > 0
        assert 1.0 <= pair_report[side]["aal"] <= 5.0


def test_fp16_agrees_with_fp32_and_static_int8_calibrates_on_the_folder(pair_and_bundle, tmp_path) -> None:
    from covspec.bench.quantization import quantize_and_measure

    _, fp32 = pair_and_bundle
    section = quantize_and_measure(fp32, tmp_path / "fp16", "fp16", **SMALL)
    _check_report(section, tmp_path / "fp16")
    assert section["report"]["agreement"]["top1_agreement"] == 1.0
    assert section["report"]["pair"] is None
    folder = calibration_folder(tmp_path)
    section = quantize_and_measure(fp32, tmp_path / "qdq", "int8", calibration_images=folder, **SMALL)
    _check_report(section, tmp_path / "qdq")
    assert section["scheme"] == "int8_qdq" and section["calibration"]["source"] == f"folder:{folder}"


def test_an_unknown_precision_is_refused_before_any_work(pair_and_bundle, tmp_path) -> None:
    from covspec.bench.quantization import quantize_and_measure

    _, fp32 = pair_and_bundle
    with pytest.raises(ExportError, match="precision"):
        quantize_and_measure(fp32, tmp_path / "x", "int3", **SMALL)
    assert not (tmp_path / "x").exists()
