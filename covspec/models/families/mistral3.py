"""Mistral 3 (``Mistral3ForConditionalGeneration``: Mistral-Small-3.1 / 3.2): a Pixtral vision tower, a patch merger,
a Mistral decoder.

Prompt: Mistral's instruct format (``<s>[INST]...[/INST]``); the template writes ``[IMG]`` where the image goes and
``PixtralProcessor`` expands it into the image's grid of tokens, row by row: ``[IMG]`` * columns then
``[IMG_BREAK]``, the last row ending in ``[IMG_END]`` instead. Images keep their aspect ratio: the longest edge is
brought to at most ``size["longest_edge"]`` and both sides to multiples of ``patch_size * spatial_merge_size``, so
the number of image tokens (the ``[IMG]`` positions only, ``image_token_id``) depends on the image's shape. The
processor also returns ``image_sizes`` (each image's resized height and width), which the prefill passes on.

Positions are plain sequence positions; the decoder is a plain Mistral model.

Vision graph: Pixtral's tower crops each image of a padded batch to its ``image_sizes`` and builds a block-diagonal
attention mask with python loops over those values, and the patch merger splits the features per image the same
way. The graph here encodes ONE image, ``pixel_values`` [1, 3, H, W] with H and W dynamic (the engine feeds the
image cropped to its ``image_sizes``): one image needs no mask, and its 2-D RoPE positions and the merger's
``spatial_merge_size``² regrouping are shape arithmetic. The feeds refuse a prompt with more than one image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from covspec.models.common import HFVisionLanguageModel
from covspec.models.families.base import (
    Family,
    TextSize,
    TokenizerSpec,
    VisionGraph,
    image_features_of,
    tiny_text_fields,
)


class Mistral3Adapter(HFVisionLanguageModel):
    family = "mistral3"
    model_class_name = "Mistral3ForConditionalGeneration"
    uses_processor = True


# -- vision graph: pixel_values [1, 3, H, W] (one image, unpadded) -> [(H / p / m) * (W / p / m), hidden] ----------


def _encode(parts: Any, config: Any, pixel_values: Any) -> Any:
    import torch

    tower, projector = parts["tower"], parts["projector"]
    merge = int(config.spatial_merge_size)
    embeds = tower.patch_conv(pixel_values.to(tower.patch_conv.weight.dtype))[0]  # [d, h, w]
    d, h, w = embeds.shape
    hidden = tower.ln_pre(embeds.flatten(1).T.unsqueeze(0))  # [1, h * w, d], row-major patches
    rows = torch.arange(h, device=hidden.device)[:, None].expand(h, w).reshape(-1)
    cols = torch.arange(w, device=hidden.device)[None, :].expand(h, w).reshape(-1)
    position_embeddings = tower.patch_positional_embedding(hidden, torch.stack([rows, cols], dim=-1))
    states = [hidden]  # transformers' hidden_states: the embeddings, then every layer's output
    for layer in tower.transformer.layers:
        hidden = layer(hidden, None, position_embeddings=position_embeddings)  # one image: no block mask
        states.append(hidden)
    layer_ids = config.vision_feature_layer
    layer_ids = [layer_ids] if isinstance(layer_ids, int) else list(layer_ids)
    features = projector.norm(torch.cat([states[i] for i in layer_ids], dim=-1)[0])  # [h * w, d']
    # the merger's unfold over the (h, w) grid, as a reshape: each merge x merge block becomes one row
    dim = features.shape[-1]
    hb, wb = h // merge, w // merge
    grid = features.reshape(h, w, dim).permute(2, 0, 1)[:, : hb * merge, : wb * merge]
    grid = grid.reshape(dim, hb, merge, wb, merge).permute(1, 3, 0, 2, 4).reshape(hb * wb, dim * merge * merge)
    merged = projector.patch_merger.merging_layer(grid)
    return projector.linear_2(projector.act(projector.linear_1(merged)))


def _feeds(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    pixels = np.asarray(batch["pixel_values"], dtype=np.float32)
    sizes = np.asarray(batch["image_sizes"], dtype=np.int64).reshape(-1, 2)
    if pixels.shape[0] != 1 or sizes.shape[0] != 1:
        raise ValueError(
            f"mistral3's ONNX vision graph encodes one image per prompt, not {sizes.shape[0]}: Pixtral crops the "
            "images of a padded batch to their image_sizes and masks attention between them by their values, which "
            "a shape-static graph cannot do"
        )
    height, width = (int(v) for v in sizes[0])
    return {"pixel_values": np.ascontiguousarray(pixels[:, :, :height, :width])}


def _example(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """The first sample's image, cropped to its size (H and W dynamic; the tiny sizes give >= 2 on each)."""
    batch = batches[0]
    height, width = (int(v) for v in batch["image_sizes"].reshape(-1, 2)[0])
    return {"pixel_values": batch["pixel_values"][:1, :, :height, :width].contiguous()}


def _reference(hf_model: Any, batch: dict[str, Any]) -> Any:
    return image_features_of(hf_model, pixel_values=batch["pixel_values"], image_sizes=batch["image_sizes"])


VISION = VisionGraph(
    inputs=("pixel_values",),
    dynamic_axes=({2: "height", 3: "width"},),
    encode=_encode,
    reference=_reference,
    feeds=_feeds,
    example=_example,
)


# -- tiny checkpoint ------------------------------------------------------------------------------------------------

# Mistral-Small-3.1's instruct format: [SYSTEM_PROMPT]...[/SYSTEM_PROMPT], [INST]...[/INST], assistant turns end in
# </s>; an image is [IMG] where it stands in the user's content; nothing is added for the generation prompt
_MISTRAL3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}[SYSTEM_PROMPT]"
    "{% elif message['role'] == 'user' %}[INST]{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ item['text'] }}{% elif item['type'] == 'image' %}[IMG]{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{% if message['role'] == 'system' %}[/SYSTEM_PROMPT]"
    "{% elif message['role'] == 'user' %}[/INST]"
    "{% elif message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)

TOKENIZER = TokenizerSpec(
    special_tokens=(
        "<unk>",
        "<s>",
        "</s>",
        "[INST]",
        "[/INST]",
        "[SYSTEM_PROMPT]",
        "[/SYSTEM_PROMPT]",
        "[IMG]",
        "<pad>",
        "[IMG_BREAK]",
        "[IMG_END]",
    ),
    named={"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
    model_specific={"image_token": "[IMG]", "image_break_token": "[IMG_BREAK]", "image_end_token": "[IMG_END]"},
    generation_eos=("</s>",),
    chat_template=_MISTRAL3_TEMPLATE,
)
# image tokens ([IMG] only): <= 16 (target: longest edge 32, patch 4, merge 2) / <= 9 (drafter: longest edge 24)
_VISION = {
    "target": {"hidden": 32, "intermediate": 64, "layers": 2, "heads": 2, "longest": 32, "patch": 4},
    "drafter": {"hidden": 16, "intermediate": 32, "layers": 1, "heads": 1, "longest": 24, "patch": 4},
}
_MERGE = 2


def build_tiny(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        MistralConfig,
        PixtralImageProcessor,
        PixtralProcessor,
        PixtralVisionConfig,
    )

    v = _VISION[size]
    text_config = MistralConfig(
        **tiny_text_fields(text, ids, bos=ids["bos"]),
        head_dim=text.hidden // text.heads,
        rms_norm_eps=1e-5,
        sliding_window=None,
    )
    vision_config = PixtralVisionConfig(
        hidden_size=v["hidden"],
        intermediate_size=v["intermediate"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"],
        head_dim=v["hidden"] // v["heads"],
        image_size=v["longest"],
        patch_size=v["patch"],
    )
    config = Mistral3Config(
        text_config=text_config,
        vision_config=vision_config,
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=_MERGE,
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    model = Mistral3ForConditionalGeneration(config)
    image_processor = PixtralImageProcessor(
        size={"longest_edge": v["longest"]}, patch_size={"height": v["patch"], "width": v["patch"]}
    )
    processor = PixtralProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=v["patch"],
        spatial_merge_size=_MERGE,
        chat_template=_MISTRAL3_TEMPLATE,
    )
    return model, processor


FAMILY = Family("mistral3", "mistral3", Mistral3Adapter, TOKENIZER, build_tiny, vision=VISION)

__all__ = ["FAMILY", "VISION", "Mistral3Adapter"]
