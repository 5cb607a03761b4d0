"""``torch.nn.Module`` wrappers with flat tensor inputs and outputs, one per exported graph.

The decoder wrapper rebuilds transformers' ``DynamicCache`` from the flat ``past_key_values.{i}.key/value`` tensors
and returns the grown layers as ``present.{i}.key/value``: one graph serves prefill (past length 0) and decode.

Vision wrappers return exactly the embeddings that replace the image placeholder tokens, in order. Where the
transformers code branches on tensor values (Qwen2-VL splits attention per frame with ``.tolist()``; Idefics3 picks
position ids with ``bucketize`` and drops padding images), the wrapper computes the same thing with shape-static
tensor arithmetic; export validation compares it with the model's own ``get_image_features``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def text_config(hf_model: Any) -> Any:
    return hf_model.config.get_text_config(decoder=True)


def kv_layout(hf_model: Any) -> tuple[int, int, int]:
    """(num_layers, num_kv_heads, head_dim) of the language model."""
    tc = text_config(hf_model)
    heads = tc.num_attention_heads
    kv_heads = getattr(tc, "num_key_value_heads", None) or heads
    head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // heads
    return int(tc.num_hidden_layers), int(kv_heads), int(head_dim)


class EmbedTokens(nn.Module):
    """``input_ids`` [B, S] -> ``inputs_embeds`` [B, S, hidden] (the model's own input embedding, scaling included)."""

    def __init__(self, hf_model: Any) -> None:
        super().__init__()
        self.embed = hf_model.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids)


class DecoderWithPast(nn.Module):
    """Language model + LM head over ``inputs_embeds`` with an explicit flat KV cache."""

    def __init__(self, hf_model: Any) -> None:
        super().__init__()
        self.decoder = hf_model.get_decoder()
        self.lm_head = hf_model.get_output_embeddings()
        self.num_layers = kv_layout(hf_model)[0]

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: tuple[torch.Tensor, ...],
    ) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
        )
        logits = self.lm_head(out.last_hidden_state)
        presents: list[torch.Tensor] = []
        for layer in out.cache.layers:
            presents += [layer.keys, layer.values]
        return (logits, *presents)


class LlavaVision(nn.Module):
    """``pixel_values`` [B, 3, H, W] -> ``image_features`` [B * tokens_per_image, hidden]."""

    def __init__(self, hf_model: Any) -> None:
        super().__init__()
        self.model = hf_model.model
        self.layer = hf_model.config.vision_feature_layer
        self.strategy = hf_model.config.vision_feature_select_strategy

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # get_image_features ends in list(features), which iterates over (and so fixes) the batch: done by hand here
        out = self.model.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
        layers = [self.layer] if isinstance(self.layer, int) else list(self.layer)
        selected = [out.hidden_states[i] for i in layers]
        if self.strategy == "default":
            selected = [h[:, 1:] for h in selected]
        features = self.model.multi_modal_projector(torch.cat(selected, dim=-1))
        return features.reshape(-1, features.shape[-1])


class Idefics3Vision(nn.Module):
    """``pixel_values`` [B, N, 3, H, W] + ``pixel_attention_mask`` int64 [B, N, H, W] -> [B * N * seq, hidden].

    Every image given is encoded: the caller drops all-zero padding images first (the engine does, as transformers
    does inside ``get_image_features``).
    """

    def __init__(self, hf_model: Any) -> None:
        super().__init__()
        self.vision = hf_model.model.vision_model
        self.connector = hf_model.model.connector
        self.patch = int(hf_model.config.vision_config.patch_size)
        self.side = int(self.vision.embeddings.num_patches_per_side)

    def _position_ids(self, patch_mask: torch.Tensor) -> torch.Tensor:
        # torch.bucketize(x, boundaries, right=True) == number of boundaries <= x, with the same float values
        rows, cols = patch_mask.shape[1], patch_mask.shape[2]
        boundaries = torch.arange(1 / self.side, 1.0, 1 / self.side, device=patch_mask.device)
        nb_h = patch_mask[:, :, 0].sum(dim=1).to(torch.float32)
        nb_w = patch_mask[:, 0, :].sum(dim=1).to(torch.float32)
        h_idx = torch.arange(rows, device=patch_mask.device, dtype=torch.float32)
        w_idx = torch.arange(cols, device=patch_mask.device, dtype=torch.float32)
        frac_h = torch.clamp(h_idx[None, :] * (1.0 / nb_h)[:, None], max=1.0 - 1e-6)
        frac_w = torch.clamp(w_idx[None, :] * (1.0 / nb_w)[:, None], max=1.0 - 1e-6)
        bucket_h = (frac_h[..., None] >= boundaries).sum(-1)
        bucket_w = (frac_w[..., None] >= boundaries).sum(-1)
        pos = bucket_h[:, :, None] * self.side + bucket_w[:, None, :]
        pos = pos.reshape(pos.shape[0], -1)
        return torch.where(patch_mask.reshape(pos.shape[0], -1), pos, torch.zeros_like(pos))

    def forward(self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = pixel_values.shape
        pixels = pixel_values.reshape(b * n, c, h, w)
        mask = pixel_attention_mask.reshape(b * n, h // self.patch, self.patch, w // self.patch, self.patch)
        patch_mask = mask.sum(dim=(2, 4)) > 0
        emb = self.vision.embeddings
        hidden = emb.patch_embedding(pixels).flatten(2).transpose(1, 2)
        hidden = hidden + emb.position_embedding(self._position_ids(patch_mask))
        flat = patch_mask.reshape(b * n, -1)
        bias = torch.zeros(flat.shape, dtype=hidden.dtype, device=hidden.device)
        bias = bias.masked_fill(~flat, torch.finfo(hidden.dtype).min)[:, None, None, :]
        hidden = self.vision.encoder(inputs_embeds=hidden, attention_mask=bias).last_hidden_state
        hidden = self.vision.post_layernorm(hidden)
        features = self.connector(hidden)
        return features.reshape(-1, features.shape[-1])


class Qwen2VLVision(nn.Module):
    """``pixel_values`` [n_patches, C*T*P*P] + ``image_grid_thw`` int64 [n_images, 3] -> [n_patches / merge², hidden].

    Attention is restricted to each frame of each image by an additive mask built from per-patch segment ids, in place
    of transformers' per-chunk ``split`` over ``cu_seqlens.tolist()``.
    """

    def __init__(self, hf_model: Any) -> None:
        super().__init__()
        self.visual = hf_model.model.visual
        self.merge = int(self.visual.spatial_merge_size)

    def _layout(self, n: int, grid: torch.Tensor, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
        t, h, w = grid[:, 0], grid[:, 1], grid[:, 2]
        sizes = t * h * w
        ends = torch.cumsum(sizes, dim=0)
        idx = torch.arange(n, device=device)
        image = (idx[:, None] >= ends[None, :]).sum(-1)
        local = idx - (ends - sizes)[image]
        frame_len = (h * w)[image]
        frame = local // frame_len
        within_frame = local % frame_len
        m = self.merge
        blocks_w = w[image] // m
        block, within = within_frame // (m * m), within_frame % (m * m)
        hpos = (block // blocks_w) * m + within // m
        wpos = (block % blocks_w) * m + within % m
        segment = image * (torch.max(t) + 1) + frame
        return torch.stack([hpos, wpos], dim=-1), segment

    def forward(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

        visual = self.visual
        n = pixel_values.shape[0]
        positions, segment = self._layout(n, image_grid_thw, pixel_values.device)
        hidden = visual.patch_embed(pixel_values)
        cos, sin = visual.rotary_pos_emb(hidden, positions)
        same = segment[:, None] == segment[None, :]
        bias = torch.zeros(same.shape, dtype=torch.float32, device=hidden.device)
        bias = bias.masked_fill(~same, torch.finfo(torch.float32).min)
        for blk in visual.blocks:
            attn = blk.attn
            x = blk.norm1(hidden)
            q, k, v = attn.qkv(x).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
            q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
            q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # [heads, n, head_dim]
            weights = torch.matmul(q, k.transpose(1, 2)) * attn.scaling + bias
            weights = torch.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype)
            out = torch.matmul(weights, v).transpose(0, 1).reshape(n, -1)
            hidden = hidden + attn.proj(out)
            hidden = hidden + blk.mlp(blk.norm2(hidden))
        return visual.merger(hidden)


VISION_WRAPPERS: dict[str, type[nn.Module]] = {
    "llava": LlavaVision,
    "idefics3": Idefics3Vision,
    "qwen2_vl": Qwen2VLVision,
}


def reference_image_features(hf_model: Any, family: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's own ``get_image_features`` on a processor batch, flattened to [n_image_tokens, hidden]."""
    model = hf_model.model
    if family == "llava":
        out = model.get_image_features(
            pixel_values=batch["pixel_values"],
            vision_feature_layer=hf_model.config.vision_feature_layer,
            vision_feature_select_strategy=hf_model.config.vision_feature_select_strategy,
        )
    elif family == "qwen2_vl":
        out = model.get_image_features(pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"])
    elif family == "idefics3":
        out = model.get_image_features(
            pixel_values=batch["pixel_values"], pixel_attention_mask=batch.get("pixel_attention_mask")
        )
    else:
        raise ValueError(f"no vision tower in family {family!r}")
    return torch.cat([f.reshape(-1, f.shape[-1]) for f in out.pooler_output], dim=0)


__all__ = [
    "VISION_WRAPPERS",
    "DecoderWithPast",
    "EmbedTokens",
    "Idefics3Vision",
    "LlavaVision",
    "Qwen2VLVision",
    "kv_layout",
    "reference_image_features",
    "text_config",
]
