"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``): LLaVA with "anyres" tiling, here in the style of
``llava-hf/llava-v1.6-mistral-7b-hf`` (CLIP tower, Mistral decoder, ``[INST] <image>\\n... [/INST]``).

The image processor resizes and pads the image to the ``image_grid_pinpoints`` resolution that best fits its size
(``select_best_resolution``) and cuts it into tiles of the vision tower's size, after one *base* tile of the whole
image resized: ``pixel_values`` [1, 1 + rows * cols, 3, S, S] and ``image_sizes`` [1, 2] (height, width of the
original image). The model encodes every tile, lays the tiles' patch features out as one (rows * p) x (cols * p) map
(p = S / patch size), *unpads* it (drops the rows or columns that are padding at the image's aspect ratio), appends
the learned ``image_newline`` after each row and puts the base tile's p * p features first. The processor expands
the one ``<image>`` of the prompt into exactly that many placeholders, so the count depends on the image's size.
Positions are plain sequence positions.

The ONNX vision graph covers every grid and every image size (one image per call): it takes ``pixel_values``
[num_tiles, 3, S, S] and ``image_sizes`` [1, 2], chooses the grid from the pinpoints (baked in as constants, in
float64 as transformers' Python floats do), and gathers the kept features with one ``NonZero`` over a fixed
superset of positions, so the number of output rows follows ``image_sizes`` with no data-dependent Python. The
feeds refuse a batch of more than one image. LLaVA-OneVision shares this graph (plus its anyres_max pooling).

The tiny checkpoints use 12 px tiles on grids 1x2, 2x1 and 2x2 (llava-1.6: 336 px, 1x2, 2x1, 2x2, 1x3, 3x1).
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
    tiny_text_fields,
)
from covspec.models.families.llava import clip_vision_config, feature_reference, select_features


class LlavaNextAdapter(HFVisionLanguageModel):
    family = "llava_next"
    model_class_name = "LlavaNextForConditionalGeneration"
    uses_processor = True


# -- vision graph: pixel_values [num_tiles, 3, S, S] + image_sizes int64 [1, 2] -> [n_image_tokens, hidden] ----------


def _best_grid(image_sizes: Any, pinpoints: list[list[int]], tile: int) -> tuple[Any, Any]:
    """transformers' ``select_best_resolution`` as tensor arithmetic: (rows, cols) of tiles. float64 throughout, as
    Python's floats; ties go to the first pinpoint, as the Python loop does."""
    import torch

    sizes = image_sizes.reshape(-1)[:2].to(torch.float64)
    oh, ow = sizes[0], sizes[1]
    pins = torch.tensor(pinpoints, dtype=torch.float64, device=image_sizes.device)  # [P, 2] (height, width)
    ph, pw = pins[:, 0], pins[:, 1]
    scale = torch.minimum(pw / ow, ph / oh)
    effective = torch.minimum(torch.floor(ow * scale) * torch.floor(oh * scale), ow * oh)
    wasted = ph * pw - effective
    best = effective == effective.max()
    best = best & (wasted == torch.where(best, wasted, torch.full_like(wasted, float("inf"))).min())
    index = torch.argmax(best.to(torch.int64))  # the first of the best
    rows = (ph[index] / tile).floor().to(torch.int64)
    cols = (pw[index] / tile).floor().to(torch.int64)
    return rows, cols


def _unpadded(image_sizes: Any, height: Any, width: Any) -> tuple[Any, Any, Any, Any]:
    """transformers' ``unpad_image`` on a height x width feature map: the kept rows [r0, r1) and columns [c0, c1)."""
    import torch

    sizes = image_sizes.reshape(-1)[:2].to(torch.float64)
    oh, ow = sizes[0], sizes[1]
    h, w = height.to(torch.float64), width.to(torch.float64)
    wide = ow / oh > w / h

    def kept(current: Any, original: Any, scale: Any) -> Any:
        new = torch.floor(torch.round(original * scale * 1e7) / 1e7).to(torch.int64)  # int(round(x, 7))
        return torch.div(current - new, 2, rounding_mode="floor")

    pad_rows = torch.where(wide, kept(height, oh, w / ow), torch.zeros_like(height))
    pad_cols = torch.where(wide, torch.zeros_like(width), kept(width, ow, h / oh))
    return pad_rows, height - pad_rows, pad_cols, width - pad_cols


def anyres_features(
    parts: Any, config: Any, pixel_values: Any, image_sizes: Any, max_num_patches: int | None = None
) -> Any:
    """One image's packed anyres features: base tile, then the unpadded (and, with ``max_num_patches``, OneVision's
    anyres_max bilinear-pooled) tile map with ``image_newline`` after each row. Shape-static but for one
    ``NonZero`` whose length is the number of kept positions."""
    import torch

    tile = int(config.vision_config.image_size)
    p = tile // int(config.vision_config.patch_size)
    pinpoints = [list(map(int, pin)) for pin in config.image_grid_pinpoints]
    out = parts["tower"](pixel_values, output_hidden_states=True, return_dict=True)
    features = parts["projector"](select_features(config, out.hidden_states))  # [T, p * p, D]
    base, tiles = features[0], features[1:]
    hidden = features.shape[-1]
    device = features.device

    rows, cols = _best_grid(image_sizes, pinpoints, tile)
    height, width = rows * p, cols * p
    r0, r1, c0, c1 = _unpadded(image_sizes, height, width)
    cur_h, cur_w = r1 - r0, c1 - c0
    out_h, out_w = cur_h, cur_w
    if max_num_patches is not None:  # anyres_max_N: shrink maps over N tiles' worth (ratio > 1.1), bilinearly
        area = (cur_h * cur_w).to(torch.float64)
        ratio = torch.sqrt(area / float(max_num_patches * p * p))
        pool = ratio > 1.1
        out_h = torch.where(pool, torch.div(cur_h.to(torch.float64), ratio, rounding_mode="floor"), cur_h)
        out_w = torch.where(pool, torch.div(cur_w.to(torch.float64), ratio, rounding_mode="floor"), cur_w)
        out_h, out_w = out_h.to(torch.int64), out_w.to(torch.int64)

    # every output position of the largest grid, row-major, one extra column for the newline
    max_h = max(pin[0] // tile for pin in pinpoints) * p
    max_w = max(pin[1] // tile for pin in pinpoints) * p
    i = torch.arange(max_h, device=device)[:, None].expand(max_h, max_w + 1)
    j = torch.arange(max_w + 1, device=device)[None, :].expand(max_h, max_w + 1)
    newline = j == max_w
    keep = (i < out_h) & ((j < out_w) | newline)
    where = torch.nonzero(keep.reshape(-1)).reshape(-1)

    # source coordinates in the unpadded map: PyTorch's bilinear (align_corners=False), the identity when unpooled
    def source(index: Any, size_in: Any, size_out: Any) -> tuple[Any, Any, Any]:
        # an unpadded side may be empty (a very flat image): then only newlines are kept, and any index will do
        size_in, size_out = torch.clamp(size_in, min=1), torch.clamp(size_out, min=1)
        scale = size_in.to(torch.float32) / size_out.to(torch.float32)
        real = torch.clamp((index.to(torch.float32) + 0.5) * scale - 0.5, min=0.0)
        low = torch.minimum(torch.floor(real).to(torch.int64), size_in - 1)
        high = torch.minimum(low + 1, size_in - 1)
        frac = torch.clamp(real - low.to(torch.float32), 0.0, 1.0)
        return low, high, frac

    flat_i = i.reshape(-1)[where]
    flat_j = torch.clamp(j.reshape(-1)[where], max=max_w - 1)
    y0, y1, fy = source(flat_i, cur_h, out_h)
    x0, x1, fx = source(flat_j, cur_w, out_w)
    table = torch.cat([tiles.reshape(-1, hidden), parts["newline"][0].reshape(1, hidden).to(tiles.dtype)], dim=0)
    newline_row = tiles.shape[0] * p * p

    def at(y: Any, x: Any) -> Any:
        y, x = y + r0, x + c0  # full-map coordinates
        tile_index = (y // p) * cols + x // p
        return table[tile_index * (p * p) + (y % p) * p + x % p]

    fy, fx = fy[:, None].to(tiles.dtype), fx[:, None].to(tiles.dtype)
    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    mapped = top * (1 - fy) + bottom * fy
    is_newline = newline.reshape(-1)[where][:, None]
    packed = torch.where(is_newline, table[newline_row].expand_as(mapped), mapped)
    return torch.cat([base, packed], dim=0)


def _encode(parts: Any, config: Any, pixel_values: Any, image_sizes: Any) -> Any:
    return anyres_features(parts, config, pixel_values, image_sizes)


def anyres_feeds(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One image's tiles [num_tiles, 3, S, S] and its size [1, 2]; a batch of several images is refused."""
    pixels = np.asarray(batch["pixel_values"], dtype=np.float32)
    sizes = np.asarray(batch["image_sizes"], dtype=np.int64).reshape(-1, 2)
    if pixels.ndim != 5 or pixels.shape[0] != 1 or sizes.shape[0] != 1:
        raise ValueError(
            f"the anyres vision graph encodes one image per call: pixel_values {list(pixels.shape)} with "
            f"image_sizes {list(sizes.shape)} is not one image's [1, num_tiles, 3, S, S] and [1, 2]"
        )
    return {"pixel_values": pixels[0], "image_sizes": sizes}


def anyres_example(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """The first sample image's tiles (always >= 2: the base tile and at least one grid tile) and size."""
    return {"pixel_values": batches[0]["pixel_values"][0], "image_sizes": batches[0]["image_sizes"].reshape(1, 2)}


def anyres_parts(hf: Any) -> dict[str, Any]:
    from torch import nn

    model = hf.model
    newline = nn.ParameterList([model.image_newline])  # a ModuleDict holds modules: the parameter goes in a list
    return {"tower": model.vision_tower, "projector": model.multi_modal_projector, "newline": newline}


def _reference(hf_model: Any, batch: dict[str, Any]) -> Any:
    return feature_reference(hf_model, batch, image_sizes=batch["image_sizes"])


VISION = VisionGraph(
    inputs=("pixel_values", "image_sizes"),
    dynamic_axes=({0: "num_tiles"}, {}),
    parts=anyres_parts,
    encode=_encode,
    reference=_reference,
    feeds=anyres_feeds,
    example=anyres_example,
)


# -- tiny checkpoint ------------------------------------------------------------------------------------------------

# llava-v1.6-mistral-7b-hf's chat format: ``[INST] <image>\n... [/INST]`` (its tokenizer adds the BOS; ours is here)
_LLAVA_NEXT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\\n' }}{{ message['content'] if message['content'] is string else message['content'][0]['text'] }}"
    "{{ '\\n<</SYS>>\\n\\n' }}"
    "{% elif message['role'] == 'user' %}[INST] "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% endif %} [/INST]"
    "{% elif message['role'] == 'assistant' %} "
    "{{ message['content'] if message['content'] is string else message['content'][0]['text'] }}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)

TOKENIZER = TokenizerSpec(
    special_tokens=("<unk>", "<s>", "</s>", "<pad>", "<image>"),
    named={"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
    model_specific={"image_token": "<image>"},
    generation_eos=("</s>",),
    chat_template=_LLAVA_NEXT_TEMPLATE,
)
# tiles of 12 px; grids 1x2, 2x1, 2x2 (llava-1.6 has 2x1, 1x2, 2x2, 3x1, 1x3 of 336 px).
# image tokens: p*p base + unpadded map + newlines: <= 9 + 36 + 6 = 51 (target, p = 3) / <= 4 + 16 + 4 = 24 (drafter)
_PINPOINTS = [[12, 24], [24, 12], [24, 24]]
_VISION = {
    "target": {"hidden": 32, "intermediate": 64, "layers": 2, "heads": 2, "image": 12, "patch": 4},
    "drafter": {"hidden": 16, "intermediate": 32, "layers": 1, "heads": 1, "image": 12, "patch": 6},
}


def mistral_text_config(t: TextSize, ids: dict[str, Any]) -> Any:
    from transformers import MistralConfig

    return MistralConfig(
        **tiny_text_fields(t, ids, bos=ids["bos"]),
        head_dim=t.hidden // t.heads,
        sliding_window=None,  # Mistral-7B-Instruct-v0.2, llava-1.6's decoder, has none
        rms_norm_eps=1e-6,
    )


def build_tiny(size: str, tokenizer: Any, ids: dict[str, Any], text: TextSize) -> tuple[Any, Any]:
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    v = _VISION[size]
    vision = clip_vision_config(v)
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=mistral_text_config(text, ids),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=_PINPOINTS,
        image_seq_length=(v["image"] // v["patch"]) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2 if v["layers"] > 1 else -1,
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    model = LlavaNextForConditionalGeneration(config)
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": v["image"]},
        crop_size={"height": v["image"], "width": v["image"]},
        image_grid_pinpoints=_PINPOINTS,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=v["patch"],
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS, dropped by the "default" strategy
        chat_template=_LLAVA_NEXT_TEMPLATE,
    )
    return model, processor


FAMILY = Family("llava_next", "llava_next", LlavaNextAdapter, TOKENIZER, build_tiny, vision=VISION)

__all__ = [
    "FAMILY",
    "VISION",
    "LlavaNextAdapter",
    "anyres_example",
    "anyres_features",
    "anyres_feeds",
    "anyres_parts",
    "mistral_text_config",
]
