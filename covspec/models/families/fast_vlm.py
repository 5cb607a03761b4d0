"""FastVLM (``FastVlmForConditionalGeneration``): a FastViTHD vision encoder, a two-layer projector, a Qwen2 decoder.

The vision tower is timm's ``fastvit_mci3`` (FastViTHD: a reparameterized convolutional stem and stages, the last two
with attention) behind transformers' ``TimmWrapperModel``, so loading one needs the ``timm`` package. It downsamples
by 64 and its final feature map, flattened row by row, is the image's token sequence: a 1024 x 1024 image gives 256
tokens. There is no CLS token and no layer selection (the config allows only the last layer and the "full" strategy).

The processor is a plain ``LlavaProcessor`` (``CLIPImageProcessor`` with mean 0 and std 1, ``patch_size`` 64), which
expands the one ``<image>`` of the chat template into ``(side / 64)**2`` placeholders. The chat template is Qwen2's
ChatML with its default system turn; the images of a turn come first, then ``"\\n"`` and the text. Positions are plain
sequence positions, so the shared sequence machinery is used as is.

Supported: speculative decoding (a plain key/value cache) and ONNX export: the vision graph is the tower's final
feature map through the projector, shape-static (the processor crops every image to one square size; the batch is
dynamic). Multi-image prompts work as in transformers (one block of placeholders per ``<image>``).
"""

from __future__ import annotations

from typing import Any

from covspec.models.common import HFVisionLanguageModel
from covspec.models.families.base import (
    Family,
    TextSize,
    TokenizerSpec,
    VisionGraph,
    tiny_text_fields,
)


class FastVlmAdapter(HFVisionLanguageModel):
    family = "fast_vlm"
    model_class_name = "FastVlmForConditionalGeneration"
    uses_processor = True


# -- vision graph: pixel_values [B, 3, S, S] -> [B * (S / 64)**2, hidden] --------------------------------------------


def _encode(parts: Any, config: Any, pixel_values: Any) -> Any:
    features = parts["tower"](pixel_values, do_pooling=False, return_dict=True).last_hidden_state  # [B, C, h, w]
    features = parts["projector"](features.flatten(2).permute(0, 2, 1))
    return features.reshape(-1, features.shape[-1])


VISION = VisionGraph(
    inputs=("pixel_values",),
    dynamic_axes=({0: "batch"},),
    encode=_encode,
)


# -- tiny checkpoint ------------------------------------------------------------------------------------------------

# Qwen2's ChatML with the default system turn; a turn's images first, then each text after a newline (FastVLM's own)
_FAST_VLM_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for item in message['content'] if item['type'] == 'image' %}<image>{% endfor %}"
    "{% for item in message['content'] if item['type'] == 'text' %}{{ '\\n' + item['text'] }}{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TOKENIZER = TokenizerSpec(
    special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"),
    named={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    model_specific={"image_token": "<image>"},
    generation_eos=("<|im_end|>", "<|endoftext|>"),
    chat_template=_FAST_VLM_TEMPLATE,
)

_DOWNSAMPLE = 64  # FastViTHD: stem / 4, then four stride-2 stages
# image tokens: (image / 64)**2 = 16 (target) / 4 (drafter). Five stages as fastvit_mci3 (its positional encodings
# and token mixers are per stage); the attention stages need widths in multiples of its head size, 32.
_VISION = {
    "target": {"image": 256, "dims": (16, 16, 32, 32, 32)},
    "drafter": {"image": 128, "dims": (8, 8, 16, 32, 32)},
}


def qwen2_text_config(t: TextSize, ids: dict[str, Any]) -> Any:
    """A tiny ``Qwen2Config`` of size ``t`` (no BOS, as Qwen2)."""
    from transformers import Qwen2Config

    return Qwen2Config(
        **tiny_text_fields(t, ids, bos=None),
        rms_norm_eps=1e-6,
    )


def _fan_in_init(*modules: Any) -> None:
    """Re-draw conv and linear weights with a fan-in (He) scale. With transformers' std of 0.02 and FastViT's layer
    scale of 1e-5, a random tiny FastViTHD's features come out near 1e-22: the image would change no logit, and
    neither the tests nor the ONNX validation would see the vision path. This keeps them of order one."""
    import torch

    for module in modules:
        for layer in module.modules():
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")


def build_tiny(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    from transformers import (
        CLIPImageProcessor,
        FastVlmConfig,
        FastVlmForConditionalGeneration,
        LlavaProcessor,
        TimmWrapperConfig,
    )

    v = _VISION[size]
    dims = list(v["dims"])
    vision = TimmWrapperConfig(
        architecture="fastvit_mci3",
        hidden_size=2 * dims[-1],  # the final conv doubles the last stage's width
        do_pooling=True,
        global_pool="avg",
        model_args={
            "inference_mode": True,
            "layers": [1] * len(dims),
            "embed_dims": dims,
            "mlp_ratios": [2] * len(dims),
            "layer_scale_init_value": 1.0,
        },
    )
    n_image = (v["image"] // _DOWNSAMPLE) ** 2
    config = FastVlmConfig(
        vision_config=vision,
        text_config=qwen2_text_config(text, ids),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=n_image,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    model = FastVlmForConditionalGeneration(config)
    _fan_in_init(model.model.vision_tower, model.model.multi_modal_projector)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": v["image"]},
        crop_size={"height": v["image"], "width": v["image"]},
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=_DOWNSAMPLE,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        chat_template=_FAST_VLM_TEMPLATE,
    )
    return model, processor


FAMILY = Family("fast_vlm", "fast_vlm", FastVlmAdapter, TOKENIZER, build_tiny, vision=VISION)

__all__ = ["FAMILY", "VISION", "FastVlmAdapter", "qwen2_text_config"]
