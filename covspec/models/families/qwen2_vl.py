"""Qwen2-VL (``Qwen2VLForConditionalGeneration``): dynamic-resolution vision tower and multimodal RoPE (M-RoPE).

Positions are three rows (temporal, height, width): image tokens get 2-D grid positions, text tokens the same value
in all three rows. After the prompt, every new token's position is its sequence position plus a per-prompt *delta*
(max M-RoPE position + 1 - prompt length, negative when the image's grid is smaller than its token count).

Hugging Face's ``Qwen2VLModel`` keeps that delta on the module (``rope_deltas``) between forwards, which would mix up
sequences sharing one model. Here the delta is computed once per sequence at prefill (``get_rope_index``), kept in
the sequence, and every forward gets explicit ``position_ids`` of shape [4, 1, n]: row 0 the plain text positions
(used for the attention mask, as ``generate()`` does) and rows 1-3 the M-RoPE positions. Nothing reads module state.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from covspec.models.common import HFVisionLanguageModel
from covspec.models.families.base import (
    Family,
    TextSize,
    TokenizerSpec,
    VisionGraph,
    image_features_of,
    saved_processor,
    tiny_text_fields,
)

logger = logging.getLogger(__name__)


class Qwen2VLAdapter(HFVisionLanguageModel):
    family = "qwen2_vl"
    model_class_name = "Qwen2VLForConditionalGeneration"
    uses_processor = True

    def _mm_token_type_ids(self, inputs: Any) -> Any:
        import torch

        given = inputs.get("mm_token_type_ids")
        if given is not None:
            return given
        config = self.hf_model.config
        ids = inputs["input_ids"]
        types = torch.zeros_like(ids, dtype=torch.int32)
        types[ids == config.image_token_id] = 1
        types[ids == config.video_token_id] = 2
        return types

    def prompt_positions(self, inputs: Any) -> tuple[Any, int]:
        import torch

        input_ids = inputs["input_ids"]
        length = int(input_ids.shape[1])
        text = torch.arange(length, device=self.device).view(1, 1, length)
        image_grid = inputs.get("image_grid_thw")
        video_grid = inputs.get("video_grid_thw")
        if image_grid is None and video_grid is None:
            return torch.cat([text, text.expand(3, 1, length)], dim=0), 0
        mrope, deltas = self.hf_model.model.get_rope_index(
            input_ids,
            mm_token_type_ids=self._mm_token_type_ids(inputs),
            image_grid_thw=image_grid,
            video_grid_thw=video_grid,
        )
        return torch.cat([text, mrope.to(self.device)], dim=0), int(deltas.reshape(-1)[0])

    def extend_positions(self, start: int, count: int, state: Any) -> Any:
        import torch

        delta = int(state or 0)
        text = torch.arange(start, start + count, device=self.device).view(1, 1, count)
        return torch.cat([text, (text + delta).expand(3, 1, count)], dim=0)


# -- vision graph ----------------------------------------------------------------------------------------------------
# pixel_values [n_patches, C*T*P*P] + image_grid_thw int64 [n_images, 3] -> [n_patches / merge², hidden].
# Attention is restricted to each frame of each image by an additive mask built from per-patch segment ids, in place
# of transformers' per-chunk split over cu_seqlens.tolist().


def patch_layout(n: int, grid: Any, merge: int) -> tuple[Any, Any]:
    """(row, column) of every patch in its frame, in the processor's merge-block order, and the patch's segment id
    (one per frame of each image)."""
    import torch

    t, h, w = grid[:, 0], grid[:, 1], grid[:, 2]
    sizes = t * h * w
    ends = torch.cumsum(sizes, dim=0)
    idx = torch.arange(n, device=grid.device)
    image = (idx[:, None] >= ends[None, :]).sum(-1)
    local = idx - (ends - sizes)[image]
    frame_len = (h * w)[image]
    frame = local // frame_len
    within_frame = local % frame_len
    blocks_w = w[image] // merge
    block, within = within_frame // (merge * merge), within_frame % (merge * merge)
    hpos = (block // blocks_w) * merge + within // merge
    wpos = (block % blocks_w) * merge + within % merge
    segment = image * (torch.max(t) + 1) + frame
    return torch.stack([hpos, wpos], dim=-1), segment


def _encode(parts: Any, config: Any, pixel_values: Any, image_grid_thw: Any) -> Any:
    visual = parts["visual"]
    n = pixel_values.shape[0]
    positions, segment = patch_layout(n, image_grid_thw, int(visual.spatial_merge_size))
    hidden = visual.patch_embed(pixel_values)
    cos, sin = visual.rotary_pos_emb(hidden, positions)
    bias = attention_bias(segment[:, None] == segment[None, :])
    for blk in visual.blocks:
        hidden = masked_vision_block(blk, hidden, cos, sin, bias)
    return visual.merger(hidden)


def attention_bias(allowed: Any) -> Any:
    """An additive attention mask: 0 where ``allowed`` (bool [n, n]), the float32 minimum elsewhere."""
    import torch

    bias = torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device)
    return bias.masked_fill(~allowed, torch.finfo(torch.float32).min)


def masked_vision_block(blk: Any, hidden: Any, cos: Any, sin: Any, bias: Any) -> Any:
    """One Qwen-VL vision block over all patches at once, attention limited by the additive ``bias`` [n, n] (in place
    of transformers' attention split per chunk of ``cu_seqlens``); Qwen2.5-VL's blocks have the same shape."""
    import torch
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

    n = hidden.shape[0]
    attn = blk.attn
    q, k, v = attn.qkv(blk.norm1(hidden)).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # [heads, n, head_dim]
    weights = torch.matmul(q, k.transpose(1, 2)) * attn.scaling + bias
    weights = torch.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype)
    out = torch.matmul(weights, v).transpose(0, 1).reshape(n, -1)
    hidden = hidden + attn.proj(out)
    return hidden + blk.mlp(blk.norm2(hidden))


def grid_feeds(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "pixel_values": np.asarray(batch["pixel_values"], dtype=np.float32),
        "image_grid_thw": np.asarray(batch["image_grid_thw"], dtype=np.int64),
    }


def grid_reference(hf_model: Any, batch: dict[str, Any]) -> Any:
    return image_features_of(hf_model, pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"])


VISION = VisionGraph(
    inputs=("pixel_values", "image_grid_thw"),
    dynamic_axes=({0: "num_patches"}, {0: "num_images"}),
    parts=lambda hf: {"visual": hf.model.visual},
    encode=_encode,
    reference=grid_reference,
    feeds=grid_feeds,
)


def images_only_processor(root: Path) -> Any:
    """The bundle's processor without torchvision: transformers finds a processor's parts from the names of its
    ``__init__`` parameters, so a subclass whose ``__init__`` has no ``video_processor`` loads images only."""
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class Qwen2VLImagesOnlyProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None) -> None:
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    logger.info("%s: no torchvision, so the video processor is left out (images only)", root)
    parts = saved_processor(root)
    return Qwen2VLImagesOnlyProcessor(
        image_processor=parts.image_processor, tokenizer=parts.tokenizer, chat_template=parts.chat_template
    )


# -- tiny checkpoint ------------------------------------------------------------------------------------------------

_QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TOKENIZER = TokenizerSpec(
    special_tokens=(
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ),
    named={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    model_specific={
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "vision_bos_token": "<|vision_start|>",
        "vision_eos_token": "<|vision_end|>",
    },
    generation_eos=("<|im_end|>", "<|endoftext|>"),
    chat_template=_QWEN2_VL_TEMPLATE,
)
# image tokens: <= 16 (target) / <= 9 (drafter); max_side: images are resized to at most max_side**2 pixels, in
# multiples of patch * merge = 8
_VISION = {
    "target": {"embed": 32, "layers": 2, "heads": 2, "patch": 4, "min_side": 16, "max_side": 32},
    "drafter": {"embed": 16, "layers": 1, "heads": 1, "patch": 4, "min_side": 16, "max_side": 24},
}


def mrope_section(text: TextSize, h_share: Fraction = Fraction(1, 3)) -> list[int]:
    """M-RoPE splits head_dim / 2 frequencies into (t, h, w) sections, h and w taking ``h_share`` each ([4, 4, 4] for
    Qwen2-VL's thirds at the default head_dim of 24; Qwen2.5-VL takes 3/8, Qwen3-VL 5/16, as the real models do)."""
    half = text.hidden // text.heads // 2
    h = half * h_share.numerator // h_share.denominator
    return [half - 2 * h, h, h]


def build_tiny(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    t = text
    v = _VISION[size]
    conv = tokenizer.convert_tokens_to_ids
    text_config = {
        **tiny_text_fields(t, ids, bos=ids["eos"][1]),
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section(t)},
    }
    vision_config = {
        "depth": v["layers"],
        "embed_dim": v["embed"],
        "hidden_size": t.hidden,
        "num_heads": v["heads"],
        "mlp_ratio": 2,
        "patch_size": v["patch"],
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
    }
    config = Qwen2VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=conv("<|image_pad|>"),
        video_token_id=conv("<|video_pad|>"),
        vision_start_token_id=conv("<|vision_start|>"),
        vision_end_token_id=conv("<|vision_end|>"),
    )
    model = Qwen2VLForConditionalGeneration(config)
    pixels = {"shortest_edge": v["min_side"] ** 2, "longest_edge": v["max_side"] ** 2}
    image_processor = Qwen2VLImageProcessor(
        size=dict(pixels), patch_size=v["patch"], temporal_patch_size=2, merge_size=2
    )
    video_processor = Qwen2VLVideoProcessor(
        size=dict(pixels), patch_size=v["patch"], temporal_patch_size=2, merge_size=2
    )
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=_QWEN2_VL_TEMPLATE,
    )
    return model, processor


FAMILY = Family(
    "qwen2_vl",
    "qwen2_vl",
    Qwen2VLAdapter,
    TOKENIZER,
    build_tiny,
    vision=VISION,
    positions="mrope",
    device_processor=images_only_processor,
)

__all__ = [
    "FAMILY",
    "VISION",
    "Qwen2VLAdapter",
    "grid_feeds",
    "grid_reference",
    "images_only_processor",
    "patch_layout",
]
