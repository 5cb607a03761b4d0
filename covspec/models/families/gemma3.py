"""Gemma 3 (``Gemma3ForConditionalGeneration``): a SigLIP vision tower, an average-pool projector, a Gemma 3 decoder.

Prompt: Gemma's chat format (``<bos><start_of_turn>user\\n...<end_of_turn>\\n<start_of_turn>model\\n``); the template
writes ``<start_of_image>`` where the image goes and ``Gemma3Processor`` expands it into the image block
``\\n\\n<start_of_image>`` + ``<image_soft_token>`` * ``mm_tokens_per_image`` + ``<end_of_image>\\n\\n``. The soft
tokens are the placeholders (``image_token_id``); the projector average-pools the tower's patch grid down to
``mm_tokens_per_image`` tokens, so every image gives the same count (pan-and-scan crops are off).

Positions are plain sequence positions. The decoder embeds tokens scaled by ``sqrt(hidden)`` (``EmbedTokens`` uses
the model's own embedding, so the ONNX graph scales too) and alternates sliding-window and full attention layers.

Attention: during prefill the tokens of one image attend to each other bidirectionally; transformers drives it with
the processor's ``token_type_ids`` (1 on soft tokens). The torch prefill passes every processor output but the
attention mask, so ``token_type_ids`` reaches the model there as in ``generate()``'s first step; later steps (extend)
are causal, as ``generate()`` is (it drops ``token_type_ids`` after the first step). The ONNX decoder graph of this
family has one more input, ``token_type_ids`` [batch, total] (``Family.decoder_token_types``): the prompt's types in
prefill, zeros afterwards; the graph builds its masks with the model's own ``create_masks_for_generate``
(``DecoderWithTokenTypes``), so prefill is block-bidirectional exactly as in PyTorch.

Sliding windows: ``HFSequence`` uses a config-less ``DynamicCache`` (every layer keeps every position, so crop can
roll back), and the mask applies the window. The tiny checkpoints' window (512) is larger than any test context, so
they do not exercise eviction; ``generate()``'s config-built sliding cache gives the same attention either way.
"""

from __future__ import annotations

from typing import Any

from covspec.models.common import HFVisionLanguageModel
from covspec.models.families.base import (
    TEXT_INIT_RANGE,
    Family,
    TextSize,
    TokenizerSpec,
    VisionGraph,
    tiny_text_fields,
)


class Gemma3Adapter(HFVisionLanguageModel):
    family = "gemma3"
    model_class_name = "Gemma3ForConditionalGeneration"
    uses_processor = True


# -- vision graph: pixel_values [B, 3, H, W] -> [B * mm_tokens_per_image, hidden] ---------------------------------


def _encode(parts: Any, config: Any, pixel_values: Any) -> Any:
    hidden = parts["tower"](pixel_values=pixel_values, return_dict=True).last_hidden_state
    features = parts["projector"](hidden)
    return features.reshape(-1, features.shape[-1])


VISION = VisionGraph(
    inputs=("pixel_values",),
    dynamic_axes=({0: "batch"},),
    encode=_encode,
)


# -- tiny checkpoint ------------------------------------------------------------------------------------------------

# Gemma 3's chat format: a system message is folded into the first user turn, the assistant's role is "model"
_GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% if messages[0]['content'] is string %}{% set first_user_prefix = messages[0]['content'] + '\n\n' %}"
    "{% else %}{% set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' %}{% endif %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

TOKENIZER = TokenizerSpec(
    special_tokens=(
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
    ),
    named={"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"},
    model_specific={
        "image_token": "<image_soft_token>",
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
    },
    generation_eos=("<eos>", "<end_of_turn>"),
    chat_template=_GEMMA3_TEMPLATE,
)
# image tokens: 16 (target: 8x8 patches pooled 2x2) / 4 (drafter: 4x4 patches pooled 2x2)
_VISION = {
    "target": {"hidden": 32, "intermediate": 64, "layers": 2, "heads": 2, "image": 32, "patch": 4, "tokens": 16},
    "drafter": {"hidden": 16, "intermediate": 32, "layers": 1, "heads": 1, "image": 32, "patch": 8, "tokens": 4},
}
SLIDING_WINDOW = 512  # larger than any test context (see the module docstring)


def _layer_types(layers: int) -> list[str]:
    """Gemma 3's pattern (five sliding layers, then a full one) scaled down: the last layer is full, the rest slide."""
    return ["sliding_attention"] * (layers - 1) + ["full_attention"]


def build_tiny(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    import torch
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    v = _VISION[size]
    conv = tokenizer.convert_tokens_to_ids
    head_dim = text.hidden // text.heads
    text_config = Gemma3TextConfig(
        **tiny_text_fields(text, ids, bos=ids["bos"]),
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        rms_norm_eps=1e-6,
        sliding_window=SLIDING_WINDOW,
        layer_types=_layer_types(text.layers),
    )
    vision_config = SiglipVisionConfig(
        hidden_size=v["hidden"],
        intermediate_size=v["intermediate"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"],
        image_size=v["image"],
        patch_size=v["patch"],
        vision_use_head=False,
    )
    config = Gemma3Config(
        text_config=text_config,
        vision_config=vision_config,
        mm_tokens_per_image=v["tokens"],
        boi_token_index=conv("<start_of_image>"),
        eoi_token_index=conv("<end_of_image>"),
        image_token_index=conv("<image_soft_token>"),
        initializer_range=TEXT_INIT_RANGE,
        tie_word_embeddings=False,
    )
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():  # transformers initialises the projection to zeros: images would change nothing
        projection = model.model.multi_modal_projector.mm_input_projection_weight
        projection.normal_(0.0, v["hidden"] ** -0.5)
    image_processor = Gemma3ImageProcessor(
        size={"height": v["image"], "width": v["image"]},
        do_pan_and_scan=False,
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=v["tokens"],
        chat_template=_GEMMA3_TEMPLATE,
    )
    return model, processor


FAMILY = Family("gemma3", "gemma3", Gemma3Adapter, TOKENIZER, build_tiny, vision=VISION, decoder_token_types=True)

__all__ = ["FAMILY", "VISION", "Gemma3Adapter"]
