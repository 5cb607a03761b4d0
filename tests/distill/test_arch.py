"""--drafter-arch: a fresh drafter from the target's config, sized down, its processor brought in step."""

from __future__ import annotations

import pytest

from covspec.distill import build_drafter, parse_arch
from covspec.errors import ConfigError
from covspec.models.prompts import vlm_inputs


def test_parse_arch_splits_sections_and_types_values() -> None:
    parsed = parse_arch(
        "text.num_hidden_layers=1, vision.image_size=96,initializer_range=0.08,tie_word_embeddings=false"
    )
    assert parsed == {
        "text": {"num_hidden_layers": 1},
        "vision": {"image_size": 96},
        "": {"initializer_range": 0.08, "tie_word_embeddings": False},
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [("", "empty"), ("layers", "KEY=VALUE"), ("text.layers=", "KEY=VALUE"), ("audio.x=1", "section")],
)
def test_parse_arch_refuses_malformed_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_arch(spec)


def test_llava_drafter_reads_the_visual_tokens_of_its_own_geometry(tiny_pair) -> None:
    """A 96 px, patch-8 tower: 144 visual tokens per image, the processor crops to 96 px, the forward runs; the text
    side is one layer and the tokenizer is the target's."""
    from PIL import Image

    target = tiny_pair("llava").target
    spec = "vision.image_size=96,vision.patch_size=8,text.num_hidden_layers=1,text.hidden_size=32"
    model, processor = build_drafter(target, parse_arch(spec), seed=0)
    assert model.config.image_seq_length == 144
    assert model.config.text_config.num_hidden_layers == 1
    inputs = vlm_inputs(processor, Image.new("RGB", (50, 40), (200, 10, 10)), "What colour?", "pt")
    assert tuple(inputs["pixel_values"].shape[-2:]) == (96, 96)
    assert int((inputs["input_ids"] == model.config.image_token_index).sum()) == 144
    logits = model(**inputs).logits
    assert logits.shape[1] == inputs["input_ids"].shape[1]


def test_same_seed_same_drafter(tiny_pair) -> None:
    import torch

    target = tiny_pair("llava").target
    first, _ = build_drafter(target, parse_arch("text.num_hidden_layers=1"), seed=3)
    second, _ = build_drafter(target, parse_arch("text.num_hidden_layers=1"), seed=3)
    other, _ = build_drafter(target, parse_arch("text.num_hidden_layers=1"), seed=4)
    a, b, c = (dict(m.named_parameters())["lm_head.weight"] for m in (first, second, other))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_geometry_change_refused_where_the_family_cannot_follow(tiny_pair) -> None:
    with pytest.raises(ConfigError, match="cannot change vision.image_size"):
        build_drafter(tiny_pair("qwen2_vl").target, parse_arch("vision.patch_size=7"), seed=0)


def test_unknown_field_is_named(tiny_pair) -> None:
    with pytest.raises(ConfigError, match="text_config.num_wings"):
        build_drafter(tiny_pair("llava").target, parse_arch("text.num_wings=2"), seed=0)
