"""Idefics3 (``Idefics3ForConditionalGeneration``): a SigLIP-style vision tower, pixel shuffle, a Llama decoder.

The processor wraps each image as ``<fake_token_around_image><global-img><image>*N<fake_token_around_image>`` (and,
with image splitting on, one such block per tile with ``<row_i_col_j>`` markers); ``image_tokens`` counts the
``<image>`` positions only. Positions are plain sequence positions.
"""

from __future__ import annotations

from typing import Any

from covspec.models.common import HFVisionLanguageModel
from covspec.models.families.base import Family, TextSize, TokenizerSpec, llama_text_config


class Idefics3Adapter(HFVisionLanguageModel):
    family = "idefics3"
    model_class_name = "Idefics3ForConditionalGeneration"
    uses_processor = True


# -- tiny checkpoint ------------------------------------------------------------------------------------------------

_IDEFICS3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}"
    "{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ item['text'] }}{% elif item['type'] == 'image' %}<image>{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


_ROW_COL = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
TOKENIZER = TokenizerSpec(
    special_tokens=(
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<pad>",
        "<fake_token_around_image>",
        "<image>",
        "<global-img>",
        *_ROW_COL,
    ),
    named={"bos_token": "<|begin_of_text|>", "eos_token": "<end_of_utterance>", "pad_token": "<pad>"},
    model_specific={"image_token": "<image>"},
    generation_eos=("<end_of_utterance>", "<|end_of_text|>"),
    chat_template=_IDEFICS3_TEMPLATE,
)
# image tokens: 16 (target) / 4 (drafter)
_VISION = {
    "target": {"hidden": 32, "intermediate": 64, "layers": 2, "heads": 2, "image": 64, "patch": 8},
    "drafter": {"hidden": 16, "intermediate": 32, "layers": 1, "heads": 1, "image": 32, "patch": 8},
}


def build_tiny(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    v = _VISION[size]
    scale = 2
    vision = Idefics3VisionConfig(
        hidden_size=v["hidden"],
        intermediate_size=v["intermediate"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"],
        image_size=v["image"],
        patch_size=v["patch"],
    )
    config = Idefics3Config(
        vision_config=vision,
        text_config=llama_text_config(text, ids),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        pad_token_id=ids["pad"],
    )
    model = Idefics3ForConditionalGeneration(config)
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=False,
        size={"longest_edge": v["image"]},
        max_image_size={"longest_edge": v["image"]},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(v["image"] // v["patch"]) ** 2 // scale**2,
        chat_template=_IDEFICS3_TEMPLATE,
    )
    return model, processor


FAMILY = Family("idefics3", "idefics3", Idefics3Adapter, TOKENIZER, build_tiny)

__all__ = ["FAMILY", "Idefics3Adapter"]
