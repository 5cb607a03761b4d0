"""LFM2-VL (``Lfm2VlForConditionalGeneration``): a SigLIP2 NaFlex vision tower, a pixel-unshuffle projector and an
LFM2 decoder, a hybrid of gated short convolutions and grouped-query attention layers.

Prompt and image placement: the chat template is ChatML after ``<|startoftext|>`` with the parts of a turn in order;
the processor resizes each image to a multiple of ``encoder_patch_size * downsample_factor`` within a token budget
(NaFlex: the tower takes the patches of any aspect ratio, padded to ``max_num_patches``, with ``spatial_shapes`` and a
``pixel_attention_mask``) and replaces the ``<image>`` with ``<|image_start|>`` + one ``<image>`` per token +
``<|image_end|>`` (large images are split into tiles with ``<|img_row_r_col_c|>`` markers and a thumbnail; the tiny
checkpoints do not split). Positions are plain sequence positions.

Rollback: an LFM2 conv layer keeps, in place of keys and values, the last ``conv_L_cache`` inputs of its
convolution. A plain ``DynamicCache`` has no conv layers (the model fails on it), and transformers' own conv layer
(``LinearAttentionLayer``) has no sequence length for ``crop_cache`` to read and refuses ``crop`` unless it records its
past; even then its ``crop`` keeps only the last ``conv_L_cache`` inputs, so a later crop further back is wrong. A
sequence therefore uses :func:`rollback_cache`: a config-built ``DynamicCache`` whose conv layers record every
position's convolution input (transformers' past recording, which its own assisted generation uses) and are cropped
by slicing that history, so any crop back to the prompt is exact, as for keys and values. The history costs
``hidden_size`` values per token per conv layer, counted by ``kv_bytes`` (``kv_cache_bytes`` counts conv states) and
``kv_bytes_per_token``.

Not supported: ONNX export. The device decoder graph carries a flat key/value cache per layer; LFM2's conv layers
need their convolution state carried (and rolled back) instead, which that graph has no inputs for.
"""

from __future__ import annotations

import functools
from typing import Any

from covspec.models.common import HFVisionLanguageModel
from covspec.models.families.base import Family, TextSize, TokenizerSpec, tiny_text_fields

# -- cache with exact rollback ---------------------------------------------------------------------------------------


@functools.cache
def _conv_history_layer() -> type:
    """transformers' ``LinearAttentionLayer`` recording every position's conv input, with a sequence length and a
    crop that slices that history (its own crop keeps only the last ``conv_L_cache`` inputs, so a later crop further
    back could not be undone)."""
    from transformers.cache_utils import LinearAttentionLayer

    class ConvHistoryLayer(LinearAttentionLayer):
        def __init__(self, number_of_states: int = 1, **kwargs: Any) -> None:
            super().__init__(number_of_states=number_of_states)
            self.record_past = True  # keep every position; also routes one-token steps through update_conv_state

        def update_conv_state(
            self, conv_states: Any, state_idx: int = 0, conv_kernel_size: int | None = None, **kwargs: Any
        ) -> Any:
            had_state = self.has_previous_state[state_idx]
            full = super().update_conv_state(conv_states, state_idx, conv_kernel_size=conv_kernel_size, **kwargs)
            if not had_state:
                return full
            # the convolution of the new positions reads only the kernel's left context, not the whole history
            return full[..., -(conv_states.shape[-1] + self.conv_kernel_size[state_idx] - 1) :]

        def get_seq_length(self) -> int:
            state = self.conv_states[0]
            return int(state.shape[-1]) if self.has_previous_state[0] and state is not None else 0

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove >= 0:
                return
            for i, state in self.conv_states.items():
                if state is not None and self.has_previous_state[i]:
                    self.conv_states[i] = state[..., :tokens_to_remove]

    return ConvHistoryLayer


def rollback_cache(text_config: Any) -> Any:
    """A ``DynamicCache`` for an LFM2 decoder that ``crop_cache`` rolls back exactly: full key/value layers for the
    attention layers, conv-history layers for the conv layers."""
    from transformers import DynamicCache

    conv_layer = _conv_history_layer()
    cache = DynamicCache(config=text_config)
    cache.layers = [
        conv_layer() if kind == "conv" else layer
        for kind, layer in zip(text_config.layer_types, cache.layers, strict=True)
    ]
    return cache


class Lfm2VlAdapter(HFVisionLanguageModel):
    family = "lfm2_vl"
    model_class_name = "Lfm2VlForConditionalGeneration"
    uses_processor = True

    def empty_cache(self) -> Any:
        return rollback_cache(self.text_config)

    def kv_bytes_per_token(self) -> int:
        """Keys and values of the attention layers plus one conv input per conv layer."""
        import torch

        tc = self.text_config
        kv_heads = getattr(tc, "num_key_value_heads", None) or tc.num_attention_heads
        head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
        attention = sum(1 for kind in tc.layer_types if kind != "conv")
        conv = len(tc.layer_types) - attention
        element = torch.empty((), dtype=self.dtype).element_size()
        return (2 * attention * kv_heads * head_dim + conv * tc.hidden_size) * element


# -- tiny checkpoint ------------------------------------------------------------------------------------------------

# LFM2's ChatML after <|startoftext|>; a turn's parts in their order, images as <image>
_LFM2_VL_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_ROW_COL = tuple(f"<|img_row_{r}_col_{c}|>" for r in range(1, 4) for c in range(1, 4))
TOKENIZER = TokenizerSpec(
    special_tokens=(
        "<|pad|>",
        "<|startoftext|>",
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<image>",
        "<|image_start|>",
        "<|image_end|>",
        "<|img_thumbnail|>",
        *_ROW_COL,
    ),
    named={"bos_token": "<|startoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>"},
    model_specific={
        "image_token": "<image>",
        "image_start_token": "<|image_start|>",
        "image_end_token": "<|image_end|>",
        "image_thumbnail_token": "<|img_thumbnail|>",
    },
    generation_eos=("<|im_end|>", "<|endoftext|>"),
    chat_template=_LFM2_VL_TEMPLATE,
)
# image tokens: 4..16 (target) / 4..9 (drafter), by the image's aspect ratio; patch 4, unshuffle 2
_VISION = {
    "target": {"hidden": 32, "intermediate": 64, "layers": 2, "heads": 2, "min_tokens": 4, "max_tokens": 16},
    "drafter": {"hidden": 16, "intermediate": 32, "layers": 1, "heads": 1, "min_tokens": 4, "max_tokens": 9},
}
_PATCH = 4
_FACTOR = 2


def lfm2_layer_types(layers: int) -> list[str]:
    """Conv layers with attention every other layer from the second on (LFM2 interleaves them; at least one of each)."""
    return ["full_attention" if i % 2 == 1 else "conv" for i in range(max(layers, 2))][:layers]


def build_tiny(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    from transformers import (
        Lfm2Config,
        Lfm2VlConfig,
        Lfm2VlForConditionalGeneration,
        Lfm2VlImageProcessor,
        Lfm2VlProcessor,
        Siglip2VisionConfig,
    )

    v = _VISION[size]
    max_patches = v["max_tokens"] * _FACTOR**2
    vision = Siglip2VisionConfig(
        hidden_size=v["hidden"],
        intermediate_size=v["intermediate"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"],
        patch_size=_PATCH,
        num_patches=max_patches,
        vision_use_head=False,
    )
    text_config = Lfm2Config(
        **tiny_text_fields(text, ids, bos=ids["bos"]),
        layer_types=lfm2_layer_types(text.layers),
        block_auto_adjust_ff_dim=False,  # keep intermediate_size as given
    )
    config = Lfm2VlConfig(
        vision_config=vision,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_size=2 * text.hidden,
        downsample_factor=_FACTOR,
        tie_word_embeddings=False,
    )
    model = Lfm2VlForConditionalGeneration(config)
    image_processor = Lfm2VlImageProcessor(
        do_image_splitting=False,
        min_image_tokens=v["min_tokens"],
        max_image_tokens=v["max_tokens"],
        encoder_patch_size=_PATCH,
        downsample_factor=_FACTOR,
        tile_size=_PATCH * _FACTOR * 2,
    )
    processor = Lfm2VlProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=_LFM2_VL_TEMPLATE)
    return model, processor


NO_EXPORT = (
    "LFM2's short-convolution layers keep a convolution state per layer, not keys and values: the device decoder "
    "graph's flat key/value cache has no inputs or outputs to carry it (or roll it back)"
)

FAMILY = Family("lfm2_vl", "lfm2_vl", Lfm2VlAdapter, TOKENIZER, build_tiny, vision=None, no_export=NO_EXPORT)

__all__ = ["FAMILY", "Lfm2VlAdapter", "lfm2_layer_types", "rollback_cache"]
