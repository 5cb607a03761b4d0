"""LLaVA (``LlavaForConditionalGeneration``): a CLIP-style vision tower, a projector, a Llama-style decoder.

The processor expands the one ``<image>`` of the chat template into one placeholder per visual token
(``(image_size / patch_size)**2``, less the CLS token under the "default" feature strategy). Positions are plain
sequence positions, so the shared sequence machinery is used as is.
"""

from __future__ import annotations

from covspec.models.common import HFVisionLanguageModel


class LlavaAdapter(HFVisionLanguageModel):
    family = "llava"
    model_class_name = "LlavaForConditionalGeneration"
    uses_processor = True


__all__ = ["LlavaAdapter"]
