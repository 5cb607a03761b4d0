"""SmolVLM (``SmolVLMForConditionalGeneration``): Idefics3's architecture under its own classes.

SmolVLM (HuggingFaceTB/SmolVLM-256M/500M/2.2B, SmolVLM2) is a SigLIP-style vision tower, a pixel shuffle connector
(``scale_factor`` 4 for 256M/500M, 3 for 2.2B) and a Llama (SmolLM2) decoder; it computes what Idefics3 computes, so
its ONNX vision graph is Idefics3's (:data:`covspec.models.families.idefics3.VISION`: the tower over every tile given,
padding tiles dropped by the feeds, the patch mask's bucketed position ids, the connector).

Prompt: SmolVLM's own chat template, ``<|im_start|>User:<image>...<end_of_utterance>\\nAssistant:``. The processor
(``SmolVLMProcessor``) expands each ``<image>`` to
``<fake_token_around_image><global-img><image>*N<fake_token_around_image>``. The real checkpoints split images by
default (``do_image_splitting=True``): the image is resized to a multiple of ``max_image_size`` and cut into tiles of
that size (up to ``(size / max_image_size)**2`` of them), each its own ``<fake_token_around_image><row_i_col_j>
<image>*N`` block, then the global image's block; ``image_tokens`` counts the ``<image>`` positions only. The vision
graph covers splitting too (one tile per entry of its ``num_images`` axis; ``tests/models/families/test_smolvlm.py``
checks it on a 2x2 split); the tiny processor keeps splitting off, so a prompt has one block. Positions are plain
sequence positions. Video inputs are not supported.

Processor: ``SmolVLMProcessor.__init__`` raises ``ImportError`` without ``num2words`` (used only for video prompts),
and ``AutoProcessor`` needs torchvision for ``SmolVLMVideoProcessor``. ``save_pretrained`` records
``SmolVLMImageProcessor`` (the torchvision backend in transformers 5); without torchvision ``AutoImageProcessor`` loads
``SmolVLMImageProcessorPil`` from the same file. Where either is missing, a bundle's processor is
:func:`images_only_processor`, which needs neither.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from covspec.models.common import HFVisionLanguageModel
from covspec.models.families.base import Family, TextSize, TokenizerSpec, llama_text_config, saved_processor
from covspec.models.families.idefics3 import ROW_COL_TOKENS, VISION

logger = logging.getLogger(__name__)


class SmolvlmAdapter(HFVisionLanguageModel):
    family = "smolvlm"
    model_class_name = "SmolVLMForConditionalGeneration"
    uses_processor = True


def images_only_processor(root: Path) -> Any:
    """The bundle's processor without torchvision (the video processor needs it) and without ``num2words`` (only
    video prompts use it): transformers finds a processor's parts from the names of its ``__init__`` parameters, so a
    subclass whose ``__init__`` has no ``video_processor`` loads images only."""
    from transformers import SmolVLMProcessor
    from transformers.processing_utils import ProcessorMixin

    class SmolVLMImagesOnlyProcessor(SmolVLMProcessor):
        def __init__(
            self,
            image_processor: Any = None,
            tokenizer: Any = None,
            image_seq_len: int = 169,
            chat_template: Any = None,
        ) -> None:
            self.fake_image_token = getattr(tokenizer, "fake_image_token", "<fake_token_around_image>")
            self.image_token = getattr(tokenizer, "image_token", "<image>")
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.end_of_utterance_token = getattr(tokenizer, "end_of_utterance_token", "<end_of_utterance>")
            self.global_image_token = getattr(tokenizer, "global_image_token", "<global-img>")
            self.image_seq_len = image_seq_len
            self.video_token = getattr(tokenizer, "video_token", "<video>")
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

        def apply_chat_template(self, conversation: Any, chat_template: Any = None, **kwargs: Any) -> Any:
            # SmolVLMProcessor's own reads the video processor's frame settings
            return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)

    logger.info("%s: no torchvision or num2words, so the video processor is left out (images only)", root)
    parts = saved_processor(root)
    return SmolVLMImagesOnlyProcessor(
        image_processor=parts.image_processor,
        tokenizer=parts.tokenizer,
        image_seq_len=int(parts.settings.get("image_seq_len", 169)),
        chat_template=parts.chat_template,
    )


# -- tiny checkpoint ------------------------------------------------------------------------------------------------

# SmolVLM-Instruct's template (the processor's DEFAULT_CHAT_TEMPLATE in transformers, string content included)
_SMOLVLM_TEMPLATE = (
    "<|im_start|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}"
    "{% elif line['type'] == 'video' %}{{ '<video>' }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

TOKENIZER = TokenizerSpec(
    special_tokens=(
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<fake_token_around_image>",
        "<image>",
        "<end_of_utterance>",
        "<global-img>",
        *ROW_COL_TOKENS,
    ),
    named={
        "unk_token": "<|endoftext|>",
        "bos_token": "<|im_start|>",
        "eos_token": "<end_of_utterance>",
        "pad_token": "<|im_end|>",
    },
    model_specific={
        "image_token": "<image>",
        "fake_image_token": "<fake_token_around_image>",
        "global_image_token": "<global-img>",
        "end_of_utterance_token": "<end_of_utterance>",
    },
    generation_eos=("<end_of_utterance>", "<|im_end|>"),
    chat_template=_SMOLVLM_TEMPLATE,
)
# image tokens: (image / patch)**2 / scale**2 = 16 (target) / 4 (drafter)
_VISION = {
    "target": {"hidden": 32, "intermediate": 64, "layers": 2, "heads": 2, "image": 128, "patch": 8, "scale": 4},
    "drafter": {"hidden": 16, "intermediate": 32, "layers": 1, "heads": 1, "image": 64, "patch": 8, "scale": 4},
}


def build_tiny(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
        SmolVLMVisionConfig,
    )

    v = _VISION[size]
    vision = SmolVLMVisionConfig(
        hidden_size=v["hidden"],
        intermediate_size=v["intermediate"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"],
        image_size=v["image"],
        patch_size=v["patch"],
    )
    config = SmolVLMConfig(
        vision_config=vision,
        text_config=llama_text_config(text, ids),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=v["scale"],
        pad_token_id=ids["pad"],
    )
    model = SmolVLMForConditionalGeneration(config)
    edge = {"longest_edge": v["image"]}
    image_processor = SmolVLMImageProcessor(do_image_splitting=False, size=dict(edge), max_image_size=dict(edge))
    video_processor = SmolVLMVideoProcessor(
        size=dict(edge),
        max_image_size=dict(edge),
        video_sampling={"max_frames": 4, "fps": 1, "video_size": dict(edge)},
    )
    processor = SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_len=(v["image"] // v["patch"]) ** 2 // v["scale"] ** 2,
        chat_template=_SMOLVLM_TEMPLATE,
    )
    return model, processor


FAMILY = Family(
    "smolvlm",
    "smolvlm",
    SmolvlmAdapter,
    TOKENIZER,
    build_tiny,
    vision=VISION,
    device_processor=images_only_processor,
)

__all__ = ["FAMILY", "SmolvlmAdapter", "images_only_processor"]
