"""SmolVLM: the vision graph (Idefics3's) on the real checkpoints' default image splitting, which the tiny processor
keeps off, and the device path without torch (the images-only processor)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models._helpers import make_image
from tests.models.families._device import assert_bundle_runs_without

pytest.importorskip("torch")

PROMPT = "What is in the image?"


def test_vision_graph_equals_get_image_features_with_image_splitting(tiny_pair) -> None:
    import torch

    from covspec.models import load_model
    from covspec.models.families.smolvlm import FAMILY

    model = load_model(str(tiny_pair("smolvlm").target), dtype="float32")
    processor, side = model.processor, model.hf_model.config.vision_config.image_size
    image_processor = processor.image_processor
    image_processor.do_image_splitting, image_processor.size = True, {"longest_edge": 2 * side}
    try:
        content = [{"type": "image"}, {"type": "text", "text": PROMPT}]
        text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        batch = processor(text=text, images=[make_image(3, (160, 96))], return_tensors="np")
    finally:
        image_processor.do_image_splitting, image_processor.size = False, {"longest_edge": side}
    tiles = batch["pixel_values"].shape[1]
    assert tiles == 2 * 2 + 1  # a 2x2 grid of tiles and the global image
    ids = batch["input_ids"][0]
    assert "<row_2_col_2>" in model.tokenizer.decode(ids)
    vision = FAMILY.vision
    assert vision is not None
    feeds = {k: torch.from_numpy(v) for k, v in vision.feeds(dict(batch)).items()}
    with torch.inference_mode():
        ours = vision.encode(vision.parts(model.hf_model), model.hf_model.config, *feeds.values())
        want = vision.reference(model.hf_model, {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()})
    assert ours.shape[0] == int((ids == model.image_token_id).sum()) == tiles * processor.image_seq_len
    torch.testing.assert_close(ours, want, atol=1e-5, rtol=0)


def test_engine_runs_without_torch_torchvision_or_num2words(tiny_bundle) -> None:
    pytest.importorskip("onnxruntime")
    source, root = tiny_bundle("smolvlm")
    assert_bundle_runs_without(source, root, ("torch", "torchvision", "num2words"), image_tokens=4)
