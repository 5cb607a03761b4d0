"""The family registry: one module per supported family, each declaring its :class:`Family`.

Adding a family is adding its module here (and its tests). ``VLM_FAMILIES`` are the vision-language families by name;
``TEXT_LM`` serves any text-only causal LM transformers knows (a drafter).
"""

from __future__ import annotations

from covspec.models.families import (
    fast_vlm,
    gemma3,
    idefics3,
    internvl,
    lfm2_vl,
    llava,
    llava_next,
    llava_onevision,
    mistral3,
    qwen2_5_vl,
    qwen2_vl,
    qwen3_vl,
    smolvlm,
    text_lm,
)
from covspec.models.families.base import Family, TextSize, TokenizerSpec, VisionGraph

# in registration order, which fixes each tiny checkpoint's seed: a new family goes at the end
VLM_FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        llava.FAMILY,
        qwen2_vl.FAMILY,
        idefics3.FAMILY,
        qwen2_5_vl.FAMILY,
        qwen3_vl.FAMILY,
        gemma3.FAMILY,
        llava_next.FAMILY,
        llava_onevision.FAMILY,
        internvl.FAMILY,
        smolvlm.FAMILY,
        lfm2_vl.FAMILY,
        fast_vlm.FAMILY,
        mistral3.FAMILY,
    )
}
TEXT_LM: Family = text_lm.FAMILY


def vlm_family_of(model_type: str) -> Family | None:
    """The vision-language family whose configs carry ``model_type``, if one is supported."""
    return next((f for f in VLM_FAMILIES.values() if f.model_type == model_type), None)


def family_named(name: str) -> Family:
    """The family a loaded model or a bundle's manifest names (``KeyError`` for one this version lacks)."""
    if name == TEXT_LM.name:
        return TEXT_LM
    return VLM_FAMILIES[name]


__all__ = [
    "TEXT_LM",
    "VLM_FAMILIES",
    "Family",
    "TextSize",
    "TokenizerSpec",
    "VisionGraph",
    "family_named",
    "vlm_family_of",
]
