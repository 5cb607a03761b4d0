"""Idefics3 (``Idefics3ForConditionalGeneration``): a SigLIP-style vision tower, pixel shuffle, a Llama decoder.

The processor wraps each image as ``<fake_token_around_image><global-img><image>*N<fake_token_around_image>`` (and,
with image splitting on, one such block per tile with ``<row_i_col_j>`` markers); ``image_tokens`` counts the
``<image>`` positions only. Positions are plain sequence positions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from covspec.models.common import HFVisionLanguageModel
from covspec.models.families.base import (
    Family,
    TextSize,
    TokenizerSpec,
    VisionGraph,
    image_features_of,
    llama_text_config,
)


class Idefics3Adapter(HFVisionLanguageModel):
    family = "idefics3"
    model_class_name = "Idefics3ForConditionalGeneration"
    uses_processor = True


# -- vision graph: pixel_values [B, N, 3, H, W] + pixel_attention_mask int64 [B, N, H, W] -> [B * N * seq, hidden] --
# Every image given is encoded: the feeds drop all-zero padding images first, as transformers does inside
# get_image_features. SmolVLM shares this tower and this graph.


def _position_ids(patch_mask: Any, side: int) -> Any:
    """transformers' bucketize of fractional patch coordinates, shape-static: bucketize(x, boundaries, right=True) is
    the number of boundaries <= x, with the same float values."""
    import torch

    rows, cols = patch_mask.shape[1], patch_mask.shape[2]
    boundaries = torch.arange(1 / side, 1.0, 1 / side, device=patch_mask.device)
    nb_h = patch_mask[:, :, 0].sum(dim=1).to(torch.float32)
    nb_w = patch_mask[:, 0, :].sum(dim=1).to(torch.float32)
    h_idx = torch.arange(rows, device=patch_mask.device, dtype=torch.float32)
    w_idx = torch.arange(cols, device=patch_mask.device, dtype=torch.float32)
    frac_h = torch.clamp(h_idx[None, :] * (1.0 / nb_h)[:, None], max=1.0 - 1e-6)
    frac_w = torch.clamp(w_idx[None, :] * (1.0 / nb_w)[:, None], max=1.0 - 1e-6)
    bucket_h = (frac_h[..., None] >= boundaries).sum(-1)
    bucket_w = (frac_w[..., None] >= boundaries).sum(-1)
    pos = bucket_h[:, :, None] * side + bucket_w[:, None, :]
    pos = pos.reshape(pos.shape[0], -1)
    return torch.where(patch_mask.reshape(pos.shape[0], -1), pos, torch.zeros_like(pos))


def _encode(parts: Any, config: Any, pixel_values: Any, pixel_attention_mask: Any) -> Any:
    import torch

    vision = parts["tower"]
    patch = int(config.vision_config.patch_size)
    b, n, c, h, w = pixel_values.shape
    pixels = pixel_values.reshape(b * n, c, h, w)
    mask = pixel_attention_mask.reshape(b * n, h // patch, patch, w // patch, patch)
    patch_mask = mask.sum(dim=(2, 4)) > 0
    emb = vision.embeddings
    hidden = emb.patch_embedding(pixels).flatten(2).transpose(1, 2)
    hidden = hidden + emb.position_embedding(_position_ids(patch_mask, int(emb.num_patches_per_side)))
    flat = patch_mask.reshape(b * n, -1)
    bias = torch.zeros(flat.shape, dtype=hidden.dtype, device=hidden.device)
    bias = bias.masked_fill(~flat, torch.finfo(hidden.dtype).min)[:, None, None, :]
    hidden = vision.encoder(inputs_embeds=hidden, attention_mask=bias).last_hidden_state
    hidden = vision.post_layernorm(hidden)
    features = parts["connector"](hidden)
    return features.reshape(-1, features.shape[-1])


def _feeds(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    pixels = np.asarray(batch["pixel_values"], dtype=np.float32)
    b, n = pixels.shape[:2]
    mask = batch.get("pixel_attention_mask")
    mask = np.ones((b, n, *pixels.shape[3:]), np.int64) if mask is None else np.asarray(mask, np.int64)
    real = (pixels.reshape(b * n, -1) != 0).any(axis=1)  # all-zero images are padding, as transformers drops
    pixels = pixels.reshape(b * n, *pixels.shape[2:])[real][None]
    mask = mask.reshape(b * n, *mask.shape[2:])[real][None]
    return {"pixel_values": pixels, "pixel_attention_mask": mask}


def _example(batches: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    pixels = torch.cat([b["pixel_values"] for b in batches], dim=0)  # [2, N, 3, H, W]
    mask = torch.cat([b["pixel_attention_mask"] for b in batches], dim=0).to(torch.long)
    return {"pixel_values": torch.cat([pixels, pixels], dim=1), "pixel_attention_mask": torch.cat([mask, mask], dim=1)}


def _reference(hf_model: Any, batch: dict[str, Any]) -> Any:
    return image_features_of(
        hf_model, pixel_values=batch["pixel_values"], pixel_attention_mask=batch.get("pixel_attention_mask")
    )


VISION = VisionGraph(
    inputs=("pixel_values", "pixel_attention_mask"),
    dynamic_axes=({0: "batch", 1: "num_images"}, {0: "batch", 1: "num_images"}),
    parts=lambda hf: {"tower": hf.model.vision_model, "connector": hf.model.connector},
    encode=_encode,
    reference=_reference,
    feeds=_feeds,
    example=_example,
)


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


# the tile markers of image splitting (Idefics3 and SmolVLM: up to 6 x 6 tiles)
ROW_COL_TOKENS = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
TOKENIZER = TokenizerSpec(
    special_tokens=(
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<pad>",
        "<fake_token_around_image>",
        "<image>",
        "<global-img>",
        *ROW_COL_TOKENS,
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


FAMILY = Family("idefics3", "idefics3", Idefics3Adapter, TOKENIZER, build_tiny, vision=VISION)

__all__ = ["FAMILY", "ROW_COL_TOKENS", "VISION", "Idefics3Adapter"]
