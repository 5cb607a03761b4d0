"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``): Qwen2-VL's prompt and positions, a windowed vision tower.

Prompt, image placement and positions are Qwen2-VL's (see ``qwen2_vl``): the processor expands each
``<|vision_start|><|image_pad|><|vision_end|>`` of the chat template into one ``<|image_pad|>`` per merged 2x2 patch
block, and the decoder takes M-RoPE positions [4, 1, n] (row 0 text positions, rows 1-3 (t, h, w)), computed once
per sequence with ``get_rope_index`` (same signature as Qwen2-VL's; ``second_per_grid_ts`` only scales video time,
so for images the positions equal Qwen2-VL's and ``covspec.models.mrope`` computes them on a device). The tokenizer
is Qwen2-VL's very ``TokenizerSpec`` (the real checkpoints share Qwen2's vocabulary and special tokens), so a tiny
Qwen2-VL drafter pairs with a tiny Qwen2.5-VL target.

The vision tower differs from Qwen2-VL's: RMSNorm and gated MLPs, and most blocks attend only within windows of
``window_size`` pixels (``window_size // patch_size // merge`` merged blocks a side, counted from each frame's top
left); the blocks of ``fullatt_block_indexes`` attend over the whole frame. transformers reorders the patches window
by window with python loops over the grid values (``get_vision_window_index``) and splits attention per window. The
ONNX vision graph keeps the processor's patch order instead and restricts attention with an additive mask built
from each patch's frame and window ids: attention does not depend on the order of its keys, the merger reads
groups of ``merge**2`` patches that the reordering keeps together, and transformers undoes the reordering after the
merger, so the outputs are equal (up to summation order) with shape-static tensor arithmetic.

Supported: images (torch target and drafter, ONNX drafter bundle). Videos go through transformers in torch only.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from covspec.models.families.base import Family, TextSize, VisionGraph, tiny_text_fields
from covspec.models.families.qwen2_vl import (
    TOKENIZER,
    Qwen2VLAdapter,
    attention_bias,
    grid_feeds,
    grid_reference,
    images_only_processor,
    masked_vision_block,
    mrope_section,
    patch_layout,
)


class Qwen25VlAdapter(Qwen2VLAdapter):
    family = "qwen2_5_vl"
    model_class_name = "Qwen2_5_VLForConditionalGeneration"


# -- vision graph ----------------------------------------------------------------------------------------------------
# pixel_values [n_patches, C*T*P*P] + image_grid_thw int64 [n_images, 3] -> [n_patches / merge², hidden], in the
# processor's patch order throughout (no window reordering).


def _encode(parts: Any, config: Any, pixel_values: Any, image_grid_thw: Any) -> Any:
    visual = parts["visual"]
    merge = int(visual.spatial_merge_size)
    side = int(visual.window_size) // merge // int(visual.patch_size)  # merged blocks per window side
    n = pixel_values.shape[0]
    positions, segment = patch_layout(n, image_grid_thw, merge)
    window = positions // (merge * side)  # (window row, window column) of each patch within its frame
    same_frame = segment[:, None] == segment[None, :]
    same_window = same_frame & (window[:, None, :] == window[None, :, :]).all(-1)
    full_bias, window_bias = attention_bias(same_frame), attention_bias(same_window)
    full = {int(i) for i in visual.fullatt_block_indexes}

    hidden = visual.patch_embed(pixel_values)
    cos, sin = visual.rotary_pos_emb(hidden, positions)
    for index, blk in enumerate(visual.blocks):
        hidden = masked_vision_block(blk, hidden, cos, sin, full_bias if index in full else window_bias)
    return visual.merger(hidden)


VISION = VisionGraph(
    inputs=("pixel_values", "image_grid_thw"),
    dynamic_axes=({0: "num_patches"}, {0: "num_images"}),
    parts=lambda hf: {"visual": hf.model.visual},
    encode=_encode,
    reference=grid_reference,
    feeds=grid_feeds,
)


# -- tiny checkpoint ------------------------------------------------------------------------------------------------

# image tokens: <= 25 (target) / <= 16 (drafter); images are resized to at most max_side**2 pixels, in multiples of
# patch * merge = 8; windows of window / patch / merge = 2x2 merged blocks, so test images have several windows,
# some cut at the right or bottom edge; the last block (as in the real models) attends over the whole frame
_VISION = {
    "target": {"embed": 32, "layers": 3, "full": (1,), "heads": 2, "window": 16, "min_side": 16, "max_side": 40},
    "drafter": {"embed": 16, "layers": 2, "full": (1,), "heads": 1, "window": 16, "min_side": 16, "max_side": 32},
}
_PATCH = 4


def build_tiny(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    t, v = text, _VISION[size]
    conv = tokenizer.convert_tokens_to_ids
    text_config = {
        **tiny_text_fields(t, ids, bos=ids["eos"][1]),
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": mrope_section(t, Fraction(3, 8)),
        },
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
        "window_size": v["window"],
        "fullatt_block_indexes": list(v["full"]),
        "in_channels": 3,
    }
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=conv("<|image_pad|>"),
        video_token_id=conv("<|video_pad|>"),
        vision_start_token_id=conv("<|vision_start|>"),
        vision_end_token_id=conv("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    pixels = {"shortest_edge": v["min_side"] ** 2, "longest_edge": v["max_side"] ** 2}
    common = {"patch_size": _PATCH, "temporal_patch_size": 2, "merge_size": 2}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=dict(pixels), **common),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=dict(pixels), **common),
        chat_template=TOKENIZER.chat_template,
    )
    return model, processor


FAMILY = Family(
    "qwen2_5_vl",
    "qwen2_5_vl",
    Qwen25VlAdapter,
    TOKENIZER,
    build_tiny,
    vision=VISION,
    positions="mrope",
    device_processor=images_only_processor,
)

__all__ = ["FAMILY", "VISION", "Qwen25VlAdapter"]
