"""The device's numpy M-RoPE (``covspec.models.mrope``) against each M-RoPE family's own ``get_rope_index``, through
its adapter, for images of several aspect ratios (Qwen2-VL, Qwen2.5-VL and Qwen3-VL number images alike)."""

from __future__ import annotations

import numpy as np
import pytest

from covspec.models.families import VLM_FAMILIES
from covspec.models.tiny import TINY_ARCHS
from tests.models._helpers import make_image

pytest.importorskip("torch")

MROPE_ARCHS = tuple(arch for arch in TINY_ARCHS if VLM_FAMILIES[arch].positions == "mrope")
SIZES = ((56, 44), (48, 40), (40, 64), (33, 90), (120, 30))  # (width, height): grids of 8x10, 12x6, 4x20, ...


def test_the_mrope_families_are_the_qwen_vl_ones() -> None:
    assert set(MROPE_ARCHS) == {"qwen2_vl", "qwen2_5_vl", "qwen3_vl"}


@pytest.mark.parametrize("size", ["target", "drafter"])
@pytest.mark.parametrize("arch", MROPE_ARCHS)
def test_numpy_mrope_equals_get_rope_index(arch, size, tiny_pair) -> None:
    from covspec.models import load_model, mrope

    pair = tiny_pair(arch)
    model = load_model(str(pair.target if size == "target" else pair.drafter), dtype="float32")
    for i, wh in enumerate(SIZES):
        batch = model.render(make_image(80 + i, wh), "What colour is the large square on the left?")
        positions, delta = model.prompt_positions(batch)
        want, want_delta = mrope.prompt_position_ids(
            batch["input_ids"].numpy()[0],
            image_token_id=model.image_token_id,
            video_token_id=model.hf_model.config.video_token_id,
            spatial_merge_size=2,
            image_grid_thw=batch["image_grid_thw"].numpy(),
        )
        np.testing.assert_array_equal(positions.numpy(), want)
        assert delta == want_delta
