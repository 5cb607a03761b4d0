"""The device-edge loop with the drafter on ONNX Runtime, from exported bundles of every precision, against a real
uvicorn server on 127.0.0.1: whatever the drafter's precision, the output is the target's own (the target decides).

The quantized drafters are worse drafters (their tokens differ from fp32's now and then); the output may not differ.
"""

from __future__ import annotations

import pytest

from covspec.protocol import VerifyMode
from covspec.runtime_device.client import EdgeClient
from covspec.runtime_device.loop import GenerationConfig, generate
from tests.helpers import PROMPTS, image_bytes, pil

pytest.importorskip("onnxruntime")

PRECISIONS = ("fp32", "int8", "int4", "fp16")
N_PAIRS = 8
MAX_NEW = 14


@pytest.fixture(scope="module")
def llava_bundles(tiny_bundle, tmp_path_factory):
    """{precision: bundle folder} for the tiny LLaVA drafter: the session's fp32 export, quantized three ways."""
    from covspec.quant.bundle import quantize_bundle

    _, fp32 = tiny_bundle("llava")
    root = tmp_path_factory.mktemp("quantized")
    bundles = {"fp32": fp32}
    for precision in PRECISIONS[1:]:
        quantize_bundle(fp32, root / precision, precision)
        bundles[precision] = root / precision
    return bundles


@pytest.mark.e2e
@pytest.mark.parametrize("precision", PRECISIONS)
def test_greedy_output_with_a_bundle_equals_target_generate(precision, llava_bundles, edge_server, loaded_target):
    from covspec.bundle import load_bundle
    from covspec.runtime_device.engines import load_engine

    bundle = llava_bundles[precision]
    manifest = load_bundle(bundle).manifest
    assert manifest.precision == precision
    if precision != "fp32":
        assert manifest.quantization["scheme"] == precision
    engine = load_engine("onnxruntime", bundle, ep="cpu")
    server, target = edge_server("llava"), loaded_target("llava")
    client = EdgeClient(server.url)
    pairs = [(image_bytes(300 + i), PROMPTS[i % len(PROMPTS)]) for i in range(N_PAIRS)]
    for mode in (VerifyMode.VANILLA, VerifyMode.COMPACT):
        config = GenerationConfig(max_new_tokens=MAX_NEW, draft_len=3, verify_mode=mode)
        for img, prompt in pairs:
            want = target.generate(pil(img), prompt, max_new_tokens=MAX_NEW)
            result = generate(engine, client, img, prompt, config)
            assert result.tokens == want, (precision, mode.value, prompt)
            assert result.text == target.decode(want)


@pytest.mark.e2e
def test_qwen2_vl_bundle_multimodal_positions_stay_lossless(tiny_bundle, edge_server, loaded_target) -> None:
    """Qwen2-VL's M-RoPE positions are computed on the device in numpy for the bundle; a wrong position would show
    up as a drafter that is never accepted, and a wrong commit as a differing output."""
    from covspec.runtime_device.engines import load_engine

    _, bundle = tiny_bundle("qwen2_vl")
    engine = load_engine("onnxruntime", bundle, ep="cpu")
    server, target = edge_server("qwen2_vl"), loaded_target("qwen2_vl")
    client = EdgeClient(server.url)
    config = GenerationConfig(max_new_tokens=MAX_NEW, draft_len=3, verify_mode=VerifyMode.COMPACT)
    for i in range(4):
        img, prompt = image_bytes(400 + i), PROMPTS[i]
        want = target.generate(pil(img), prompt, max_new_tokens=MAX_NEW)
        assert generate(engine, client, img, prompt, config).tokens == want
