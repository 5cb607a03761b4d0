"""Qwen3-VL (``Qwen3VLForConditionalGeneration``): Qwen2-VL's prompt and M-RoPE, a Qwen3 decoder fed "DeepStack"
visual features. Torch target and drafter only: no ONNX export (see ``NO_EXPORT``).

Prompt and image placement are Qwen2-VL's (see ``qwen2_vl``): the chat template puts
``<|vision_start|><|image_pad|><|vision_end|>`` where the image goes (Qwen3-VL's template adds no default system
message, as the tiny Qwen2-VL template does not), and the processor expands ``<|image_pad|>`` into one placeholder
per merged 2x2 patch block. The real Qwen3-VL tokenizer has Qwen2-VL's special tokens (its four extra added tokens
``<tool_response>``, ``</tool_response>``, ``<think>``, ``</think>`` are not special), so the tiny checkpoint uses
Qwen2-VL's very ``TokenizerSpec``.

Positions: ``get_rope_index`` has Qwen2-VL's signature and, for images, gives Qwen2-VL's M-RoPE positions (only
videos differ: Qwen3-VL numbers each frame as its own grid, separated by timestamps), so the adapter is Qwen2-VL's:
explicit [4, 1, n] position ids, the per-sequence delta kept in the sequence. The text model interleaves the (t, h, w)
frequency sections (``mrope_interleaved``); that is the model's own rotary embedding and needs nothing here.

DeepStack: the vision tower also returns features of some early vision blocks (``deepstack_visual_indexes``), which
the text model adds to the hidden states of the image positions after its first decoder layers. A prefill with
``pixel_values`` does that inside transformers; later tokens are text and get none, so the shared prefill / extend /
crop machinery is exact.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from covspec.models.families.base import Family, TextSize, tiny_text_fields
from covspec.models.families.qwen2_vl import TOKENIZER, Qwen2VLAdapter, mrope_section

NO_EXPORT = (
    "Qwen3-VL's decoder adds DeepStack visual features (from intermediate vision blocks) to the hidden states of the "
    "image positions after its first decoder layers; the ONNX decoder graph takes only inputs_embeds, attention_mask, "
    "position_ids and the KV cache, so an exported bundle would silently drop DeepStack and draft differently from "
    "the torch model"
)


class Qwen3VlAdapter(Qwen2VLAdapter):
    family = "qwen3_vl"
    model_class_name = "Qwen3VLForConditionalGeneration"


# -- tiny checkpoint ------------------------------------------------------------------------------------------------

# image tokens: <= 16 (target) / <= 9 (drafter); images are resized to at most max_side**2 pixels, in multiples of
# patch * merge = 8. DeepStack feeds the features of the listed vision blocks into the first decoder layers (one
# feature per layer, so no more than the drafter's 2 text layers); "positions" is the side of the learned position
# grid that the tower resamples to each image's grid.
_VISION = {
    "target": {"embed": 32, "layers": 3, "deepstack": (0, 1), "heads": 2, "positions": 8, "max_side": 32},
    "drafter": {"embed": 16, "layers": 2, "deepstack": (0,), "heads": 1, "positions": 6, "max_side": 24},
}
_PATCH = 4
_MIN_SIDE = 16


def build_tiny(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    t, v = text, _VISION[size]
    conv = tokenizer.convert_tokens_to_ids
    rope = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": mrope_section(t, Fraction(5, 16)),
        "mrope_interleaved": True,
    }
    text_config = {
        **tiny_text_fields(t, ids, bos=ids["eos"][1]),
        "head_dim": t.hidden // t.heads,
        "rms_norm_eps": 1e-6,
        "rope_parameters": rope,
    }
    vision_config = {
        "depth": v["layers"],
        "hidden_size": v["embed"],
        "intermediate_size": 2 * v["embed"],
        "num_heads": v["heads"],
        "out_hidden_size": t.hidden,
        "patch_size": _PATCH,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": v["positions"] ** 2,
        "deepstack_visual_indexes": list(v["deepstack"]),
        "in_channels": 3,
    }
    config = Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=conv("<|image_pad|>"),
        video_token_id=conv("<|video_pad|>"),
        vision_start_token_id=conv("<|vision_start|>"),
        vision_end_token_id=conv("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    model = Qwen3VLForConditionalGeneration(config)
    # Qwen3-VL normalises with mean = std = 0.5, not CLIP's statistics
    pixels = {"shortest_edge": _MIN_SIDE**2, "longest_edge": v["max_side"] ** 2}
    common = {"patch_size": _PATCH, "temporal_patch_size": 2, "merge_size": 2}
    common.update(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=dict(pixels), **common),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(size=dict(pixels), cap_pixels_per_frame=True, **common),
        chat_template=TOKENIZER.chat_template,
    )
    return model, processor


FAMILY = Family(
    "qwen3_vl",
    "qwen3_vl",
    Qwen3VlAdapter,
    TOKENIZER,
    build_tiny,
    vision=None,
    no_export=NO_EXPORT,
    positions="mrope",
)

__all__ = ["FAMILY", "NO_EXPORT", "Qwen3VlAdapter"]
