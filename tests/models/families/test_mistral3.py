"""Mistral 3: the one-image vision graph equals transformers' ``get_image_features`` for images of every aspect
ratio, the feeds crop the processor's padding, and a prompt with two images is refused with a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models._helpers import make_image

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def drafter(tmp_path_factory):
    from covspec.models import load_model
    from covspec.models.tiny import build_tiny

    path = build_tiny("mistral3", "drafter", tmp_path_factory.mktemp("mistral3") / "drafter", seed=0)
    return load_model(str(path), dtype="float32")


@pytest.mark.parametrize("size", [(56, 40), (40, 56), (24, 24), (10, 70), (200, 30)])
def test_encode_equals_get_image_features(drafter, size):
    import torch

    from covspec.models.families.mistral3 import VISION

    batch = drafter.render(make_image(3, size), "Describe the image.")
    feeds = VISION.feeds({k: v.numpy() for k, v in batch.items()})
    parts = VISION.parts(drafter.hf_model)
    with torch.inference_mode():
        got = VISION.encode(parts, drafter.hf_model.config, torch.from_numpy(feeds["pixel_values"]))
        want = VISION.reference(drafter.hf_model, batch)
    assert got.shape[0] == int((batch["input_ids"] == drafter.image_token_id).sum())
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_feeds_crop_padding_and_refuse_two_images(drafter):
    from covspec.models.families.mistral3 import VISION

    processor = drafter.processor
    images = [make_image(1, (60, 20)), make_image(2, (20, 60))]
    two = processor(text="[IMG][IMG]", images=images, return_tensors="np")
    with pytest.raises(ValueError, match="one image per prompt"):
        VISION.feeds(dict(two))
    padded = {"pixel_values": two["pixel_values"][:1], "image_sizes": two["image_sizes"][:1]}
    height, width = (int(v) for v in two["image_sizes"][0])
    assert VISION.feeds(padded)["pixel_values"].shape == (1, 3, height, width)
    assert two["pixel_values"].shape[2:] != (height, width)  # the batch was padded
    np.testing.assert_array_equal(VISION.feeds(padded)["pixel_values"], two["pixel_values"][:1, :, :height, :width])
