"""A fresh drafter shaped from its target (``--drafter-arch``): the target's own config with fields overridden.

Starting from the target's config keeps what must agree (vocabulary, special ids, the image placeholder, the
processor and its tokenizer) and changes only size: ``text.num_hidden_layers=1,text.hidden_size=64`` and the like.
``vision.image_size`` / ``vision.patch_size`` change how many visual tokens the drafter reads, where the family knows
how to bring its processor in step (``Family.image_geometry``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from covspec.errors import ConfigError
from covspec.models.families import vlm_family_of

GEOMETRY = ("image_size", "patch_size")
SECTIONS = {"text": "text_config", "vision": "vision_config"}


def parse_arch(spec: str) -> dict[str, dict[str, Any]]:
    """``"text.num_hidden_layers=1,vision.image_size=96,initializer_range=0.08"`` -> overrides per config section
    (``""`` for the top-level config). Values are ints, floats, booleans or strings."""
    overrides: dict[str, dict[str, Any]] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--drafter-arch: {part!r} is not KEY=VALUE (e.g. text.num_hidden_layers=1)")
        section, _, name = key.strip().rpartition(".")
        if section and section not in SECTIONS:
            raise ConfigError(f"--drafter-arch: {key!r}: the section must be one of {', '.join(SECTIONS)} or none")
        overrides.setdefault(section, {})[name] = _value(value.strip())
    if not overrides:
        raise ConfigError("--drafter-arch is empty")
    return overrides


def _value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def build_drafter(target: Path | str, overrides: dict[str, dict[str, Any]], seed: int) -> tuple[Any, Any]:
    """A randomly initialised (model, processor): the target's config with ``overrides``, the target's processor
    (same tokenizer and chat template) adjusted to the drafter's image geometry. Seeded by ``seed``."""
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(target))
    family = vlm_family_of(config.model_type)
    if family is None:
        raise ConfigError(f"{target}: model type {config.model_type!r} is not a supported vision-language family")
    geometry_changed = False
    for section, fields in overrides.items():
        part = getattr(config, SECTIONS[section]) if section else config
        for name, value in fields.items():
            if not hasattr(part, name):
                where = f"{SECTIONS[section]}." if section else ""
                raise ConfigError(f"--drafter-arch: {family.name} configs have no {where}{name}")
            setattr(part, name, value)
        geometry_changed |= section == "vision" and any(name in GEOMETRY for name in fields)
        if section == "text":
            _keep_head_dim_consistent(part, fields)
    processor = transformers.AutoProcessor.from_pretrained(str(target))
    if geometry_changed:
        if family.image_geometry is None:
            raise ConfigError(
                f"--drafter-arch: {family.name} drafters cannot change vision.image_size / vision.patch_size here "
                "(only llava-style towers can); change widths and layers instead"
            )
        processor = family.image_geometry(config, processor)
    torch.manual_seed(seed)
    model_class_name = family.adapter.model_class_name
    model_class = getattr(transformers, model_class_name)
    try:
        model = model_class.from_config(config) if model_class_name.startswith("Auto") else model_class(config)
    except Exception as exc:  # transformers raises many types for inconsistent configs
        raise ConfigError(f"--drafter-arch gives an inconsistent {family.name} config: {exc}") from exc
    model.generation_config = transformers.GenerationConfig.from_model_config(config)
    generation = Path(target) / "generation_config.json"
    if generation.is_file():
        model.generation_config = transformers.GenerationConfig.from_pretrained(str(target))
    return model, processor


def _keep_head_dim_consistent(text: Any, fields: dict[str, Any]) -> None:
    """A text config that spells ``head_dim`` out keeps hidden / heads when either changes (unless set too)."""
    if "head_dim" in fields or getattr(text, "head_dim", None) is None:
        return
    if "hidden_size" in fields or "num_attention_heads" in fields:
        text.head_dim = text.hidden_size // text.num_attention_heads


__all__ = ["build_drafter", "parse_arch"]
