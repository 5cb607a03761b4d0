"""What every Hugging Face adapter shares: the KV-cache sequence, prefill, generate, fingerprint and byte counts.

A family module only says how its prompt is rendered and, where the model needs it (Qwen2-VL), how positions are
numbered. Everything that touches the cache lives here once:

- ``HFSequence`` owns one ``DynamicCache``; ``extend`` runs one forward over the new tokens with explicit
  ``position_ids``; ``crop`` rolls every layer back with ``DynamicCache``'s layer ``crop``.
- ``HFLoadedModel`` keeps no per-generation state, so many sequences of one model live at once. Its ``generate`` is the
  model's own ``generate()`` on the same processor output, with every generation setting passed explicitly.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from covspec.errors import LimitError
from covspec.models.base import (
    LoadedModel,
    ModelFingerprint,
    ModelSequence,
    PromptStart,
    SelectPrompt,
    TokenSequence,
    check_token_ids,
)
from covspec.models.batched import append_new_entries, gather_caches, padding_mask, plain_cache
from covspec.models.prompts import vlm_inputs
from covspec.models.vocabulary import PROBE_PROMPT, Vocabulary, vocabulary_of

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from covspec.models.families.base import VisionGraph

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 over the sorted token->id map and the special tokens of a Hugging Face tokenizer.

    Padding, truncation and other call-time settings are not part of it: two tokenizers that map text to the same ids
    and mark the same special tokens hash equal.
    """
    vocab = sorted((str(tok), int(idx)) for tok, idx in tokenizer.get_vocab().items())
    named = sorted((str(k), str(v)) for k, v in special_tokens_of(tokenizer).items())
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special_added = sorted(
        (int(idx), str(getattr(tok, "content", tok))) for idx, tok in added.items() if getattr(tok, "special", False)
    )
    payload = json.dumps(
        {"vocab": vocab, "special_tokens": named, "special_added_tokens": special_added},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def special_tokens_of(tokenizer: Any) -> dict[str, str]:
    """Named special tokens (bos/eos/pad/unk/..., and model-specific ones such as image_token) as strings."""
    mapping = getattr(tokenizer, "special_tokens_map", {}) or {}
    return {str(k): str(v) for k, v in mapping.items() if isinstance(v, str) or hasattr(v, "content")}


# Processor attributes that name the text a placeholder stands for (Qwen2-VL's image/video pads, Idefics3's
# fake-image and global-image tokens, LLaVA's <image>).
_PLACEHOLDER_ATTRIBUTES = ("image_token", "video_token", "fake_image_token", "global_image_token", "boi_token")


def reserved_texts_of(tokenizer: Any, processor: Any = None) -> frozenset[str]:
    """Every special added token of ``tokenizer`` and every placeholder ``processor`` names."""
    texts = {str(v) for v in (getattr(tokenizer, "all_special_tokens", None) or [])}
    for added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(added, "special", False):
            texts.add(str(added.content))
    for holder in (processor, tokenizer):
        for name in _PLACEHOLDER_ATTRIBUTES:
            value = getattr(holder, name, None) if holder is not None else None
            if isinstance(value, str) and value:
                texts.add(value)
    return frozenset(t for t in texts if t)


def logits_to_numpy(logits: torch.Tensor) -> np.ndarray:
    """float64 stays float64; every other float dtype becomes float32."""
    import torch

    if logits.dtype == torch.float64:
        return logits.detach().cpu().numpy().astype(np.float64, copy=False)
    return logits.detach().to(torch.float32).cpu().numpy()


def resolve_dtype(dtype: str) -> Any:
    """Map a dtype name to what ``from_pretrained(dtype=...)`` takes."""
    import torch

    table = {
        "auto": "auto",
        "float32": torch.float32,
        "float64": torch.float64,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
    }
    if dtype not in table:
        from covspec.errors import ConfigError

        raise ConfigError(f"unsupported dtype {dtype!r}; choose one of {', '.join(table)}")
    return table[dtype]


def eos_ids_of(tokenizer: Any, generation_config: Any) -> tuple[int, ...]:
    """The tokenizer's EOS first, then any other EOS of the checkpoint's generation config, without duplicates."""
    ids: list[int] = []
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.append(int(tokenizer.eos_token_id))
    gen_eos = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    if gen_eos is not None:
        for t in gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]:
            if int(t) not in ids:
                ids.append(int(t))
    return tuple(ids)


def kv_cache_bytes(cache: Any) -> int:
    """Bytes held by every layer of a ``Cache``: keys and values, and the convolution states of hybrid models."""
    total = 0
    for layer in getattr(cache, "layers", []):
        tensors = [getattr(layer, "keys", None), getattr(layer, "values", None)]
        tensors += list((getattr(layer, "conv_states", None) or {}).values())
        total += sum(t.numel() * t.element_size() for t in tensors if t is not None and hasattr(t, "numel"))
    return total


def new_cache() -> Any:
    """An empty ``DynamicCache`` whose layers all keep every position.

    Built without the model config on purpose: for a checkpoint with sliding-window layers, a config-built cache
    drops positions that fall out of the window, and those could not be rolled back to. Full layers give the same
    attention (the mask still applies the window) and can be cropped to any length; they cost more memory.
    """
    from transformers import DynamicCache

    return DynamicCache()


def crop_cache(cache: Any, length: int) -> None:
    """Roll every layer of ``cache`` back to ``length`` positions (layers already shorter are left alone)."""
    for layer in getattr(cache, "layers", []):
        current = layer.get_seq_length()
        if current > length:
            layer.crop(length - current)  # a negative count removes that many positions from the end


_TEXT_INPUTS = ("input_ids", "attention_mask")  # padded per row in a batched prefill; every other input stacks


# --------------------------------------------------------------------------------------------------------------
# Sequence
# --------------------------------------------------------------------------------------------------------------


class HFSequence(TokenSequence):
    """One generation on a Hugging Face model: a ``DynamicCache`` plus the ids it holds."""

    def __init__(
        self,
        owner: HFLoadedModel,
        cache: Any,
        prompt_ids: Sequence[int],
        prefill_logits: np.ndarray,
        image_tokens: int,
        position_state: Any = None,
        skipped: int = 0,
    ) -> None:
        super().__init__(prompt_ids, prefill_logits, image_tokens)
        self._owner = owner
        self._cache = cache
        self._position_state = position_state  # family-specific (Qwen2-VL: its M-RoPE delta)
        # prompt positions the prefill left out (visual tokens a reducer dropped): the cache holds that many fewer
        # entries than the ids, whose positions keep the full prompt's numbering
        self._skipped = skipped
        self._batchable = plain_cache(cache)  # its layer types are fixed once prefilled: asked every batch

    def extend(self, tokens: Sequence[int]) -> np.ndarray:
        ids = self._owner.check_token_ids(tokens)
        if not ids:
            return np.zeros((0, self._owner.vocab_size), dtype=self._owner.logits_dtype)
        start = len(self._ids)
        try:
            logits = self._owner.forward_tokens(ids, self._cache, start, self._position_state)
        except BaseException:
            # a failed forward may have grown some layers: keep the cache consistent
            crop_cache(self._cache, start - self._skipped)
            raise
        self._ids.extend(ids)
        return logits

    def crop(self, length: int) -> None:
        length = self._checked_crop(length)
        crop_cache(self._cache, length - self._skipped)
        del self._ids[length:]

    @property
    def batch_key(self) -> object | None:
        return self._owner if self._batchable else None

    @classmethod
    def extend_group(cls, requests: Sequence[tuple[ModelSequence, Sequence[int]]]) -> list[np.ndarray]:
        members = [(sequence, sequence._owner.check_token_ids(tokens)) for sequence, tokens in requests]
        assert all(isinstance(s, HFSequence) and s._owner is members[0][0]._owner for s, _ in members)
        rows = [(ids, s._cache, len(s._ids), s._position_state) for s, ids in members]
        logits = members[0][0]._owner.forward_many(rows)
        for sequence, ids in members:
            sequence._ids.extend(ids)
        return logits

    def kv_bytes(self) -> int:
        return kv_cache_bytes(self._cache)


# --------------------------------------------------------------------------------------------------------------
# Loaded model
# --------------------------------------------------------------------------------------------------------------


class HFLoadedModel(LoadedModel):
    """A Hugging Face causal or image-text-to-text model with its tokenizer (and processor, for a VLM).

    Subclasses implement ``render`` (the prompt as model inputs) and may override ``prompt_positions`` /
    ``extend_positions`` (explicit position ids, so nothing depends on state kept on the module).
    """

    family = "hf"
    model_class_name = "AutoModelForCausalLM"  # the transformers class ``load_model`` instantiates
    batched_prefill = False  # True: prompts prefill together left-padded (positions 0..L-1 per row, no extra state)
    uses_processor = False  # True: load ``AutoProcessor`` (tokenizer inside); False: ``AutoTokenizer`` only

    def __init__(
        self,
        *,
        name: str,
        hf_model: Any,
        tokenizer: Any,
        processor: Any = None,
        source_generation_config: Any = None,
        vision: VisionGraph | None = None,
    ) -> None:
        import torch
        from transformers import GenerationConfig

        self.name = name
        self.vision = vision  # the family's vision graph: what reducing the visual tokens starts from
        self.hf_model = hf_model
        self.processor = processor
        self._tokenizer = tokenizer
        self.source_generation_config = source_generation_config
        self.text_config = hf_model.config.get_text_config(decoder=True)
        self.device = next(hf_model.parameters()).device
        self.dtype = next(hf_model.parameters()).dtype
        self.logits_dtype = np.float64 if self.dtype == torch.float64 else np.float32
        self._vocab_size = int(hf_model.get_output_embeddings().weight.shape[0])
        eos = eos_ids_of(tokenizer, source_generation_config)
        if not eos:
            logger.warning("%s: no end-of-sequence token; generation stops only at max_new_tokens", name)
        self._eos = eos
        pad = getattr(source_generation_config, "pad_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None and eos:
            pad = eos[0]
        self.pad_token_id = None if pad is None else int(pad)
        # The checkpoint's generation config may carry sampling or penalty settings (repetition_penalty,
        # min_new_tokens, suppress_tokens, ...). generate() passes every setting it means explicitly; the model keeps
        # only the ids, so nothing else leaks in through generate()'s defaults. The original stays readable above.
        hf_model.generation_config = GenerationConfig(
            eos_token_id=list(eos) if eos else None,
            pad_token_id=self.pad_token_id,
            bos_token_id=getattr(source_generation_config, "bos_token_id", None),
        )
        self._logits_to_keep = "logits_to_keep" in inspect.signature(hf_model.forward).parameters
        self._generate_lock = threading.Lock()
        self._fingerprint = ModelFingerprint(
            name=name,
            family=self.family,
            vocab_size=self._vocab_size,
            tokenizer_hash=tokenizer_hash(tokenizer),
            special_tokens=special_tokens_of(tokenizer),
            eos_token_ids=eos,
        )

    # -- LoadedModel ---------------------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def fingerprint(self) -> ModelFingerprint:
        return self._fingerprint

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def accepts_images(self) -> bool:
        return False

    @property
    def image_token_id(self) -> int | None:
        return None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.hf_model.parameters())

    @functools.cached_property
    def vocabulary(self) -> Vocabulary:
        probe = self.render(None, PROBE_PROMPT)["input_ids"][0].tolist()
        return vocabulary_of(self._tokenizer, self._vocab_size, probe)

    @functools.cached_property
    def reserved_texts(self) -> frozenset[str]:
        return reserved_texts_of(self._tokenizer, self.processor)

    def start(
        self,
        image: Any | None,
        prompt: str,
        *,
        max_prompt_tokens: int | None = None,
        select: SelectPrompt | None = None,
    ) -> HFSequence:
        import torch

        inputs = self._rendered(image, prompt, max_prompt_tokens)
        input_ids = inputs["input_ids"]
        position_ids, state = self.prompt_positions(inputs)
        skipped = 0
        if select is not None and image is not None:
            kwargs, keep = self._selected_inputs(inputs, select)
            position_ids, skipped = position_ids[..., keep], int((~keep).sum())
        else:
            kwargs = {k: v for k, v in inputs.items() if k != "attention_mask"}
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1  # as generate() does: the lm head on the last position only
        cache = self.empty_cache()
        with torch.inference_mode():
            out = self.hf_model(**kwargs, position_ids=position_ids, cache=cache, use_cache=True)
        prompt_ids = input_ids[0].tolist()
        image_tokens = self._image_tokens(prompt_ids) - skipped
        return HFSequence(
            self,
            cache,
            prompt_ids,
            prefill_logits=logits_to_numpy(out.logits[0, -1]),
            image_tokens=image_tokens,
            position_state=state,
            skipped=skipped,
        )

    def _rendered(self, image: Any | None, prompt: str, max_prompt_tokens: int | None) -> Any:
        """The model inputs of one prompt; one longer than ``max_prompt_tokens`` is refused before any forward."""
        inputs = self.render(image, prompt)
        input_ids = inputs["input_ids"]
        if input_ids.shape[0] != 1:
            raise ValueError("one prompt per sequence")
        if max_prompt_tokens is not None and input_ids.shape[1] > max_prompt_tokens:
            raise LimitError(
                f"the rendered prompt has {input_ids.shape[1]} tokens; at most {max_prompt_tokens}",
                code="prompt_too_long",
            )
        return inputs

    def start_many(self, requests: Sequence[PromptStart]) -> list[ModelSequence | Exception]:
        """Prompts without a reduction whose image tensors stack (same shapes) are prefilled in one left-padded
        forward where the family numbers positions plainly (``batched_prefill``); the rest one by one."""
        if not self.batched_prefill or len(requests) < 2:
            return super().start_many(requests)
        out: list[ModelSequence | Exception | None] = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, Any]]] = {}
        for index, r in enumerate(requests):
            if r.select is not None and r.image is not None:
                out[index] = super().start_many([r])[0]
                continue
            try:
                inputs = self._rendered(r.image, r.prompt, r.max_prompt_tokens)
            except Exception as exc:
                out[index] = exc
                continue
            shapes = tuple(sorted((k, tuple(v.shape[1:])) for k, v in inputs.items() if k not in _TEXT_INPUTS))
            groups.setdefault(shapes, []).append((index, inputs))
        for members in groups.values():
            try:
                sequences = self._prefill_together([inputs for _, inputs in members])
            except Exception:  # not expected: say so, and still serve each prompt alone
                logger.warning("a batched prefill of %d prompts failed; one by one", len(members), exc_info=True)
                sequences = super().start_many([requests[i] for i, _ in members])
            for (index, _), sequence in zip(members, sequences, strict=True):
                out[index] = sequence
        return [result for result in out if result is not None]

    def _prefill_together(self, rendered: list[Any]) -> list[HFSequence]:
        """One forward over several rendered prompts, left-padded (positions 0.. per row, padding masked), each
        row's cache cut out of the batch's."""
        import torch
        from transformers import DynamicCache

        lengths = [int(inputs["input_ids"].shape[1]) for inputs in rendered]
        width = max(lengths)
        input_ids = torch.full((len(rendered), width), self.pad_token_id or 0, dtype=torch.long, device=self.device)
        mask = torch.zeros((len(rendered), width), dtype=torch.long, device=self.device)
        for row, (inputs, length) in enumerate(zip(rendered, lengths, strict=True)):
            input_ids[row, width - length :] = inputs["input_ids"][0]
            mask[row, width - length :] = 1
        others = {k: torch.cat([inputs[k] for inputs in rendered]) for k in rendered[0] if k not in _TEXT_INPUTS}
        if self._logits_to_keep:
            others["logits_to_keep"] = 1
        cache = self.empty_cache()
        with torch.inference_mode():
            out = self.hf_model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                cache=cache,
                use_cache=True,
                **others,
            )
        sequences = []
        for row, (inputs, length) in enumerate(zip(rendered, lengths, strict=True)):
            own = [(layer.keys[row : row + 1, :, width - length :].clone(),
                    layer.values[row : row + 1, :, width - length :].clone()) for layer in cache.layers]  # fmt: skip
            prompt_ids = inputs["input_ids"][0].tolist()
            logits = logits_to_numpy(out.logits[row, -1])
            cache_row = DynamicCache(ddp_cache_data=own)
            sequences.append(HFSequence(self, cache_row, prompt_ids, logits, self._image_tokens(prompt_ids)))
        return sequences

    def _image_tokens(self, prompt_ids: list[int]) -> int:
        """Image placeholder positions in a rendered prompt (0 for a model without images)."""
        return 0 if self.image_token_id is None else sum(1 for t in prompt_ids if t == self.image_token_id)

    def _selected_inputs(self, inputs: Any, select: SelectPrompt) -> tuple[dict[str, Any], Any]:
        """The model inputs of a prefill that reads only the positions ``select`` keeps (embeddings: the family's
        ``get_image_features`` over the placeholders, then the selection's), and the keep mask; the positions stay
        the full prompt's."""
        import torch

        if self.vision is None:
            raise ValueError(f"family {self.family!r} has no vision graph here, so its visual tokens cannot be reduced")
        input_ids = inputs["input_ids"]
        with torch.inference_mode():
            features = self.vision.reference(self.hf_model, inputs)
            embeds = self.hf_model.get_input_embeddings()(input_ids)[0]
        where = (input_ids[0] == self.image_token_id).cpu().numpy()
        selection = select(embeds.to(torch.float64).cpu().numpy(), where, features.to(torch.float64).cpu().numpy())
        keep = torch.from_numpy(np.asarray(selection.keep, dtype=bool)).to(self.device)
        kwargs: dict[str, Any] = {
            "inputs_embeds": torch.from_numpy(np.asarray(selection.embeds)).to(self.device, self.dtype)[keep][None]
        }
        if inputs.get("token_type_ids") is not None:  # Gemma 3: the kept tokens of an image attend to each other
            kwargs["token_type_ids"] = inputs["token_type_ids"][:, keep]
        return kwargs, keep

    def generate(
        self,
        image: Any | None,
        prompt: str,
        *,
        max_new_tokens: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[int]:
        import torch
        from transformers import GenerationConfig

        if max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        if max_new_tokens == 0:
            return []
        inputs = self.render(image, prompt)
        prompt_len = int(inputs["input_ids"].shape[1])
        settings: dict[str, Any] = {
            "max_new_tokens": int(max_new_tokens),
            "min_new_tokens": 0,
            "do_sample": bool(do_sample),
            "num_beams": 1,
            "num_return_sequences": 1,
            "use_cache": True,
            "eos_token_id": list(self._eos) if self._eos else None,
            "pad_token_id": self.pad_token_id,
        }
        if do_sample:
            if temperature <= 0:
                raise ValueError("sampling needs temperature > 0")
            settings.update(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p))
        config = GenerationConfig(**settings)
        with self._generate_lock, torch.inference_mode():
            # Qwen2-VL's generate() keeps rope deltas on the module, and a seed is process-global: one at a time.
            if do_sample and seed is not None:
                torch.manual_seed(int(seed))
            out = self.hf_model.generate(**inputs, generation_config=config)
        return [int(t) for t in out[0, prompt_len:].tolist()]

    def kv_bytes_per_token(self) -> int:
        import torch

        tc = self.text_config
        heads = tc.num_attention_heads
        kv_heads = getattr(tc, "num_key_value_heads", None) or heads
        head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // heads
        element = torch.empty((), dtype=self.dtype).element_size()
        return 2 * tc.num_hidden_layers * kv_heads * head_dim * element

    # -- hooks for family modules ---------------------------------------------------------------------------------

    def render(self, image: Any | None, prompt: str) -> Any:
        """The prompt (and image) as the model's inputs, batch of one, on the model's device and dtype."""
        raise NotImplementedError

    def empty_cache(self) -> Any:
        """The cache a new sequence starts from: one ``crop_cache`` rolls back to any length (``new_cache``)."""
        return new_cache()

    def prompt_positions(self, inputs: Any) -> tuple[torch.Tensor, Any]:
        """Position ids of the prompt and any state ``extend_positions`` needs. Default: 0..L-1, shape [1, L]."""
        import torch

        length = int(inputs["input_ids"].shape[1])
        return torch.arange(length, device=self.device).unsqueeze(0), None

    def extend_positions(self, start: int, count: int, state: Any) -> torch.Tensor:
        """Position ids of ``count`` tokens appended at sequence position ``start``. Default: shape [1, count]."""
        import torch

        return torch.arange(start, start + count, device=self.device).unsqueeze(0)

    # -- used by HFSequence ---------------------------------------------------------------------------------------

    def check_token_ids(self, tokens: Sequence[int]) -> list[int]:
        return check_token_ids(tokens, self._vocab_size)

    def forward_tokens(self, ids: list[int], cache: Any, start: int, state: Any) -> np.ndarray:
        import torch

        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        position_ids = self.extend_positions(start, len(ids), state)
        with torch.inference_mode():
            out = self.hf_model(input_ids=input_ids, position_ids=position_ids, cache=cache, use_cache=True)
        return logits_to_numpy(out.logits[0])

    def forward_many(self, rows: Sequence[tuple[list[int], Any, int, Any]]) -> list[np.ndarray]:
        """``forward_tokens`` of several rows (ids, plain cache, start position, position state) in one forward
        (``covspec.models.batched``): [len(ids), vocab] logits per row. Caches change only once the forward has
        succeeded."""
        import torch

        caches = [cache for _, cache, _, _ in rows]
        counts = [len(ids) for ids, _, _, _ in rows]
        new_width = max(counts)
        input_ids = torch.full((len(rows), new_width), self.pad_token_id or 0, dtype=torch.long)
        for row, (ids, _, _, _) in enumerate(rows):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        # the padding tokens after a row's own continue its positions: only they ever see them
        position_ids = torch.cat([self.extend_positions(start, new_width, state) for _, _, start, state in rows], -2)
        batched, width, lengths = gather_caches(caches)
        mask = padding_mask(lengths, width, counts, new_width)
        with torch.inference_mode():
            out = self.hf_model(
                input_ids=input_ids.to(self.device),
                position_ids=position_ids,
                attention_mask=mask.to(self.device),
                cache=batched,
                use_cache=True,
            )
        append_new_entries(caches, batched, width, counts)
        logits = logits_to_numpy(out.logits)
        return [logits[row, :count] for row, count in enumerate(counts)]

    def to_model_inputs(self, batch: Any) -> Any:
        """Move a processor / tokenizer output to the model's device; float tensors take the model's dtype."""
        import torch

        moved = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.dtype)
            moved[key] = value
        return moved


class HFVisionLanguageModel(HFLoadedModel):
    """A VLM whose processor renders the prompt exactly as DESIGN.md §7 says."""

    uses_processor = True

    @property
    def accepts_images(self) -> bool:
        return True

    @property
    def image_token_id(self) -> int | None:
        config = self.hf_model.config
        value = getattr(config, "image_token_id", None)
        if value is None:
            value = getattr(config, "image_token_index", None)
        return None if value is None else int(value)

    def render(self, image: Any | None, prompt: str) -> Any:
        return self.to_model_inputs(vlm_inputs(self.processor, image, prompt, "pt"))
