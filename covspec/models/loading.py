"""``load_model``: detect a checkpoint's family from its ``config.json`` and wrap it in the matching adapter.

Families: ``llava``, ``qwen2_vl``, ``idefics3`` (vision-language), and any text-only causal LM that
``AutoModelForCausalLM`` knows (``llama``, ``qwen2``, ...), which can serve as a drafter. A local folder or a Hub id
is accepted; what cannot be loaded raises ``covspec.errors.ModelLoadError``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

from covspec.errors import ModelLoadError
from covspec.models.base import LoadedModel
from covspec.models.common import HFLoadedModel, resolve_dtype, tokenizer_hash
from covspec.models.families import TEXT_LM, VLM_FAMILIES, family_named, vlm_family_of

logger = logging.getLogger(__name__)
SUPPORTED_DTYPES = ("auto", "float32", "float64", "bfloat16", "float16")


def load_model(path_or_id: str, *, dtype: str = "auto", device: str = "cpu") -> LoadedModel:
    """Load a checkpoint (local folder or Hub id) with its tokenizer and processor.

    ``dtype`` is one of ``auto`` (the checkpoint's own), ``float32``, ``float64``, ``bfloat16``, ``float16``; logits
    come back as float64 for a float64 model and float32 otherwise. ``device`` is a torch device string.
    """
    torch_dtype = resolve_dtype(dtype)
    source = str(path_or_id)
    config = read_config(source)
    adapter_cls = adapter_for(config, source)
    return _instantiate(adapter_cls, source, torch_dtype, device)


def read_config(path_or_id: str) -> dict[str, Any]:
    """The raw ``config.json`` of a local folder or Hub id."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ModelLoadError(f"{path_or_id}: no config.json in this folder, so it is not a model checkpoint")
        try:
            return json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{config_file}: unreadable config ({exc})") from exc
    if path.exists():
        raise ModelLoadError(f"{path_or_id}: is a file; expected a checkpoint folder or a Hub id")
    if _looks_like_path(path_or_id):
        raise ModelLoadError(f"{path_or_id}: no such folder")
    try:
        from transformers import PretrainedConfig

        config, _ = PretrainedConfig.get_config_dict(path_or_id)
    except Exception as exc:  # hub or network failure, bad repo id
        raise ModelLoadError(f"{path_or_id}: not a local folder, and its config could not be fetched ({exc})") from exc
    return config


def adapter_for(config: dict[str, Any], source: str = "") -> type[HFLoadedModel]:
    """The adapter class for a checkpoint's config, or ``ModelLoadError`` for an unsupported family."""
    model_type = config.get("model_type")
    if not model_type:
        raise ModelLoadError(f"{source}: config.json has no model_type")
    family = vlm_family_of(model_type)
    if family is not None:
        return family.adapter
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and "vision_config" not in config:
        return TEXT_LM.adapter
    supported = ", ".join(VLM_FAMILIES)
    raise ModelLoadError(
        f"{source}: unsupported model family {model_type!r}; supported: {supported}, "
        "and text-only causal LMs (llama, qwen2, ...)"
    )


def _instantiate(adapter_cls: type[HFLoadedModel], source: str, torch_dtype: Any, device: str) -> HFLoadedModel:
    import transformers

    try:
        model_cls = getattr(transformers, adapter_cls.model_class_name)
        hf_model = model_cls.from_pretrained(source, dtype=torch_dtype)
        hf_model.to(device)
        hf_model.eval()
        if adapter_cls.uses_processor:
            processor = transformers.AutoProcessor.from_pretrained(source)
            tokenizer = processor.tokenizer
        else:
            processor = None
            tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{source}: could not load as {adapter_cls.family} ({type(exc).__name__}: {exc})") from exc
    source_generation_config = copy.deepcopy(getattr(hf_model, "generation_config", None))
    model = adapter_cls(
        name=source,
        hf_model=hf_model,
        tokenizer=tokenizer,
        processor=processor,
        source_generation_config=source_generation_config,
        vision=family_named(adapter_cls.family).vision,
    )
    logger.info(
        "loaded %s (%s, %s, %s): vocab %d, %d parameters",
        source,
        adapter_cls.family,
        model.dtype,
        model.device,
        model.vocab_size,
        model.num_parameters(),
    )
    return model


def load_processor(root: Path, family: str) -> Any:
    """A bundle's processor (VLM) or tokenizer (text LM), loadable without torch.

    Without torch, transformers picks the PIL image processors; where ``AutoProcessor`` still needs what a device may
    lack (Qwen2-VL's video processor needs torchvision), the family assembles the processor itself.
    """
    import transformers

    if family == TEXT_LM.name:
        return transformers.AutoTokenizer.from_pretrained(str(root))
    try:
        return transformers.AutoProcessor.from_pretrained(str(root))
    except ImportError:
        assemble = family_named(family).device_processor
        if assemble is None:
            raise
        return assemble(Path(root))


def _looks_like_path(text: str) -> bool:
    """True for strings that can only be a filesystem path (a Hub id is ``name`` or ``owner/name``)."""
    return (
        os.path.isabs(text) or text.startswith((".", "~")) or "\\" in text or text.count("/") > 1 or text.endswith("/")
    )


@contextlib.contextmanager
def quiet_transformers() -> Any:
    """Silence transformers' own progress bars (loading and saving shards) for the duration: commands that show their
    own rich progress would otherwise interleave tqdm bars with it."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


__all__ = [
    "SUPPORTED_DTYPES",
    "VLM_FAMILIES",
    "adapter_for",
    "load_model",
    "load_processor",
    "quiet_transformers",
    "read_config",
    "tokenizer_hash",
]
