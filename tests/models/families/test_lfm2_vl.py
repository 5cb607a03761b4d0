"""LFM2-VL's rollback cache: conv layers keep their whole input history, so any crop back to the prompt is exact."""

from __future__ import annotations

import numpy as np

from tests.models._helpers import make_image


def _tokens(model, n: int, seed: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, model.vocab_size, n)]


def test_crops_deeper_than_the_last_one_equal_a_fresh_sequence(tiny_model):
    model = tiny_model("lfm2_vl", dtype="float64")
    image, prompt = make_image(21), "Describe the image."
    tokens = _tokens(model, 9, seed=1)
    fresh = model.start(image, prompt)
    reference = np.vstack([fresh.prefill_logits[None], fresh.extend(tokens)])

    seq = model.start(image, prompt)
    base = seq.prompt_length
    seq.extend(tokens[:6])
    seq.crop(base + 5)
    seq.extend(_tokens(model, 2, seed=2))  # a rejected branch, then one token more of the first
    seq.crop(base + 5)
    seq.extend(tokens[5:7])
    seq.crop(base + 2)  # further back than every earlier crop: transformers' own conv crop would have lost this
    rows = seq.extend(tokens[2:])
    np.testing.assert_allclose(rows, reference[3:], rtol=0, atol=1e-10 * np.abs(reference).max())
    assert seq.kv_bytes() == model.kv_bytes_per_token() * seq.length
