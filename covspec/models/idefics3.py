"""Idefics3 (``Idefics3ForConditionalGeneration``): a SigLIP-style vision tower, pixel shuffle, a Llama decoder.

The processor wraps each image as ``<fake_token_around_image><global-img><image>*N<fake_token_around_image>`` (and,
with image splitting on, one such block per tile with ``<row_i_col_j>`` markers); ``image_tokens`` counts the
``<image>`` positions only. Positions are plain sequence positions.
"""

from __future__ import annotations

from covspec.models.common import HFVisionLanguageModel


class Idefics3Adapter(HFVisionLanguageModel):
    family = "idefics3"
    model_class_name = "Idefics3ForConditionalGeneration"
    uses_processor = True


__all__ = ["Idefics3Adapter"]
