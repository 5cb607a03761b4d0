"""InternVL: the vision graph on the real processor's tiling (``crop_to_patches`` with several tiles and a
thumbnail), which the tiny processor keeps to one tile, and the device path without torch (images-only
processor)."""

from __future__ import annotations

import pytest

from tests.models._helpers import make_image
from tests.models.families._device import assert_bundle_runs_without

pytest.importorskip("torch")

PROMPT = "What is in the image?"


def test_vision_graph_equals_get_image_features_with_tiles(tiny_pair) -> None:
    import torch

    from covspec.models import load_model
    from covspec.models.families.internvl import FAMILY

    model = load_model(str(tiny_pair("internvl").target), dtype="float32")
    processor = model.processor
    content = [{"type": "image"}, {"type": "text", "text": PROMPT}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    batch = processor(
        text=text, images=[make_image(3, (160, 64))], crop_to_patches=True, max_patches=6, return_tensors="pt"
    )
    tiles = int(batch["pixel_values"].shape[0])
    assert tiles > 2  # several tiles and the thumbnail
    ids = batch["input_ids"][0]
    vision = FAMILY.vision
    assert vision is not None
    feeds = {k: torch.from_numpy(v) for k, v in vision.feeds({"pixel_values": batch["pixel_values"].numpy()}).items()}
    with torch.inference_mode():
        ours = vision.encode(vision.parts(model.hf_model), model.hf_model.config, *feeds.values())
        want = vision.reference(model.hf_model, dict(batch))
    assert ours.shape[0] == int((ids == model.image_token_id).sum()) == tiles * processor.image_seq_length
    torch.testing.assert_close(ours, want, atol=1e-5, rtol=0)


def test_engine_runs_without_torch_or_torchvision(tiny_bundle) -> None:
    pytest.importorskip("onnxruntime")
    source, root = tiny_bundle("internvl")
    assert_bundle_runs_without(source, root, ("torch", "torchvision"), image_tokens=4)
