"""The native TensorRT drafter engine. Here (no tensorrt, no GPU) only its refusals run; on a GPU machine with
TensorRT (scripts/gpu_check.sh) it builds engines for a tiny fp16 bundle, checks the drafter against the ONNX
Runtime engine on the same bundle, and writes its step latency to ``$COVSPEC_RESULTS_DIR/bench_tensorrt_step.json``."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from covspec.errors import EngineUnavailableError
from tests.helpers import tensorrt_missing

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


MISSING = tensorrt_missing()


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here; the missing-module error cannot be shown")
def test_engine_without_tensorrt_says_what_is_missing(tmp_path):
    from covspec.runtime_device.engines.tensorrt_engine import TensorRTDrafterEngine

    with pytest.raises(EngineUnavailableError) as info:
        TensorRTDrafterEngine(tmp_path)
    assert "TensorRT" in str(info.value) and "install" in str(info.value)


def test_importing_the_engine_loads_neither_tensorrt_nor_torch():
    import subprocess
    import sys

    code = (
        "import sys, covspec.runtime_device.engines.tensorrt_engine as m; "
        "print(','.join(x for x in ('tensorrt', 'torch') if x in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.fixture(scope="module")
def fp16_bundle(tmp_path_factory):
    from covspec.quant import quantize_bundle
    from tests.quant.bundles import shared_fp32_bundle

    out = tmp_path_factory.mktemp("trt") / "fp16"
    quantize_bundle(shared_fp32_bundle(tmp_path_factory), out, "fp16")
    return out


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(bool(MISSING), reason=f"needs {MISSING}")
def test_tensorrt_drafter_matches_onnxruntime(fp16_bundle):
    from covspec.bench.quantization import step_latency, top1_agreement
    from covspec.demo.samples import SCENES
    from covspec.export.tensorrt import build_bundle_engines
    from covspec.quant.calibration import greedy_tokens
    from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine
    from covspec.runtime_device.engines.tensorrt_engine import TensorRTDrafterEngine

    section = build_bundle_engines(fp16_bundle, "jetson-orin", samples=SCENES)
    reference = OnnxDrafterEngine(fp16_bundle)
    engine = TensorRTDrafterEngine(fp16_bundle)
    samples = SCENES("heldout", 3)

    sequence = engine.start(samples[0].image, samples[0].prompt)
    ref_sequence = reference.start(samples[0].image, samples[0].prompt)
    np.testing.assert_allclose(sequence.prefill_logits, ref_sequence.prefill_logits, atol=5e-2, rtol=5e-2)
    tokens = greedy_tokens(reference, samples[0], 6)
    np.testing.assert_allclose(sequence.extend(tokens), ref_sequence.extend(tokens), atol=5e-2, rtol=5e-2)
    sequence.crop(sequence.prompt_length + 2)  # roll back, then decode again over the cropped cache
    ref_sequence.crop(ref_sequence.prompt_length + 2)
    np.testing.assert_allclose(sequence.extend([7]), ref_sequence.extend([7]), atol=5e-2, rtol=5e-2)
    assert sequence.kv_bytes() > 0

    agreement = top1_agreement(reference, engine, samples, max_new_tokens=12)
    assert agreement["top1_agreement"] >= 0.9
    latency = step_latency({"onnxruntime-cpu": reference, "tensorrt": engine}, samples[0], steps=64)
    results = os.environ.get("COVSPEC_RESULTS_DIR")
    if results:
        report = {
            "tensorrt": section["tensorrt_version"],
            "gpu": section["device_name"],
            "agreement": agreement,
            "step_latency_ms": latency,
            "build_s": {k: v["build_s"] for k, v in section["engines"].items()},
        }
        Path(results, "bench_tensorrt_step.json").write_text(json.dumps(report, indent=2))


def test_a_decoder_taking_token_types_is_refused_not_run_without_them(tiny_bundle):
    """Gemma 3's decoder takes token_type_ids, which the native engines are not fed: refused by name."""
    from covspec.bundle import load_bundle
    from covspec.runtime_device.engines.tensorrt_engine import check_decoder_inputs

    _, gemma3 = tiny_bundle("gemma3")
    with pytest.raises(EngineUnavailableError, match="token_type_ids"):
        check_decoder_inputs(load_bundle(gemma3))
    _, llava = tiny_bundle("llava")
    check_decoder_inputs(load_bundle(llava))
