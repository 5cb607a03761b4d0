"""Gemma 3: the bidirectional image-block prefill and the sliding-window layers, with a window (8) smaller than the
context, in the torch sequence (prefill / extend / crop against one full forward, greedy against ``generate()``) and
in the exported decoder graph with its ``token_type_ids`` input (every prefill row against PyTorch)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models._helpers import make_image

pytest.importorskip("torch")

WINDOW = 8  # < the 16 image tokens and the ~40-token prompt: eviction and window masks are exercised
PROMPT = "Describe the image."


@pytest.fixture(scope="module")
def small_window(tmp_path_factory):
    from covspec.models import load_model
    from covspec.models.families import gemma3
    from covspec.models.tiny import build_tiny

    path = tmp_path_factory.mktemp("gemma3") / "target"
    patch = pytest.MonkeyPatch()
    patch.setattr(gemma3, "SLIDING_WINDOW", WINDOW)
    try:
        build_tiny("gemma3", "target", path, seed=0)
    finally:
        patch.undo()
    model = load_model(str(path), dtype="float32")
    assert model.hf_model.config.text_config.sliding_window == WINDOW
    return path, model


def _full_logits(model, image, tokens: list[int], with_types: bool = True) -> np.ndarray:
    import torch

    inputs = dict(model.render(image, PROMPT))
    inputs.pop("attention_mask")
    extra = torch.tensor([tokens], dtype=torch.long)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
    if with_types:
        inputs["token_type_ids"] = torch.cat([inputs["token_type_ids"], torch.zeros_like(extra)], dim=1)
    else:
        inputs.pop("token_type_ids")
    with torch.inference_mode():
        return model.hf_model(**inputs).logits[0].numpy()


def test_sequence_equals_full_forward_past_the_window(small_window):
    _, model = small_window
    image = make_image(5, (56, 40))
    tokens = [int(t) for t in np.random.default_rng(0).integers(16, model.vocab_size, 10)]
    full = _full_logits(model, image, tokens)
    seq = model.start(image, PROMPT)
    n = seq.prompt_length
    assert seq.image_tokens == 16
    np.testing.assert_allclose(seq.prefill_logits, full[n - 1], atol=1e-4)
    np.testing.assert_allclose(seq.extend(tokens), full[n:], atol=1e-4)
    seq.crop(n + 3)
    np.testing.assert_allclose(seq.extend(tokens[3:]), full[n + 3 :], atol=1e-4)
    # the image block's bidirectional attention matters: without token_type_ids the prefill differs
    assert np.abs(_full_logits(model, image, tokens, with_types=False)[n - 1] - full[n - 1]).max() > 1e-3


def test_greedy_equals_generate_past_the_window(small_window):
    from tests.models._helpers import greedy_by_verification, oracle_proposer

    _, model = small_window
    image = make_image(6, (48, 48))
    want = model.generate(image, PROMPT, max_new_tokens=16)
    propose = oracle_proposer(want, model.vocab_size, seed=0)
    got, _ = greedy_by_verification(model, image, PROMPT, max_new_tokens=16, propose=propose)
    assert got == want


def test_onnx_decoder_reproduces_the_image_block_and_the_window(small_window, tmp_path):
    pytest.importorskip("onnxruntime")
    from covspec.export.onnx_export import export_bundle
    from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

    path, model = small_window
    manifest = export_bundle(path, tmp_path / "bundle")
    assert manifest.validation["passed"] and manifest.validation["top1_agreement"] == 1.0
    assert [i["name"] for i in manifest.io["decoder"]["inputs"][:4]][3] == "token_type_ids"
    engine = OnnxDrafterEngine(tmp_path / "bundle", ep="cpu")
    image = make_image(7, (40, 56))
    batch = engine.render(image, PROMPT)
    ids = np.asarray(batch["input_ids"], dtype=np.int64)
    embeds = engine.embed(ids)
    embeds[0, ids[0] == engine.image_token_id] = engine.image_features(batch)
    positions = np.arange(ids.shape[1], dtype=np.int64)[None]
    types = np.asarray(batch["token_type_ids"], dtype=np.int64)
    rows, kv = engine.run_decoder(embeds, positions, engine.empty_kv(), 0, token_types=types)
    tokens = [int(t) for t in np.random.default_rng(1).integers(16, model.vocab_size, 6)]
    full = _full_logits(model, image, tokens)
    n = ids.shape[1]
    np.testing.assert_allclose(rows, full[:n], atol=1e-4)
    more, _ = engine.run_decoder(engine.embed(np.asarray([tokens])), np.arange(n, n + 6)[None], kv, n)
    np.testing.assert_allclose(more, full[n:], atol=1e-4)
