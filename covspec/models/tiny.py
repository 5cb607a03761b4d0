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

What is a family's own (its tokenizer specification, vision tower sizes, config and processor builder) lives in its
module under ``covspec/models/families/``; this module holds what every family shares and dispatches on the
registry.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from covspec.models._corpus import CORPUS
from covspec.models.families import VLM_FAMILIES
from covspec.models.families.base import TEXT_INIT_RANGE, TextSize, TokenizerSpec, llama_text_config

TINY_ARCHS: tuple[str, ...] = tuple(name for name, family in VLM_FAMILIES.items() if family.build_tiny is not None)
TINY_SIZES: tuple[str, ...] = ("target", "drafter")

_BPE_VOCAB = 512  # byte alphabet (256) + merges, before the special tokens


# --------------------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------------------


@functools.cache
def _tokenizer_json(arch: str) -> str:
    """The serialized ``tokenizers.Tokenizer`` of one family (trained once per process, deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    spec = _tokenizer_spec(arch)
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


def tiny_tokenizer(arch: str, model_specific: bool = True) -> Any:
    """The family's tiny tokenizer as a ``PreTrainedTokenizerFast`` (same for every size and seed); without
    ``model_specific``, a text LM's view of it: the same ids, no image/video token attributes."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = _tokenizer_spec(arch)
    backend = Tokenizer.from_str(_tokenizer_json(arch))
    named = set(spec.named.values())
    extra = [t for t in spec.special_tokens if t not in named]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **spec.named,
        extra_special_tokens=extra,
        model_specific_special_tokens=dict(spec.model_specific) if model_specific else {},
        chat_template=spec.chat_template,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    return tokenizer


# --------------------------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------------------------


_TEXT = {
    "target": TextSize(hidden=96, intermediate=192, layers=3, heads=4, kv_heads=2),
    "drafter": TextSize(hidden=48, intermediate=96, layers=2, heads=2, kv_heads=1),
}


def _check_arch(arch: str) -> None:
    if arch not in TINY_ARCHS:
        raise ValueError(f"unknown tiny arch {arch!r}; choose one of {', '.join(TINY_ARCHS)}")


def _tokenizer_spec(arch: str) -> TokenizerSpec:
    _check_arch(arch)
    spec = VLM_FAMILIES[arch].tokenizer
    assert spec is not None
    return spec


def special_ids(tokenizer: Any, arch: str) -> dict[str, Any]:
    """Vocabulary size and bos / eos / pad ids of a tiny ``arch`` tokenizer (shared with the demo pair's configs)."""
    spec = _tokenizer_spec(arch)
    conv = tokenizer.convert_tokens_to_ids
    return {
        "vocab_size": len(tokenizer),
        "bos": conv(spec.named["bos_token"]) if "bos_token" in spec.named else None,
        "eos": [conv(t) for t in spec.generation_eos],
        "pad": conv(spec.named["pad_token"]),
    }


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
    torch.manual_seed(seed * 7919 + _SIZE_SALT[size] * 104729 + list(VLM_FAMILIES).index(arch))
    build = VLM_FAMILIES[arch].build_tiny
    assert build is not None
    model, processor = build(size, tokenizer, ids, text_size or _TEXT[size])
    model.generation_config = generation_config(ids)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _write_marker(out, arch=arch, size=size, seed=seed)
    return out


def build_tiny_text_drafter(out: Path | str, seed: int = 0, arch: str = "llava") -> Path:
    """Write a tiny text-only causal LM whose ids mean what the tiny ``arch`` tokenizer's mean (a text-only drafter).

    ``llava``: a ``LlamaForCausalLM`` with the llava tokenizer's very files. ``qwen2_vl`` (or any other family): a
    ``Qwen2ForCausalLM`` whose tokenizer has the same vocabulary but, as a real Qwen2 LM's, none of the processor's
    image attributes, so its files hash differently from the VLMs' and pairing compares the vocabularies id by id.
    """
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(arch, model_specific=arch == "llava")
    ids = special_ids(tokenizer, arch)
    if arch == "llava":
        from transformers import LlamaForCausalLM

        torch.manual_seed(seed * 7919 + 2 * 104729 + 17)
        model = LlamaForCausalLM(llama_text_config(_TEXT["drafter"], ids))
    else:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(seed * 7919 + 2 * 104729 + 17 + list(VLM_FAMILIES).index(arch))
        t = _TEXT["drafter"]
        config = Qwen2Config(
            vocab_size=ids["vocab_size"],
            hidden_size=t.hidden,
            intermediate_size=t.intermediate,
            num_hidden_layers=t.layers,
            num_attention_heads=t.heads,
            num_key_value_heads=t.kv_heads,
            max_position_embeddings=2048,
            initializer_range=TEXT_INIT_RANGE,
            rms_norm_eps=1e-6,
            bos_token_id=ids["bos"],
            eos_token_id=ids["eos"][0],
            pad_token_id=ids["pad"],
            tie_word_embeddings=False,
        )
        model = Qwen2ForCausalLM(config)
    model.generation_config = generation_config(ids)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _write_marker(out, arch=f"{arch}_text" if arch != "llava" else "llama_text", size="drafter", seed=seed)
    return out


def _write_marker(out: Path, **info: Any) -> None:
    (out / "covspec_tiny.json").write_text(json.dumps(info, sort_keys=True) + "\n")


__all__ = [
    "TINY_ARCHS",
    "TINY_SIZES",
    "build_tiny",
    "build_tiny_text_drafter",
    "generation_config",
    "special_ids",
    "tiny_tokenizer",
]
