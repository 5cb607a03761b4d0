"""The family registry: one module per supported family, each declaring its :class:`Family`.

Adding a family is adding its module here (and its tests). ``VLM_FAMILIES`` are the vision-language families by name;
``TEXT_LM`` serves any text-only causal LM transformers knows (a drafter).
"""

from __future__ import annotations

from covspec.models.families import idefics3, llava, qwen2_vl, text_lm
from covspec.models.families.base import Family, TextSize, TokenizerSpec

VLM_FAMILIES: dict[str, Family] = {f.name: f for f in (llava.FAMILY, qwen2_vl.FAMILY, idefics3.FAMILY)}
TEXT_LM: Family = text_lm.FAMILY


def vlm_family_of(model_type: str) -> Family | None:
    """The vision-language family whose configs carry ``model_type``, if one is supported."""
    return next((f for f in VLM_FAMILIES.values() if f.model_type == model_type), None)


__all__ = ["TEXT_LM", "VLM_FAMILIES", "Family", "TextSize", "TokenizerSpec", "vlm_family_of"]
