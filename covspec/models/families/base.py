"""What a family module declares, and the pieces of a tiny checkpoint that every family shares.

A family module (``covspec/models/families/<name>.py``) holds that family's knowledge in one place: its adapter
(loading, rendering, positions) and its tiny checkpoint (tokenizer specification, model and processor builder),
declared as one :class:`Family`. Importing a family module loads neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


@dataclass(frozen=True)
class Family:
    """One supported family: the ``model_type`` of its configs, its adapter and its tiny checkpoint."""

    name: str
    model_type: str
    adapter: type[HFLoadedModel]
    tokenizer: TokenizerSpec | None = None  # None: no tiny checkpoint of its own
    build_tiny: TinyBuilder | None = None


def llama_text_config(t: TextSize, ids: dict[str, Any]) -> Any:
    """The ``LlamaConfig`` of a tiny language model of size ``t`` over the tokenizer whose special ids are ``ids``
    (``vocab_size``, ``bos``, ``eos`` list, ``pad``)."""
    from transformers import LlamaConfig

    return LlamaConfig(
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
