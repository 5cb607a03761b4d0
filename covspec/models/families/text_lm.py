"""Text-only causal LMs (Llama, Qwen2, ... via ``AutoModelForCausalLM``), usable as drafters.

The prompt is rendered with the tokenizer's own chat template, text only (any image is ignored), and tokenized
without adding special tokens (the template carries them), as ``tokenizer.apply_chat_template(tokenize=True)`` does.
A tokenizer without a chat template gets the bare prompt with the tokenizer's special tokens.
"""

from __future__ import annotations

from typing import Any

from covspec.models.common import HFLoadedModel
from covspec.models.families.base import Family
from covspec.models.prompts import text_inputs


class TextLMAdapter(HFLoadedModel):
    family = "text_lm"
    model_class_name = "AutoModelForCausalLM"
    uses_processor = False

    def render(self, image: Any | None, prompt: str) -> Any:
        return self.to_model_inputs(text_inputs(self.tokenizer, prompt, "pt"))


# any text-only model_type AutoModelForCausalLM knows (its tiny checkpoint: ``build_tiny_text_drafter``)
FAMILY = Family("text_lm", "*", TextLMAdapter)

__all__ = ["FAMILY", "TextLMAdapter"]
