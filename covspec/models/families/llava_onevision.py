"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): SigLIP tower, 2-layer projector, Qwen2 decoder, in
the style of ``llava-hf/llava-onevision-qwen2-0.5b-ov-hf`` (``<|im_start|>user <image>\\n...<|im_end|>``).

Images go through LLaVA-NeXT's "anyres" tiling (see ``covspec.models.families.llava_next``): a base tile, then the
tiles of the best ``image_grid_pinpoints`` grid laid out as one map, unpadded to the image's aspect ratio, with
``image_newline`` after each row. OneVision adds *anyres_max_N* (``vision_aspect_ratio``): an unpadded map of more
than N tiles' worth of features (by a factor sqrt > 1.1) is shrunk bilinearly to about N tiles' worth. The
processor counts the placeholders the same way (single-image prompts; a multi-image prompt would use the base tile
only, which the one-image-per-prompt paths here never produce). Positions are plain sequence positions. Videos are
not used (the tiny processor has the real video processor, but no path here feeds it; a device without torchvision
gets ``images_only_processor``).

The ONNX vision graph is LLaVA-NeXT's, with the pooling as shape-static tensor arithmetic (PyTorch's bilinear,
``align_corners=False``, as gathers of the four neighbours): it covers every grid and image size, pooled or not,
one image per call (the feeds refuse more). The tiny checkpoints use tiles of 12 px, grids up to 2x2 and
anyres_max_2 (the real ones: 384 px, up to 6x6, anyres_max_9), so that both the pooled and the unpooled paths occur.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from covspec.models.common import HFVisionLanguageModel
from covspec.models.families.base import (
    Family,
    TextSize,
    TokenizerSpec,
    VisionGraph,
    saved_processor,
    tiny_text_fields,
)
from covspec.models.families.llava import feature_reference
from covspec.models.families.llava_next import anyres_example, anyres_features, anyres_feeds, anyres_parts

logger = logging.getLogger(__name__)


class LlavaOnevisionAdapter(HFVisionLanguageModel):
    family = "llava_onevision"
    model_class_name = "LlavaOnevisionForConditionalGeneration"
    uses_processor = True


# -- vision graph: pixel_values [num_tiles, 3, S, S] + image_sizes int64 [1, 2] -> [n_image_tokens, hidden] ----------


def max_num_patches(config: Any) -> int:
    """N of ``vision_aspect_ratio`` "anyres_max_N"."""
    aspect = str(config.vision_aspect_ratio)
    if not aspect.startswith("anyres_max_"):
        raise ValueError(f"vision_aspect_ratio {aspect!r} is not anyres_max_N")
    return int(aspect.removeprefix("anyres_max_"))


def _encode(parts: Any, config: Any, pixel_values: Any, image_sizes: Any) -> Any:
    return anyres_features(parts, config, pixel_values, image_sizes, max_num_patches(config))


def _reference(hf_model: Any, batch: dict[str, Any]) -> Any:
    return feature_reference(
        hf_model,
        batch,
        image_sizes=batch["image_sizes"],
        vision_aspect_ratio=hf_model.config.vision_aspect_ratio,
        batch_num_images=batch.get("batch_num_images"),
    )


VISION = VisionGraph(
    inputs=("pixel_values", "image_sizes"),
    dynamic_axes=({0: "num_tiles"}, {}),
    parts=anyres_parts,
    encode=_encode,
    reference=_reference,
    feeds=anyres_feeds,
    example=anyres_example,
)


_PROCESSOR_SETTINGS = ("num_image_tokens", "vision_feature_select_strategy", "vision_aspect_ratio")


def images_only_processor(root: Path) -> Any:
    """The bundle's processor without torchvision (the video processor needs it): transformers finds a processor's
    parts from the names of its ``__init__`` parameters, so a subclass whose ``__init__`` has no ``video_processor``
    loads images only; the image placeholder count is the parent's own."""
    from transformers import LlavaOnevisionProcessor
    from transformers.processing_utils import ProcessorMixin

    class LlavaOnevisionImagesOnlyProcessor(LlavaOnevisionProcessor):
        def __init__(
            self,
            image_processor: Any = None,
            tokenizer: Any = None,
            num_image_tokens: int | None = None,
            vision_feature_select_strategy: str | None = None,
            chat_template: Any = None,
            vision_aspect_ratio: str = "anyres_max_9",
            **kwargs: Any,
        ) -> None:
            self.num_image_tokens = num_image_tokens
            self.vision_feature_select_strategy = vision_feature_select_strategy
            self.vision_aspect_ratio = vision_aspect_ratio
            self.image_token = getattr(tokenizer, "image_token", None) or "<image>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<video>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    logger.info("%s: no torchvision, so the video processor is left out (images only)", root)
    parts = saved_processor(root)
    return LlavaOnevisionImagesOnlyProcessor(
        image_processor=parts.image_processor,
        tokenizer=parts.tokenizer,
        chat_template=parts.chat_template,
        **{key: parts.settings[key] for key in _PROCESSOR_SETTINGS if key in parts.settings},
    )


# -- tiny checkpoint ------------------------------------------------------------------------------------------------

# llava-onevision-qwen2's chat format: images, then videos, then "\n" + text, after "<|im_start|>role "
_ONEVISION_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }} "
    "{% if message['content'] is string %}{{ '\\n' + message['content'] }}"
    "{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'video' %}<video>{% endif %}{% endfor %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ '\\n' + item['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TOKENIZER = TokenizerSpec(
    special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"),
    named={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    model_specific={"image_token": "<image>", "video_token": "<video>"},
    generation_eos=("<|im_end|>", "<|endoftext|>"),
    chat_template=_ONEVISION_TEMPLATE,
)
# tiles of 12 px on grids 1x1 .. 2x2, anyres_max_2: a 2x2 map is pooled when little of it is padding.
# image tokens: <= 9 + 36 + 6 = 51 before pooling (target, p = 3) / <= 4 + 16 + 4 = 24 (drafter, p = 2)
_PINPOINTS = [[12 * r, 12 * c] for r in (1, 2) for c in (1, 2)]
_ASPECT = "anyres_max_2"
_VISION = {
    "target": {"hidden": 32, "intermediate": 64, "layers": 2, "heads": 2, "image": 12, "patch": 4},
    "drafter": {"hidden": 16, "intermediate": 32, "layers": 1, "heads": 1, "image": 12, "patch": 6},
}


def qwen2_text_config(t: TextSize, ids: dict[str, Any]) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(
        **tiny_text_fields(t, ids, bos=ids["eos"][1]),
        rms_norm_eps=1e-6,
        use_sliding_window=False,
    )


def build_tiny(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        SiglipVisionConfig,
    )

    v = _VISION[size]
    vision = SiglipVisionConfig(
        hidden_size=v["hidden"],
        intermediate_size=v["intermediate"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"],
        image_size=v["image"],
        patch_size=v["patch"],
        vision_use_head=False,  # OneVision reads the encoder's hidden states, never the pooling head
    )
    conv = tokenizer.convert_tokens_to_ids
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=qwen2_text_config(text, ids),
        image_token_index=conv("<image>"),
        video_token_index=conv("<video>"),
        image_grid_pinpoints=_PINPOINTS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio=_ASPECT,
        tie_word_embeddings=False,
    )
    model = LlavaOnevisionForConditionalGeneration(config)
    image_processor = LlavaOnevisionImageProcessor(
        size={"height": v["image"], "width": v["image"]},
        image_grid_pinpoints=_PINPOINTS,
    )
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size={"height": v["image"], "width": v["image"]}),
        num_image_tokens=(v["image"] // v["patch"]) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio=_ASPECT,
        chat_template=_ONEVISION_TEMPLATE,
    )
    return model, processor


FAMILY = Family(
    "llava_onevision",
    "llava_onevision",
    LlavaOnevisionAdapter,
    TOKENIZER,
    build_tiny,
    vision=VISION,
    device_processor=images_only_processor,
)

__all__ = [
    "FAMILY",
    "VISION",
    "LlavaOnevisionAdapter",
    "images_only_processor",
    "max_num_patches",
    "qwen2_text_config",
]
