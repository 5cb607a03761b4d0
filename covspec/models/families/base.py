"""What a family module declares, and the pieces of a tiny checkpoint that every family shares.

A family module (``covspec/models/families/<name>.py``) holds that family's knowledge in one place: its adapter
(loading, rendering, positions), its tiny checkpoint (tokenizer specification, model and processor builder), its
vision graph for ONNX export and the feeds a device bundle's engine gives that graph, declared as one
:class:`Family`. Importing a family module loads neither torch nor transformers (the ONNX Runtime engine reads the
feeds on a device without torch): the functions import what they use.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from covspec.models.common import HFLoadedModel

TEXT_INIT_RANGE = 0.25  # tiny text models: wide on purpose, keeps greedy near-ties vanishingly rare


@dataclass(frozen=True)
class TextSize:
    """The language model's shape; ``build_tiny(..., text_size=...)`` overrides a size's default (benchmarks build
    random-weight targets of realistic size with it)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int


@dataclass(frozen=True)
class TokenizerSpec:
    """A tiny family tokenizer: a byte-level BPE plus these special tokens and this chat template."""

    special_tokens: tuple[str, ...]  # in id order, ids 0..n-1
    named: dict[str, str]  # bos_token / eos_token / pad_token / unk_token
    model_specific: dict[str, str]  # image_token, video_token, ... (become tokenizer attributes)
    generation_eos: tuple[str, ...]  # EOS tokens of the generation config (first = tokenizer EOS)
    chat_template: str


# (size, tokenizer, special ids, text size) -> (model, processor) of a tiny random-weight checkpoint
TinyBuilder = Callable[[str, Any, dict[str, Any], TextSize], tuple[Any, Any]]


def pixel_values_only(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"pixel_values": np.asarray(batch["pixel_values"], dtype=np.float32)}


def image_features_of(hf_model: Any, **inputs: Any) -> Any:
    """transformers' own ``get_image_features`` flattened to [n_image_tokens, hidden]: what a vision graph is
    validated against."""
    import torch

    out = hf_model.model.get_image_features(**inputs)
    features = getattr(out, "pooler_output", out)
    if isinstance(features, torch.Tensor):
        return features.reshape(-1, features.shape[-1])
    return torch.cat([f.reshape(-1, f.shape[-1]) for f in features], dim=0)


def tower_and_projector(hf_model: Any) -> dict[str, Any]:
    """The vision weights of the LLaVA-style layout most families share: ``model.vision_tower`` and
    ``model.multi_modal_projector``."""
    return {"tower": hf_model.model.vision_tower, "projector": hf_model.model.multi_modal_projector}


def pixel_values_reference(hf_model: Any, batch: dict[str, Any]) -> Any:
    return image_features_of(hf_model, pixel_values=batch["pixel_values"])


@dataclass(frozen=True)
class VisionGraph:
    """How a family's vision tower becomes ``vision_encoder.onnx`` and how a device bundle's engine feeds it.

    ``encode(parts, config, *inputs)`` is the graph: the image embeddings that replace the placeholder tokens, in
    order, [n_image_tokens, hidden], computed with shape-static tensor arithmetic where transformers branches on
    tensor values. ``parts`` picks the modules whose weights the graph holds. ``example`` turns the processor outputs
    of two sample prompts into export inputs with size >= 2 on every dynamic axis; ``feeds`` turns one processor
    output (numpy) into the graph's inputs on the device; ``reference`` is transformers' own answer, for validation.
    """

    inputs: tuple[str, ...]
    dynamic_axes: tuple[dict[int, str], ...]  # per input: axis -> dimension name
    encode: Callable[..., Any]
    parts: Callable[[Any], dict[str, Any]] = tower_and_projector
    reference: Callable[[Any, dict[str, Any]], Any] = pixel_values_reference
    feeds: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = pixel_values_only
    example: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None  # None: concatenate along axis 0


@dataclass(frozen=True)
class Family:
    """One supported family: the ``model_type`` of its configs, its adapter, its tiny checkpoint and its ONNX graphs.

    ``positions`` names the decoder's position ids (``"1d"`` [batch, sequence]; ``"mrope"`` [4, batch, sequence],
    Qwen2-VL style); ``device_processor(root)`` assembles the processor of a bundle where ``AutoProcessor`` needs
    what a device may lack (torchvision); ``decoder_token_types`` gives the decoder graph a ``token_type_ids`` input.
    """

    name: str
    model_type: str
    adapter: type[HFLoadedModel]
    tokenizer: TokenizerSpec | None = None  # None: no tiny checkpoint of its own
    build_tiny: TinyBuilder | None = None
    vision: VisionGraph | None = None  # None: no ONNX vision encoder (a text LM, or see ``no_export``)
    no_export: str = ""  # why a VLM family has no vision graph: ``covspec export`` says it
    positions: str = "1d"
    device_processor: Callable[[Path], Any] | None = None
    # the decoder graph takes ``token_type_ids`` [batch, total] (1 on image tokens) after ``position_ids``: Gemma 3's
    # bidirectional attention among the tokens of one image during prefill (zeros afterwards: causal)
    decoder_token_types: bool = False
    # (config, processor) -> processor: after a drafter's vision config changed its image or patch size, the
    # processor (and the config's image token count) brought in step with it. None: the family cannot change them.
    image_geometry: Callable[[Any, Any], Any] | None = None


@dataclass(frozen=True)
class SavedProcessor:
    """The parts of a processor saved in a bundle, each loaded on its own: what a family's ``device_processor``
    assembles where ``AutoProcessor`` needs what a device lacks (a video processor needs torchvision)."""

    image_processor: Any
    tokenizer: Any
    settings: dict[str, Any]  # processor_config.json (empty when absent)
    chat_template: str | None


def saved_processor(root: Path) -> SavedProcessor:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(root))
    config = root / "processor_config.json"
    chat = root / "chat_template.jinja"
    return SavedProcessor(
        image_processor=transformers.AutoImageProcessor.from_pretrained(str(root)),
        tokenizer=tokenizer,
        settings=json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {},
        chat_template=chat.read_text(encoding="utf-8") if chat.is_file() else getattr(tokenizer, "chat_template", None),
    )


def stack_examples(inputs: tuple[str, ...], batches: list[dict[str, Any]]) -> dict[str, Any]:
    """The default export example: each input of every sample batch, concatenated along axis 0."""
    import torch

    return {name: torch.cat([b[name] for b in batches], dim=0) for name in inputs}


def tiny_text_fields(t: TextSize, ids: dict[str, Any], *, bos: int | None) -> dict[str, Any]:
    """The config fields every tiny language model shares, whatever its config class: size ``t``, the tokenizer's
    special ids ``ids`` (``vocab_size``, ``eos`` list, ``pad``), the wide initializer, untied embeddings."""
    return {
        "vocab_size": ids["vocab_size"],
        "hidden_size": t.hidden,
        "intermediate_size": t.intermediate,
        "num_hidden_layers": t.layers,
        "num_attention_heads": t.heads,
        "num_key_value_heads": t.kv_heads,
        "max_position_embeddings": 2048,
        "initializer_range": TEXT_INIT_RANGE,
        "bos_token_id": bos,
        "eos_token_id": ids["eos"][0],
        "pad_token_id": ids["pad"],
        "tie_word_embeddings": False,
    }


def llama_text_config(t: TextSize, ids: dict[str, Any]) -> Any:
    """The ``LlamaConfig`` of a tiny language model of size ``t`` over the tokenizer whose special ids are ``ids``
    (``vocab_size``, ``bos``, ``eos`` list, ``pad``)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        **tiny_text_fields(t, ids, bos=ids["bos"]),
        rms_norm_eps=1e-6,
    )
