"""InternVL (``InternVLForConditionalGeneration``, the InternVL3 1B/2B/8B ``-hf`` checkpoints).

An InternViT vision tower (a CLS token, absolute position embeddings, layer-scaled pre-norm blocks), the feature
layer without its CLS, a pixel shuffle (``downsample_ratio`` 0.5: 2x2 patches become one token) and an MLP projector
(LayerNorm, Linear, GELU, Linear) into a Qwen2 decoder. Positions are plain sequence positions.

Prompt: the Qwen2 chat format of the ``-hf`` checkpoints,
``<|im_start|>user\\n<IMG_CONTEXT>\\n...<|im_end|>\\n<|im_start|>assistant\\n`` (InternVL's own remote-code
conversation template also puts a default system message first; whatever a checkpoint's template renders is what both
sides use, and the tiny one renders none). The processor (``InternVLProcessor``) replaces each ``<IMG_CONTEXT>`` of
the template by ``<img>`` + ``<IMG_CONTEXT>`` * ``image_seq_length`` * tiles + ``</img>``; ``image_tokens`` counts the
``<IMG_CONTEXT>`` positions only.

Tiles: the real processor calls its image processor with ``crop_to_patches=True`` (a processor-level default that
overrides the image processor's own), cutting an image into up to ``max_patches`` (12) square tiles in the grid whose
aspect ratio is closest to the image's, plus a thumbnail when there is more than one tile. The vision graph encodes
any number of tiles (its ``pixel_values`` axis 0), each into ``image_seq_length`` features in the processor's order,
so it covers that as well (``tests/models/families/test_internvl.py`` checks it on several tiles). The tiny processor
sets ``max_patches=1``: one tile per image whatever ``crop_to_patches`` says. Video inputs are not supported.

Image processor: ``save_pretrained`` records ``GotOcr2ImageProcessor``, which is the torchvision backend in
transformers 5 (the old "fast" one); without torchvision ``AutoImageProcessor`` loads ``GotOcr2ImageProcessorPil``
from the same file. ``AutoProcessor`` still needs torchvision for ``InternVLVideoProcessor``: without it a bundle's
processor is :func:`images_only_processor`.
"""

from __future__ import annotations

import logging
import re
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

logger = logging.getLogger(__name__)


class InternvlAdapter(HFVisionLanguageModel):
    family = "internvl"
    model_class_name = "InternVLForConditionalGeneration"
    uses_processor = True


# -- vision graph: pixel_values [tiles, 3, H, W] -> [tiles * image_seq_length, hidden] ---------------------------------


def _pixel_shuffle(features: Any, ratio: float) -> Any:
    """``InternVLModel.pixel_shuffle`` on [tiles, side, side, channels], with every size but the tiles' static."""
    _, width, height, channels = features.shape
    features = features.reshape(-1, width, int(height * ratio), int(channels / ratio))
    features = features.permute(0, 2, 1, 3)
    features = features.reshape(-1, int(height * ratio), int(width * ratio), int(channels / ratio**2))
    return features.permute(0, 2, 1, 3)


def _encode(parts: Any, config: Any, pixel_values: Any) -> Any:
    # get_image_features' reshape reads the batch from a tensor shape: fine, but done by hand for one flat output
    layer = config.vision_feature_layer
    if not isinstance(layer, int):
        raise ValueError(f"InternVL: a single vision_feature_layer is supported, not {layer!r}")
    out = parts["tower"](pixel_values=pixel_values, output_hidden_states=True, return_dict=True)
    features = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
    if config.vision_feature_select_strategy == "default":
        features = features[:, 1:, :]
    side = int(features.shape[1] ** 0.5)
    features = features.reshape(-1, side, side, features.shape[-1])
    features = _pixel_shuffle(features, float(config.downsample_ratio))
    features = features.reshape(-1, features.shape[1] * features.shape[2], features.shape[-1])
    features = parts["projector"](features)
    return features.reshape(-1, features.shape[-1])


VISION = VisionGraph(
    inputs=("pixel_values",),
    dynamic_axes=({0: "tiles"},),
    encode=_encode,
    reference=feature_reference,
)


def images_only_processor(root: Path) -> Any:
    """The bundle's processor without torchvision (the video processor needs it): transformers finds a processor's
    parts from the names of its ``__init__`` parameters, so a subclass whose ``__init__`` has no ``video_processor``
    loads images only."""
    from transformers import InternVLProcessor
    from transformers.processing_utils import ProcessorMixin

    class InternVLImagesOnlyProcessor(InternVLProcessor):
        def __init__(
            self,
            image_processor: Any = None,
            tokenizer: Any = None,
            image_seq_length: int = 256,
            chat_template: Any = None,
        ) -> None:
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
            self.image_seq_length = image_seq_length
            self.start_image_token = tokenizer.start_image_token
            self.end_image_token = tokenizer.end_image_token
            self.start_image_token_id = tokenizer.start_image_token_id
            self.end_image_token_id = tokenizer.end_image_token_id
            self.image_token = tokenizer.context_image_token
            self.video_token = tokenizer.video_token
            self.image_token_id = tokenizer.context_image_token_id
            self.multimodal_pattern = re.compile(
                f"(?P<image>{re.escape(self.image_token)})|(?P<video>{re.escape(self.video_token)})"
            )

    logger.info("%s: no torchvision, so the video processor is left out (images only)", root)
    parts = saved_processor(root)
    return InternVLImagesOnlyProcessor(
        image_processor=parts.image_processor,
        tokenizer=parts.tokenizer,
        image_seq_length=int(parts.settings.get("image_seq_length", 256)),
        chat_template=parts.chat_template,
    )


# -- tiny checkpoint ------------------------------------------------------------------------------------------------

# InternVL3-hf's template without its default system message
_INTERNVL_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TOKENIZER = TokenizerSpec(
    special_tokens=(
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<img>",
        "</img>",
        "<IMG_CONTEXT>",
        "<video>",
        "<quad>",
        "</quad>",
        "<ref>",
        "</ref>",
        "<box>",
        "</box>",
    ),
    named={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    model_specific={
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    },
    generation_eos=("<|im_end|>", "<|endoftext|>"),
    chat_template=_INTERNVL_TEMPLATE,
)
# image tokens: (image / patch)**2 / 4 = 16 (target) / 4 (drafter)
_VISION = {
    "target": {"hidden": 32, "intermediate": 64, "layers": 2, "heads": 2, "image": 64, "patch": 8},
    "drafter": {"hidden": 16, "intermediate": 32, "layers": 1, "heads": 1, "image": 32, "patch": 8},
}


def build_tiny(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
        Qwen2Config,
    )

    v = _VISION[size]
    text_config = Qwen2Config(
        **tiny_text_fields(text, ids, bos=ids["eos"][1]),
        rms_norm_eps=1e-6,
    )
    vision = InternVLVisionConfig(
        hidden_size=v["hidden"],
        intermediate_size=v["intermediate"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"],
        image_size=v["image"],
        patch_size=v["patch"],
    )
    n_image = (v["image"] // v["patch"]) ** 2 // 4
    config = InternVLConfig(
        vision_config=vision,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=n_image,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    model = InternVLForConditionalGeneration(config)
    side = {"height": v["image"], "width": v["image"]}
    image_processor = GotOcr2ImageProcessor(size=dict(side), crop_to_patches=False, min_patches=1, max_patches=1)
    video_processor = InternVLVideoProcessor(size=dict(side))
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_length=n_image,
        chat_template=_INTERNVL_TEMPLATE,
    )
    return model, processor


FAMILY = Family(
    "internvl",
    "internvl",
    InternvlAdapter,
    TOKENIZER,
    build_tiny,
    vision=VISION,
    device_processor=images_only_processor,
)

__all__ = ["FAMILY", "VISION", "InternvlAdapter", "images_only_processor"]
