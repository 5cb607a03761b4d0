"""Qwen3-VL: DeepStack in the torch prefill (and why there is no ONNX export: dropping it changes the logits), and
the tokenizer shared with Qwen2-VL (its M-RoPE positions: ``tests/models/test_mrope.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models._helpers import make_image

pytest.importorskip("torch")

SIZES = ((56, 44), (48, 40), (40, 64), (33, 90), (120, 30))  # (width, height)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from covspec.models import load_model
    from covspec.models.tiny import build_tiny

    root = tmp_path_factory.mktemp("qwen3_vl")
    return {
        size: load_model(str(build_tiny("qwen3_vl", size, root / size, seed=0)), dtype="float32")
        for size in ("target", "drafter")
    }


@pytest.mark.parametrize("size", ["target", "drafter"])
def test_prefill_applies_deepstack_which_inputs_embeds_alone_would_drop(models, size) -> None:
    """The sequence's prefill equals the model's own forward (DeepStack included), and a decoder fed only the
    merged ``inputs_embeds`` (what an ONNX decoder graph gets) computes other logits: hence ``no_export``."""
    import torch

    from covspec.models.families import qwen3_vl

    assert qwen3_vl.FAMILY.vision is None and "DeepStack" in qwen3_vl.FAMILY.no_export
    model = models[size]
    hf = model.hf_model
    assert len(hf.config.vision_config.deepstack_visual_indexes) >= 1
    image = make_image(90, SIZES[0])
    batch = model.render(image, "Describe the image.")
    positions, _ = model.prompt_positions(batch)
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "attention_mask"}
        full = hf(**inputs, position_ids=positions).logits[0]
        features = torch.cat(hf.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"]).pooler_output)
        embeds = hf.model.get_input_embeddings()(batch["input_ids"])
        where = (batch["input_ids"] == hf.config.image_token_id)[..., None]
        embeds = embeds.masked_scatter(where, features.to(embeds.dtype))
        plain = hf.lm_head(hf.model.language_model(inputs_embeds=embeds, position_ids=positions).last_hidden_state)[0]
    sequence = model.start(image, "Describe the image.")
    np.testing.assert_allclose(sequence.prefill_logits, full[-1].numpy(), rtol=0, atol=1e-4)
    assert float((full - plain).abs().max()) > 1e-3


def test_tokenizer_is_qwen2_vls() -> None:
    from covspec.models.families import qwen2_vl, qwen3_vl

    assert qwen3_vl.FAMILY.tokenizer is qwen2_vl.FAMILY.tokenizer
