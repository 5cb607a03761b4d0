"""The pre-resized upload (covspec.runtime_device.upload) against the real processors of every tiny family: the
target's processor on the upload gives pixel values (and grids, masks, sizes, ids) bit-identical to those on the
original, in both backends; where that cannot hold, the original bytes go up with the reason."""

from __future__ import annotations

import copy
import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from covspec.models.prompts import vlm_inputs
from covspec.models.tiny import TINY_ARCHS
from covspec.runtime_device.upload import decode_rgb, prepare_upload, processor_input
from covspec.runtime_edge.service import describe_image_processor
from tests.helpers import photo

# families whose processor cannot be reproduced from a resized image, and the words of the reason the device gives
FALLS_BACK = {"llava_next": "anyres", "llava_onevision": "anyres"}
PROMPT = "What is in the image?"


# (width, height, format): a 4:3 photo, a portrait, a tiny picture (upscaled by most processors)
IMAGES = [(1000, 750, "JPEG"), (600, 900, "JPEG"), (23, 17, "PNG")]


def processor_outputs(processor, image_bytes: bytes) -> dict[str, torch.Tensor]:
    """What the edge's target gets from its processor for this image (DESIGN.md §7)."""
    return dict(vlm_inputs(processor, decode_rgb(image_bytes), PROMPT, "pt"))


def assert_bit_identical(processor, original: bytes, upload: bytes) -> None:
    want, got = processor_outputs(processor, original), processor_outputs(processor, upload)
    assert want.keys() == got.keys()
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert value.shape == got[key].shape and torch.equal(value, got[key]), key
        else:
            assert value == got[key], key


def holder(processor) -> SimpleNamespace:
    """What ``describe_image_processor`` reads of a loaded model: its processor (here one with changed settings)."""
    return SimpleNamespace(processor=processor)


def with_image_processor(processor, image_processor):
    changed = copy.copy(processor)
    changed.image_processor = image_processor
    return changed


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_upload_is_bit_identical_on_the_edge_per_family(arch, loaded_target) -> None:
    processor = loaded_target(arch).processor
    description = describe_image_processor(loaded_target(arch))
    assert description is not None and description["class"] == type(processor.image_processor).__name__
    for width, height, fmt in IMAGES:
        original = photo(width, height, seed=width, fmt=fmt)
        upload = prepare_upload(original, description, min_bytes=0)
        if arch in FALLS_BACK:
            assert not upload.resized and upload.data == original
            assert FALLS_BACK[arch] in upload.fallback
            continue
        if fmt == "JPEG":  # a photo always shrinks
            assert upload.resized and upload.fallback is None, upload.fallback
            assert len(upload.data) < len(original)
            assert upload.data[:8] == b"\x89PNG\r\n\x1a\n"
        else:  # a tiny picture may grow when resized: then the original goes up
            assert upload.resized or "no smaller" in upload.fallback
        assert_bit_identical(processor, original, upload.data)


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl", "idefics3"])
def test_upload_is_bit_identical_with_the_pil_backend(arch, loaded_target) -> None:
    """The PIL backend resizes with other kernels: the device uses the edge's backend, and identity holds there too."""
    import transformers

    processor = loaded_target(arch).processor
    torchvision_processor = processor.image_processor
    pil_class = getattr(transformers, type(torchvision_processor).__name__ + "Pil")
    edge_processor = with_image_processor(processor, pil_class.from_dict(torchvision_processor.to_dict()))
    description = describe_image_processor(holder(edge_processor))
    assert description["backend"] == "pil" and description["class"].endswith("Pil")
    original = photo(1000, 750, seed=3)
    upload = prepare_upload(original, description)
    assert upload.resized
    assert_bit_identical(edge_processor, original, upload.data)
    if arch == "llava":  # CLIP's bicubic differs between the backends: why the device must use the edge's
        other = prepare_upload(original, describe_image_processor(loaded_target(arch)))
        torchvision_pixels, pil_pixels = np.asarray(decode_rgb(other.data)), np.asarray(decode_rgb(upload.data))
        assert torchvision_pixels.shape == pil_pixels.shape and not np.array_equal(torchvision_pixels, pil_pixels)


@pytest.mark.parametrize("arch", ["idefics3", "smolvlm"])
def test_upload_is_bit_identical_with_image_splitting(arch, loaded_target) -> None:
    """Idefics3 and SmolVLM as their real checkpoints run: tiles cut from the longest-edge resize, which is what the
    device uploads."""
    processor = loaded_target(arch).processor
    config = {**processor.image_processor.to_dict(), "do_image_splitting": True}
    config["size"] = {"longest_edge": 2 * config["max_image_size"]["longest_edge"]}
    edge_processor = with_image_processor(processor, type(processor.image_processor).from_dict(config))
    original = photo(1000, 750, seed=5)
    assert processor_outputs(edge_processor, original)["pixel_values"].shape[1] > 1  # it did split
    upload = prepare_upload(original, describe_image_processor(holder(edge_processor)))
    assert upload.resized
    assert_bit_identical(edge_processor, original, upload.data)


@pytest.mark.parametrize(
    ("arch", "settings", "reason"),
    [
        ("gemma3", {"do_pan_and_scan": True}, "pan-and-scan"),
        ("internvl", {"crop_to_patches": True, "max_patches": 4}, "crop_to_patches"),
        ("lfm2_vl", {"do_image_splitting": True, "min_tiles": 2, "max_tiles": 4}, "splitting"),
    ],
)
def test_settings_that_read_the_original_fall_back(arch, settings, reason, loaded_target) -> None:
    """Settings (in the config, or in what the edge's processor passes at call time) under which the processor cuts
    crops or tiles from the original image: its output cannot come from a resized one."""
    description = describe_image_processor(loaded_target(arch))
    changed = {
        **description,
        "config": {**description["config"], **settings},
        "call_kwargs": {**description["call_kwargs"], **settings},
    }
    original = photo(1000, 750, seed=7)
    assert prepare_upload(original, description).resized  # as built, the family resizes
    upload = prepare_upload(original, changed)
    assert not upload.resized and upload.data == original and reason in upload.fallback


def test_a_size_rule_that_is_not_idempotent_falls_back(loaded_target) -> None:
    """Qwen-VL's smart_resize at an extreme aspect ratio gives a size it would itself resize again."""
    description = describe_image_processor(loaded_target("qwen2_vl"))
    original = photo(2000, 40, seed=9)
    upload = prepare_upload(original, description)
    assert not upload.resized and upload.data == original and "again" in upload.fallback


def test_what_the_device_cannot_reproduce_falls_back(loaded_target) -> None:
    description = describe_image_processor(loaded_target("llava"))
    original = photo(640, 480, seed=11)
    cases = {
        "no image processor": None,
        "no resize rule": {**description, "class": "SiglipImageProcessor"},
        "this device": {**description, "versions": {**description["versions"], "torchvision": "0.0.1"}},
        "runs on torchvision here, on pil there": {**description, "backend": "pil"},
        "cannot be built here": {**description, "config": {**description["config"], "size": "large"}},
    }
    for reason, broken in cases.items():
        upload = prepare_upload(original, broken)
        assert not upload.resized and upload.data == original and reason in upload.fallback, (reason, upload)
        assert upload.stats()["upload_fallback"] == upload.fallback
    assert processor_input(decode_rgb(original), description)[0] is not None  # the intact description resizes


def test_no_resize_when_the_result_is_no_smaller(loaded_target) -> None:
    """An image already at the processor's size, as a small PNG: the PNG written here is no smaller."""
    description = describe_image_processor(loaded_target("llava"))
    size = description["config"]["crop_size"]
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size["width"], size["height"]), (10, 200, 30)).save(out, format="PNG", optimize=True)
    original = out.getvalue()
    upload = prepare_upload(original, description, min_bytes=0)
    assert upload.data == original and not upload.resized and "no smaller" in upload.fallback
    # by default a file this small is not even decoded: resizing could save a few hundred bytes at most
    small = prepare_upload(original, description)
    assert small.data == original and not small.resized and "the original is small" in small.fallback
    assert small.image is None


def test_resizing_off_sends_the_original_untouched(loaded_target) -> None:
    original = photo(640, 480, seed=13)
    upload = prepare_upload(original, describe_image_processor(loaded_target("llava")), resize=False)
    assert upload.data == original and not upload.resized and upload.fallback is None
    assert upload.stats() == {
        "upload_original_bytes": len(original),
        "upload_image_bytes": len(original),
        "upload_resized": False,
        "upload_quality": None,
        "upload_fallback": None,
    }


def test_lossy_quality_sends_a_smaller_jpeg_of_the_same_size(loaded_target) -> None:
    processor = loaded_target("qwen2_vl").processor
    description = describe_image_processor(loaded_target("qwen2_vl"))
    original = photo(1000, 750, seed=15)
    exact, lossy = prepare_upload(original, description), prepare_upload(original, description, quality=30)
    assert lossy.resized and lossy.quality == 30 and lossy.data[:2] == b"\xff\xd8"  # a JPEG
    assert lossy.size == exact.size and len(lossy.data) < len(exact.data)
    want, got = processor_outputs(processor, original), processor_outputs(processor, lossy.data)
    assert torch.equal(want["image_grid_thw"], got["image_grid_thw"])  # same geometry, other pixels
    assert not torch.equal(want["pixel_values"], got["pixel_values"])
    # lossy without a processor to resize with: the original re-encoded as JPEG, when that is smaller
    reencoded = prepare_upload(original, None, quality=30)
    assert not reencoded.resized and reencoded.quality == 30 and len(reencoded.data) < len(original)
    assert reencoded.size == (1000, 750)
    for bad in (0, 101):
        with pytest.raises(ValueError, match="quality"):
            prepare_upload(original, description, quality=bad)


def test_bytes_that_are_no_image_go_up_as_they_are(loaded_target) -> None:
    """The edge judges them (invalid_image), as it always did."""
    garbage = b"not an image" * 2000  # past the small-original threshold, so the device tries to decode it
    upload = prepare_upload(garbage, describe_image_processor(loaded_target("llava")))
    assert upload.data == garbage and not upload.resized and "does not decode" in upload.fallback
