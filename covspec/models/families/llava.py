"""LLaVA (``LlavaForConditionalGeneration``): a CLIP-style vision tower, a projector, a Llama-style decoder.

The processor expands the one ``<image>`` of the chat template into one placeholder per visual token
(``(image_size / patch_size)**2``, less the CLS token under the "default" feature strategy). Positions are plain
sequence positions, so the shared sequence machinery is used as is.
"""

from __future__ import annotations

from typing import Any

from covspec.models.common import HFVisionLanguageModel
from covspec.models.families.base import (
    Family,
    TextSize,
    TokenizerSpec,
    VisionGraph,
    image_features_of,
    llama_text_config,
)


class LlavaAdapter(HFVisionLanguageModel):
    family = "llava"
    model_class_name = "LlavaForConditionalGeneration"
    batched_prefill = True  # plain positions, one pixel_values tensor per image of one size: prompts prefill together
    uses_processor = True


# -- vision graph ----------------------------------------------------------------------------------------------------


def select_features(config: Any, hidden_states: Any) -> Any:
    """The vision tower's feature layer(s) under the config's strategy ("default" drops CLS), concatenated: what the
    projector reads. LLaVA-NeXT and LLaVA-OneVision select the same way."""
    import torch

    layer = config.vision_feature_layer
    layers = [layer] if isinstance(layer, int) else list(layer)
    selected = [hidden_states[i] for i in layers]
    if config.vision_feature_select_strategy == "default":
        selected = [h[:, 1:] for h in selected]
    return torch.cat(selected, dim=-1)


def _encode(parts: Any, config: Any, pixel_values: Any) -> Any:
    # get_image_features ends in list(features), which iterates over (and so fixes) the batch: done by hand here
    out = parts["tower"](pixel_values, output_hidden_states=True, return_dict=True)
    features = parts["projector"](select_features(config, out.hidden_states))
    return features.reshape(-1, features.shape[-1])


def feature_reference(hf_model: Any, batch: dict[str, Any], **inputs: Any) -> Any:
    """``get_image_features`` with the config's feature layer and strategy (LLaVA and the families built like it)."""
    config = hf_model.config
    return image_features_of(
        hf_model,
        pixel_values=batch["pixel_values"],
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        **inputs,
    )


VISION = VisionGraph(
    inputs=("pixel_values",),
    dynamic_axes=({0: "batch"},),
    encode=_encode,
    reference=feature_reference,
)


# -- tiny checkpoint ------------------------------------------------------------------------------------------------

# LLaVA-1.5's chat format (``USER: <image>\n... ASSISTANT:``); the demo pair's processor uses it too
LLAVA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] | upper }}: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

TOKENIZER = TokenizerSpec(
    special_tokens=("<unk>", "<s>", "</s>", "<pad>", "<image>"),
    named={"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
    model_specific={"image_token": "<image>"},
    generation_eos=("</s>",),
    chat_template=LLAVA_TEMPLATE,
)
# image tokens: 16 (target) / 4 (drafter)
_VISION = {
    "target": {"hidden": 32, "intermediate": 64, "layers": 2, "heads": 2, "image": 32, "patch": 8},
    "drafter": {"hidden": 16, "intermediate": 32, "layers": 1, "heads": 1, "image": 32, "patch": 16},
}


def clip_vision_config(v: dict[str, int]) -> Any:
    """A tiny CLIP vision tower of the sizes ``v`` (hidden, intermediate, layers, heads, image, patch)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=v["hidden"],
        intermediate_size=v["intermediate"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"],
        image_size=v["image"],
        patch_size=v["patch"],
        projection_dim=v["hidden"],
    )


def build_tiny(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    v = _VISION[size]
    vision = clip_vision_config(v)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    n_image = (v["image"] // v["patch"]) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=llama_text_config(text, ids),
        image_token_index=image_token_id,
        image_seq_length=n_image,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2 if v["layers"] > 1 else -1,
        projector_hidden_act="gelu",
    )
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": v["image"]},
        crop_size={"height": v["image"], "width": v["image"]},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=v["patch"],
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS, dropped by the "default" strategy
        chat_template=LLAVA_TEMPLATE,
    )
    return model, processor


def image_geometry(config: Any, processor: Any) -> Any:
    """The processor for a tower of ``config.vision_config``'s image and patch size: a square crop of that size,
    ``(image / patch)**2`` tokens per image."""
    v = config.vision_config
    config.image_seq_length = (v.image_size // v.patch_size) ** 2
    old = processor.image_processor
    processor.image_processor = type(old)(
        **{
            **old.to_dict(),
            "size": {"shortest_edge": v.image_size},
            "crop_size": {"height": v.image_size, "width": v.image_size},
        }
    )
    processor.patch_size = v.patch_size
    return processor


FAMILY = Family("llava", "llava", LlavaAdapter, TOKENIZER, build_tiny, vision=VISION, image_geometry=image_geometry)

__all__ = [
    "FAMILY",
    "LLAVA_TEMPLATE",
    "VISION",
    "LlavaAdapter",
    "clip_vision_config",
    "feature_reference",
    "image_geometry",
    "select_features",
]
