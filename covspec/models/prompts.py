"""Prompt rendering (DESIGN.md §7), one function per kind of model, shared by every engine and the edge.

Torch-free: the ONNX Runtime drafter renders with these too, so drafter and target see the same token ids by
construction. ``return_tensors`` is the processor's ("pt" for torch models, "np" for ONNX Runtime).
"""

from __future__ import annotations

from typing import Any

USER_ROLE = "user"


def vlm_inputs(processor: Any, image: Any | None, prompt: str, return_tensors: str) -> Any:
    """The model's own chat template with an image part (when there is an image), then the processor's own call."""
    content: list[dict[str, Any]] = []
    if image is not None:
        content.append({"type": "image"})
    content.append({"type": "text", "text": prompt})
    text = processor.apply_chat_template([{"role": USER_ROLE, "content": content}], add_generation_prompt=True)
    if image is not None:
        return processor(text=text, images=[image], return_tensors=return_tensors)
    return processor(text=text, return_tensors=return_tensors)


def text_inputs(tokenizer: Any, prompt: str, return_tensors: str) -> Any:
    """A text-only model: the tokenizer's chat template, tokenized without adding special tokens (the template
    carries them); without a template, the bare prompt with the tokenizer's special tokens."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": USER_ROLE, "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        return tokenizer(text, add_special_tokens=False, return_tensors=return_tensors)
    return tokenizer(prompt, return_tensors=return_tensors)


__all__ = ["USER_ROLE", "text_inputs", "vlm_inputs"]
