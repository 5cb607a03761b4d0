"""The demo pair's architecture: a LLaVA target and a several-times-smaller LLaVA drafter with its own vision tower.

Both are real ``LlavaForConditionalGeneration`` checkpoints with a ``LlavaProcessor`` (CLIP image processor, tokenizer,
chat template), so ``from_pretrained``, ``AutoProcessor.from_pretrained`` and ``covspec.models.load_model`` load them.

Tokenizer: the tiny LLaVA tokenizer of ``covspec.models.tiny`` (a byte-level BPE trained offline on a small corpus
about shapes and colours), with its chat template. Reusing it keeps one LLaVA tokenizer in the project (the
random-weight tiny pair and the trained demo pair hash equal), needs no extra training step or file, and already
spells every scene word in one to three pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covspec.models.families.base import TextSize, llama_text_config
from covspec.models.families.llava import LLAVA_TEMPLATE
from covspec.models.tiny import generation_config, special_ids, tiny_tokenizer

ARCH = "llava"
# Initializer std for training. Wider than the usual 0.02: with 0.02 the attention of these small models starts
# uniform and stays so for hundreds of steps (the language model answers from priors, blind); 0.08 gets it reading
# the image within the first hundred steps. (tiny.py's 0.25 suits random-weight tests, not training.)
INIT_RANGE = 0.08


@dataclass(frozen=True)
class VisionSize:
    """A CLIP vision tower: ``(image // patch) ** 2`` visual tokens reach the language model."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    image: int
    patch: int

    @property
    def image_tokens(self) -> int:
        return (self.image // self.patch) ** 2


@dataclass(frozen=True)
class ModelSize:
    vision: VisionSize
    text: TextSize


# The shipped pair (v4): v3's 2.3M-parameter target; a drafter with one language layer, small enough to be clearly
# worse than the target alone while still drafting the easy tokens, whose own tower reads 144 visual tokens (96 px,
# patch 8) where the target reads 16: enough for visual token reduction to matter.
TARGET_SIZE = ModelSize(
    vision=VisionSize(hidden=96, intermediate=384, layers=2, heads=4, image=64, patch=16),
    text=TextSize(hidden=192, intermediate=576, layers=4, heads=4, kv_heads=2),
)
DRAFTER_SIZE = ModelSize(
    vision=VisionSize(hidden=32, intermediate=128, layers=1, heads=2, image=96, patch=8),
    text=TextSize(hidden=64, intermediate=192, layers=1, heads=2, kv_heads=1),
)


def drafter_arch(size: ModelSize, init_range: float = INIT_RANGE) -> str:
    """``size`` as ``covspec distill --drafter-arch`` overrides of the target's config (the drafter keeps the
    target's tokenizer, processor and special ids; its own tower sets how many visual tokens it reads)."""
    v, t = size.vision, size.text
    fields = {
        "initializer_range": init_range,
        "text.initializer_range": init_range,
        "vision.initializer_range": init_range,
        "vision.image_size": v.image,
        "vision.patch_size": v.patch,
        "vision.hidden_size": v.hidden,
        "vision.intermediate_size": v.intermediate,
        "vision.num_hidden_layers": v.layers,
        "vision.num_attention_heads": v.heads,
        "vision.projection_dim": v.hidden,
        "text.hidden_size": t.hidden,
        "text.intermediate_size": t.intermediate,
        "text.num_hidden_layers": t.layers,
        "text.num_attention_heads": t.heads,
        "text.num_key_value_heads": t.kv_heads,
    }
    return ",".join(f"{key}={value}" for key, value in fields.items())


def build_model(size: ModelSize, tokenizer: Any | None = None, init_range: float = INIT_RANGE) -> tuple[Any, Any]:
    """A freshly initialised (model, processor) of ``size`` (seed torch before calling, for determinism)."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer(ARCH)
    ids = special_ids(tokenizer, ARCH)
    v = size.vision
    vision = CLIPVisionConfig(
        hidden_size=v.hidden,
        intermediate_size=v.intermediate,
        num_hidden_layers=v.layers,
        num_attention_heads=v.heads,
        image_size=v.image,
        patch_size=v.patch,
        projection_dim=v.hidden,
        initializer_range=init_range,
    )
    text = llama_text_config(size.text, ids)
    text.initializer_range = init_range
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=v.image_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    config.initializer_range = init_range
    model = LlavaForConditionalGeneration(config)
    model.generation_config = generation_config(ids)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": v.image},
        crop_size={"height": v.image, "width": v.image},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=v.patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS, dropped by the "default" strategy
        chat_template=LLAVA_TEMPLATE,
    )
    return model, processor


def num_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(model: Any, processor: Any, out: Path) -> Path:
    """``save_pretrained`` of model (float32 safetensors) and processor into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def render_prompt(processor: Any, question: str) -> str:
    """The chat-template text of one question about one image (DESIGN.md §7)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


__all__ = [
    "DRAFTER_SIZE",
    "TARGET_SIZE",
    "ModelSize",
    "TextSize",
    "VisionSize",
    "build_model",
    "drafter_arch",
    "num_parameters",
    "render_prompt",
    "save_checkpoint",
]
