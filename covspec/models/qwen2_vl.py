"""Qwen2-VL (``Qwen2VLForConditionalGeneration``): dynamic-resolution vision tower and multimodal RoPE (M-RoPE).

Positions are three rows (temporal, height, width): image tokens get 2-D grid positions, text tokens the same value
in all three rows. After the prompt, every new token's position is its sequence position plus a per-prompt *delta*
(max M-RoPE position + 1 - prompt length, negative when the image's grid is smaller than its token count).

Hugging Face's ``Qwen2VLModel`` keeps that delta on the module (``rope_deltas``) between forwards, which would mix up
sequences sharing one model. Here the delta is computed once per sequence at prefill (``get_rope_index``), kept in
the sequence, and every forward gets explicit ``position_ids`` of shape [4, 1, n]: row 0 the plain text positions
(used for the attention mask, as ``generate()`` does) and rows 1-3 the M-RoPE positions. Nothing reads module state.
"""

from __future__ import annotations

from typing import Any

from covspec.models.common import HFVisionLanguageModel


class Qwen2VLAdapter(HFVisionLanguageModel):
    family = "qwen2_vl"
    model_class_name = "Qwen2VLForConditionalGeneration"
    uses_processor = True

    def _mm_token_type_ids(self, inputs: Any) -> Any:
        import torch

        given = inputs.get("mm_token_type_ids")
        if given is not None:
            return given
        config = self.hf_model.config
        ids = inputs["input_ids"]
        types = torch.zeros_like(ids, dtype=torch.int32)
        types[ids == config.image_token_id] = 1
        types[ids == config.video_token_id] = 2
        return types

    def prompt_positions(self, inputs: Any) -> tuple[Any, int]:
        import torch

        input_ids = inputs["input_ids"]
        length = int(input_ids.shape[1])
        text = torch.arange(length, device=self.device).view(1, 1, length)
        image_grid = inputs.get("image_grid_thw")
        video_grid = inputs.get("video_grid_thw")
        if image_grid is None and video_grid is None:
            return torch.cat([text, text.expand(3, 1, length)], dim=0), 0
        mrope, deltas = self.hf_model.model.get_rope_index(
            input_ids,
            mm_token_type_ids=self._mm_token_type_ids(inputs),
            image_grid_thw=image_grid,
            video_grid_thw=video_grid,
        )
        return torch.cat([text, mrope.to(self.device)], dim=0), int(deltas.reshape(-1)[0])

    def extend_positions(self, start: int, count: int, state: Any) -> Any:
        import torch

        delta = int(state or 0)
        text = torch.arange(start, start + count, device=self.device).view(1, 1, count)
        return torch.cat([text, (text + delta).expand(3, 1, count)], dim=0)


__all__ = ["Qwen2VLAdapter"]
