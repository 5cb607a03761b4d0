"""Text-only causal LMs (Llama, Qwen2, ... via ``AutoModelForCausalLM``), usable as drafters.

The prompt is rendered with the tokenizer's own chat template, text only (any image is ignored), and tokenized
without adding special tokens (the template carries them), as ``tokenizer.apply_chat_template(tokenize=True)`` does.
A tokenizer without a chat template gets the bare prompt with the tokenizer's special tokens.
"""

from __future__ import annotations

from typing import Any

from covspec.models.common import USER_ROLE, HFLoadedModel


class TextLMAdapter(HFLoadedModel):
    family = "text_lm"
    model_class_name = "AutoModelForCausalLM"
    uses_processor = False

    def render(self, image: Any | None, prompt: str) -> Any:
        tokenizer = self.tokenizer
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": USER_ROLE, "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            batch = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        else:
            batch = tokenizer(prompt, return_tensors="pt")
        return self.to_model_inputs(batch)


__all__ = ["TextLMAdapter"]
