"""Qwen2.5-VL: the shape-static window-attention vision graph against transformers' reordered, per-window tower (one
and several images, windows cut at the edges) and its tokenizer shared with Qwen2-VL (its M-RoPE positions:
``tests/models/test_mrope.py``)."""

from __future__ import annotations

import pytest

from tests.models._helpers import make_image

pytest.importorskip("torch")

SIZES = ((56, 44), (48, 40), (40, 64), (33, 90), (120, 30))  # (width, height): grids of 8x10, 12x6, 4x20, ...


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from covspec.models import load_model
    from covspec.models.tiny import build_tiny

    root = tmp_path_factory.mktemp("qwen2_5_vl")
    return {
        size: load_model(str(build_tiny("qwen2_5_vl", size, root / size, seed=0)), dtype="float32")
        for size in ("target", "drafter")
    }


def _graph_and_reference(model, batch):
    import torch

    from covspec.models.families.qwen2_5_vl import VISION

    hf = model.hf_model
    with torch.no_grad():
        got = VISION.encode(VISION.parts(hf), hf.config, batch["pixel_values"], batch["image_grid_thw"])
        want = VISION.reference(hf, batch)
    return got, want


@pytest.mark.parametrize("size", ["target", "drafter"])
def test_window_graph_equals_get_image_features(models, size) -> None:
    model = models[size]
    visual = model.hf_model.model.visual
    assert 0 < len(visual.fullatt_block_indexes) < len(visual.blocks)  # window and full blocks both present
    for i, wh in enumerate(SIZES):
        batch = model.render(make_image(40 + i, wh), "Describe the image.")
        got, want = _graph_and_reference(model, batch)
        assert got.shape == want.shape
        assert int(got.shape[0]) == int((batch["input_ids"] == model.image_token_id).sum())
        assert float((got - want).abs().max()) < 1e-5, (size, wh)


def test_window_graph_equals_reference_on_several_images(models) -> None:
    import torch

    model = models["target"]
    batches = [model.render(make_image(60 + i, wh), "Describe the image.") for i, wh in enumerate(SIZES[:3])]
    batch = {k: torch.cat([b[k] for b in batches]) for k in ("pixel_values", "image_grid_thw")}
    got, want = _graph_and_reference(model, batch)
    assert float((got - want).abs().max()) < 1e-5


def test_window_mask_matters(models, monkeypatch) -> None:
    """With every block attending over the whole frame, the graph no longer equals the windowed tower."""
    model = models["target"]
    batch = model.render(make_image(41, SIZES[0]), "Describe the image.")
    _, want = _graph_and_reference(model, batch)
    visual = model.hf_model.model.visual
    monkeypatch.setattr(visual, "fullatt_block_indexes", list(range(len(visual.blocks))))
    got, _ = _graph_and_reference(model, batch)
    assert float((got - want).abs().max()) > 1e-4


def test_tokenizer_is_qwen2_vls(models, tmp_path) -> None:
    from covspec.models import load_model
    from covspec.models.families import qwen2_5_vl, qwen2_vl
    from covspec.models.tiny import build_tiny

    assert qwen2_5_vl.FAMILY.tokenizer is qwen2_vl.FAMILY.tokenizer
    drafter = load_model(str(build_tiny("qwen2_vl", "drafter", tmp_path / "qwen2_vl", seed=0)), dtype="float32")
    target = models["target"]
    assert drafter.fingerprint.tokenizer_hash == target.fingerprint.tokenizer_hash
    assert drafter.vocab_size == target.vocab_size
    assert drafter.eos_token_ids == target.eos_token_ids
    text_only = drafter.start(None, "Describe the image.").token_ids
    assert list(text_only) == list(target.start(None, "Describe the image.").token_ids)
