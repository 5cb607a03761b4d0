"""``torch.nn.Module`` wrappers with flat tensor inputs and outputs, one per exported graph.

The decoder wrapper rebuilds transformers' ``DynamicCache`` from the flat ``past_key_values.{i}.key/value`` tensors
and returns the grown layers as ``present.{i}.key/value``: one graph serves prefill (past length 0) and decode.

The vision graph is each family's own (``Family.vision`` in ``covspec.models.families``): it returns exactly the
embeddings that replace the image placeholder tokens, in order, with shape-static tensor arithmetic where the
transformers code branches on tensor values; export validation compares it with the model's own
``get_image_features``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from covspec.models.families import VisionGraph, family_named


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
        cache = self._cache(past)
        out = self.decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
        )
        return self._outputs(out)

    def _cache(self, past: tuple[torch.Tensor, ...]) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        return cache

    def _outputs(self, out: Any) -> tuple[torch.Tensor, ...]:
        logits = self.lm_head(out.last_hidden_state)
        presents: list[torch.Tensor] = []
        for layer in out.cache.layers:
            presents += [layer.keys, layer.values]
        return (logits, *presents)


class DecoderWithTokenTypes(DecoderWithPast):
    """``DecoderWithPast`` plus ``token_type_ids`` [B, total] (1 on image tokens, over the past and the new tokens):
    the model's own ``create_masks_for_generate`` turns them into its masks (Gemma 3: the tokens of one image attend
    to each other bidirectionally; all zeros gives the plain causal / sliding-window masks)."""

    def __init__(self, hf_model: Any) -> None:
        super().__init__(hf_model)
        self.config = hf_model.config
        self.make_masks = type(hf_model).create_masks_for_generate

    def forward(  # type: ignore[override]
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        past: tuple[torch.Tensor, ...],
    ) -> tuple[torch.Tensor, ...]:
        cache = self._cache(past)
        masks = self.make_masks(
            self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
            token_type_ids=token_type_ids,
        )
        out = self.decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=masks,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
        )
        return self._outputs(out)


class VisionEncoder(nn.Module):
    """A family's vision graph (``Family.vision``) as a module holding only the vision weights it names."""

    def __init__(self, hf_model: Any, graph: VisionGraph) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(graph.parts(hf_model))
        self.config = hf_model.config
        self.graph = graph

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.graph.encode(self.parts, self.config, *inputs)


def reference_image_features(hf_model: Any, family: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's own ``get_image_features`` on a processor batch, flattened to [n_image_tokens, hidden]."""
    graph = family_named(family).vision
    if graph is None:
        raise ValueError(f"no vision graph in family {family!r}")
    return graph.reference(hf_model, batch)


__all__ = [
    "DecoderWithPast",
    "DecoderWithTokenTypes",
    "EmbedTokens",
    "VisionEncoder",
    "kv_layout",
    "reference_image_features",
    "text_config",
]
