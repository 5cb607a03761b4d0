"""LLaVA-OneVision specifics: the tiny checkpoints exercise anyres_max pooling, and a device without torchvision
renders exactly what ``AutoProcessor`` does."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def drafter(tmp_path_factory):
    from covspec.models import build_tiny, load_model

    path = build_tiny("llava_onevision", "drafter", tmp_path_factory.mktemp("onevision") / "drafter")
    return path, load_model(str(path), dtype="float32")


def test_some_images_are_pooled_and_some_are_not(drafter) -> None:
    """anyres_max_2 shrinks a nearly unpadded 2x2 map (56x44) and leaves a 1x2 map (12x30) alone."""
    from PIL import Image

    from covspec.models.families.base import image_features_of

    _, model = drafter
    config = model.hf_model.config
    for size, pooled in (((56, 44), True), ((12, 30), False)):
        batch = model.render(Image.new("RGB", size, (90, 20, 200)), "Describe.")
        kwargs = {
            "pixel_values": batch["pixel_values"],
            "image_sizes": batch["image_sizes"],
            "vision_feature_layer": config.vision_feature_layer,
            "vision_feature_select_strategy": config.vision_feature_select_strategy,
        }
        own = image_features_of(model.hf_model, vision_aspect_ratio=config.vision_aspect_ratio, **kwargs)
        never = image_features_of(model.hf_model, vision_aspect_ratio="anyres_max_1000", **kwargs)
        assert (own.shape[0] < never.shape[0]) is pooled, size
        assert own.shape[0] == int((batch["input_ids"] == model.image_token_id).sum()), size


def test_images_only_processor_renders_as_auto_processor(drafter) -> None:
    import transformers
    from PIL import Image

    from covspec.models.families.llava_onevision import images_only_processor
    from covspec.models.prompts import vlm_inputs

    path, _ = drafter
    auto, images_only = transformers.AutoProcessor.from_pretrained(path), images_only_processor(path)
    for size in ((56, 44), (20, 100)):
        image = Image.new("RGB", size, (1, 2, 3))
        want, got = vlm_inputs(auto, image, "Hi there", "np"), vlm_inputs(images_only, image, "Hi there", "np")
        assert set(got.keys()) == set(want.keys())
        for key in want:
            assert np.array_equal(np.asarray(got[key]), np.asarray(want[key])), key
