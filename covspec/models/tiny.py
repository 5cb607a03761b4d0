"""Tiny random-weight checkpoints of each supported family, built offline with the real transformers classes.

``build_tiny(arch, size, out, seed)`` writes a folder that ``load_model(out)``, the family's ``AutoProcessor``
and its ``XForConditionalGeneration.from_pretrained`` all load: weights, config, a generation config (greedy, EOS and
pad ids), and a processor (image processor, tokenizer with a chat template in the family's style; for Qwen2-VL also
its video processor).

The tokenizer is a byte-level BPE trained deterministically on a small embedded corpus plus each family's special
tokens. It depends on the family only: a target and a drafter of one family share it exactly (same
``tokenizer_hash``, same vocabulary size), whatever their sizes and seeds.

Numerics: tests compare multi-token verification with one-token decoding, which differ in the last bits. The text
models use a wide initializer range so that the top two logits are rarely within rounding noise of each other
(DESIGN.md §6).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covspec.models._corpus import CORPUS

TINY_ARCHS: tuple[str, ...] = ("llava", "qwen2_vl", "idefics3")
TINY_SIZES: tuple[str, ...] = ("target", "drafter")

_BPE_VOCAB = 512  # byte alphabet (256) + merges, before the special tokens
_TEXT_INIT_RANGE = 0.25  # wide on purpose: keeps greedy near-ties vanishingly rare


# --------------------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------------------

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

_QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_IDEFICS3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}"
    "{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ item['text'] }}{% elif item['type'] == 'image' %}<image>{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass(frozen=True)
class _TokenizerSpec:
    special_tokens: tuple[str, ...]  # in id order, ids 0..n-1
    named: dict[str, str]  # bos_token / eos_token / pad_token / unk_token
    model_specific: dict[str, str]  # image_token, video_token, ... (become tokenizer attributes)
    generation_eos: tuple[str, ...]  # EOS tokens of the generation config (first = tokenizer EOS)
    chat_template: str


_IDEFICS3_ROW_COL = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))

_TOKENIZER_SPECS: dict[str, _TokenizerSpec] = {
    "llava": _TokenizerSpec(
        special_tokens=("<unk>", "<s>", "</s>", "<pad>", "<image>"),
        named={"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
        model_specific={"image_token": "<image>"},
        generation_eos=("</s>",),
        chat_template=LLAVA_TEMPLATE,
    ),
    "qwen2_vl": _TokenizerSpec(
        special_tokens=(
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|vision_pad|>",
            "<|image_pad|>",
            "<|video_pad|>",
        ),
        named={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        model_specific={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
        },
        generation_eos=("<|im_end|>", "<|endoftext|>"),
        chat_template=_QWEN2_VL_TEMPLATE,
    ),
    "idefics3": _TokenizerSpec(
        special_tokens=(
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<end_of_utterance>",
            "<pad>",
            "<fake_token_around_image>",
            "<image>",
            "<global-img>",
            *_IDEFICS3_ROW_COL,
        ),
        named={"bos_token": "<|begin_of_text|>", "eos_token": "<end_of_utterance>", "pad_token": "<pad>"},
        model_specific={"image_token": "<image>"},
        generation_eos=("<end_of_utterance>", "<|end_of_text|>"),
        chat_template=_IDEFICS3_TEMPLATE,
    ),
}


@functools.cache
def _tokenizer_json(arch: str) -> str:
    """The serialized ``tokenizers.Tokenizer`` of one family (trained once per process, deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    spec = _TOKENIZER_SPECS[arch]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB + len(spec.special_tokens),
        special_tokens=list(spec.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(list(CORPUS), trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(arch: str) -> Any:
    """The family's tiny tokenizer as a ``PreTrainedTokenizerFast`` (same for every size and seed)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    _check_arch(arch)
    spec = _TOKENIZER_SPECS[arch]
    backend = Tokenizer.from_str(_tokenizer_json(arch))
    named = set(spec.named.values())
    extra = [t for t in spec.special_tokens if t not in named]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **spec.named,
        extra_special_tokens=extra,
        model_specific_special_tokens=dict(spec.model_specific),
        chat_template=spec.chat_template,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    return tokenizer


# --------------------------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextSize:
    """The language model's shape; ``build_tiny(..., text_size=...)`` overrides a size's default (benchmarks build
    random-weight targets of realistic size with it)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int


_TEXT = {
    "target": TextSize(hidden=96, intermediate=192, layers=3, heads=4, kv_heads=2),
    "drafter": TextSize(hidden=48, intermediate=96, layers=2, heads=2, kv_heads=1),
}


def _mrope_section(text: TextSize) -> list[int]:
    """Qwen2-VL's multimodal RoPE splits head_dim / 2 frequencies into (t, h, w) sections ([4, 4, 4] for the
    default head_dim of 24)."""
    half = text.hidden // text.heads // 2
    return [half - 2 * (half // 3), half // 3, half // 3]


# Vision towers, per family and size. Image-token counts: llava 16 / 4, qwen2_vl <= 16 / <= 9, idefics3 16 / 4.
_VISION: dict[str, dict[str, dict[str, int]]] = {
    "llava": {
        "target": {"hidden": 32, "intermediate": 64, "layers": 2, "heads": 2, "image": 32, "patch": 8},
        "drafter": {"hidden": 16, "intermediate": 32, "layers": 1, "heads": 1, "image": 32, "patch": 16},
    },
    "qwen2_vl": {
        # max_side: images are resized to at most max_side**2 pixels, in multiples of patch * merge = 8
        "target": {"embed": 32, "layers": 2, "heads": 2, "patch": 4, "min_side": 16, "max_side": 32},
        "drafter": {"embed": 16, "layers": 1, "heads": 1, "patch": 4, "min_side": 16, "max_side": 24},
    },
    "idefics3": {
        "target": {"hidden": 32, "intermediate": 64, "layers": 2, "heads": 2, "image": 64, "patch": 8},
        "drafter": {"hidden": 16, "intermediate": 32, "layers": 1, "heads": 1, "image": 32, "patch": 8},
    },
}


def _check_arch(arch: str) -> None:
    if arch not in TINY_ARCHS:
        raise ValueError(f"unknown tiny arch {arch!r}; choose one of {', '.join(TINY_ARCHS)}")


def special_ids(tokenizer: Any, arch: str) -> dict[str, Any]:
    """Vocabulary size and bos / eos / pad ids of a tiny ``arch`` tokenizer (shared with the demo pair's configs)."""
    spec = _TOKENIZER_SPECS[arch]
    conv = tokenizer.convert_tokens_to_ids
    return {
        "vocab_size": len(tokenizer),
        "bos": conv(spec.named["bos_token"]) if "bos_token" in spec.named else None,
        "eos": [conv(t) for t in spec.generation_eos],
        "pad": conv(spec.named["pad_token"]),
    }


def llama_text_config(t: TextSize, ids: dict[str, Any]) -> Any:
    """The ``LlamaConfig`` of a tiny language model of size ``t`` over the tokenizer whose ``special_ids`` are
    ``ids``."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=ids["vocab_size"],
        hidden_size=t.hidden,
        intermediate_size=t.intermediate,
        num_hidden_layers=t.layers,
        num_attention_heads=t.heads,
        num_key_value_heads=t.kv_heads,
        max_position_embeddings=2048,
        initializer_range=_TEXT_INIT_RANGE,
        rms_norm_eps=1e-6,
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"][0],
        pad_token_id=ids["pad"],
        tie_word_embeddings=False,
    )


# --------------------------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------------------------


def _build_llava(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    v = _VISION["llava"][size]
    vision = CLIPVisionConfig(
        hidden_size=v["hidden"],
        intermediate_size=v["intermediate"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"],
        image_size=v["image"],
        patch_size=v["patch"],
        projection_dim=v["hidden"],
    )
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


def _build_qwen2_vl(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    t = text
    v = _VISION["qwen2_vl"][size]
    conv = tokenizer.convert_tokens_to_ids
    text_config = {
        "vocab_size": ids["vocab_size"],
        "hidden_size": t.hidden,
        "intermediate_size": t.intermediate,
        "num_hidden_layers": t.layers,
        "num_attention_heads": t.heads,
        "num_key_value_heads": t.kv_heads,
        "max_position_embeddings": 2048,
        "initializer_range": _TEXT_INIT_RANGE,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope_section(t)},
        "bos_token_id": ids["eos"][1],
        "eos_token_id": ids["eos"][0],
        "pad_token_id": ids["pad"],
        "tie_word_embeddings": False,
    }
    vision_config = {
        "depth": v["layers"],
        "embed_dim": v["embed"],
        "hidden_size": t.hidden,
        "num_heads": v["heads"],
        "mlp_ratio": 2,
        "patch_size": v["patch"],
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
    }
    config = Qwen2VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=conv("<|image_pad|>"),
        video_token_id=conv("<|video_pad|>"),
        vision_start_token_id=conv("<|vision_start|>"),
        vision_end_token_id=conv("<|vision_end|>"),
    )
    model = Qwen2VLForConditionalGeneration(config)
    pixels = {"shortest_edge": v["min_side"] ** 2, "longest_edge": v["max_side"] ** 2}
    image_processor = Qwen2VLImageProcessor(
        size=dict(pixels), patch_size=v["patch"], temporal_patch_size=2, merge_size=2
    )
    video_processor = Qwen2VLVideoProcessor(
        size=dict(pixels), patch_size=v["patch"], temporal_patch_size=2, merge_size=2
    )
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=_QWEN2_VL_TEMPLATE,
    )
    return model, processor


def _build_idefics3(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    v = _VISION["idefics3"][size]
    scale = 2
    vision = Idefics3VisionConfig(
        hidden_size=v["hidden"],
        intermediate_size=v["intermediate"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"],
        image_size=v["image"],
        patch_size=v["patch"],
    )
    config = Idefics3Config(
        vision_config=vision,
        text_config=llama_text_config(text, ids),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        pad_token_id=ids["pad"],
    )
    model = Idefics3ForConditionalGeneration(config)
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=False,
        size={"longest_edge": v["image"]},
        max_image_size={"longest_edge": v["image"]},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(v["image"] // v["patch"]) ** 2 // scale**2,
        chat_template=_IDEFICS3_TEMPLATE,
    )
    return model, processor


_BUILDERS = {"llava": _build_llava, "qwen2_vl": _build_qwen2_vl, "idefics3": _build_idefics3}
_SIZE_SALT = {"target": 0, "drafter": 1}


def generation_config(ids: dict[str, Any]) -> Any:
    """A greedy ``GenerationConfig`` naming the tokenizer's bos / eos / pad (``special_ids``)."""
    from transformers import GenerationConfig

    eos = ids["eos"]
    return GenerationConfig(
        do_sample=False,
        bos_token_id=ids["bos"],
        eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=ids["pad"],
    )


def build_tiny(arch: str, size: str, out: Path | str, seed: int = 0, text_size: TextSize | None = None) -> Path:
    """Write a tiny random-weight ``arch`` checkpoint (``size`` "target" or "drafter") to ``out``; return ``out``.

    Offline and deterministic for a given (arch, size, seed). The tokenizer depends on ``arch`` only.
    """
    import torch

    _check_arch(arch)
    if size not in TINY_SIZES:
        raise ValueError(f"unknown tiny size {size!r}; choose one of {', '.join(TINY_SIZES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(arch)
    ids = special_ids(tokenizer, arch)
    torch.manual_seed(seed * 7919 + _SIZE_SALT[size] * 104729 + TINY_ARCHS.index(arch))
    model, processor = _BUILDERS[arch](size, tokenizer, ids, text_size or _TEXT[size])
    model.generation_config = generation_config(ids)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _write_marker(out, arch=arch, size=size, seed=seed)
    return out


def build_tiny_text_drafter(out: Path | str, seed: int = 0) -> Path:
    """Write a tiny text-only ``LlamaForCausalLM`` sharing the tiny llava tokenizer (a text-only drafter)."""
    import torch
    from transformers import LlamaForCausalLM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer("llava")
    ids = special_ids(tokenizer, "llava")
    torch.manual_seed(seed * 7919 + 2 * 104729 + 17)
    model = LlamaForCausalLM(llama_text_config(_TEXT["drafter"], ids))
    model.generation_config = generation_config(ids)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _write_marker(out, arch="llama_text", size="drafter", seed=seed)
    return out


def _write_marker(out: Path, **info: Any) -> None:
    (out / "covspec_tiny.json").write_text(json.dumps(info, sort_keys=True) + "\n")


__all__ = [
    "LLAVA_TEMPLATE",
    "TINY_ARCHS",
    "TINY_SIZES",
    "TextSize",
    "build_tiny",
    "build_tiny_text_drafter",
    "generation_config",
    "llama_text_config",
    "special_ids",
    "tiny_tokenizer",
]
