"""ModelSequence: extend equals one-at-a-time, crop rolls back exactly, sequences on one model are independent."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from covspec.models.tiny import TINY_ARCHS
from tests.models._helpers import make_image

TOL = {"float32": 1e-5, "float64": 1e-10}  # relative to the largest logit


def _close(a: np.ndarray, b: np.ndarray, dtype: str) -> None:
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL[dtype] * scale)


def _tokens(model, n: int, seed: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, model.vocab_size, n)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_extend_equals_one_at_a_time(tiny_model, arch, dtype):
    model = tiny_model(arch, dtype=dtype)
    expected_dtype = np.float64 if dtype == "float64" else np.float32
    image, prompt = make_image(11, (56, 40)), "Describe the image."
    tokens = _tokens(model, 7, seed=1)

    block = model.start(image, prompt)
    assert block.prefill_logits.shape == (model.vocab_size,)
    assert block.prefill_logits.dtype == expected_dtype
    rows = block.extend(tokens)
    assert rows.shape == (len(tokens), model.vocab_size) and rows.dtype == expected_dtype

    single = model.start(image, prompt)
    _close(single.prefill_logits, block.prefill_logits, dtype)
    one_by_one = np.stack([single.extend([t])[0] for t in tokens])
    _close(rows, one_by_one, dtype)
    assert block.length == single.length == block.prompt_length + len(tokens)
    assert block.token_ids == single.token_ids


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_crop_then_extend_reproduces_logits(tiny_model, arch):
    model = tiny_model(arch, dtype="float64")
    seq = model.start(make_image(12), "How many circles are there in the image?")
    prompt_length = seq.prompt_length
    first = _tokens(model, 6, seed=2)
    rows = seq.extend(first)
    kv_full = seq.kv_bytes()

    seq.crop(prompt_length + 2)  # keep two, drop four
    assert seq.length == prompt_length + 2
    assert seq.kv_bytes() < kv_full
    assert seq.token_ids[prompt_length:] == tuple(first[:2])
    _close(seq.extend(first[2:]), rows[2:], "float64")

    seq.crop(prompt_length + 3)
    other = _tokens(model, 3, seed=3)  # a different branch, then back to the first one
    seq.extend(other)
    seq.crop(prompt_length + 3)
    _close(seq.extend(first[3:]), rows[3:], "float64")

    seq.crop(prompt_length)  # all the way back to the prompt
    _close(seq.extend(first), rows, "float64")
    assert seq.length == prompt_length + len(first)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_interleaved_sequences_do_not_disturb_each_other(tiny_model, arch):
    """Two sessions on one model, differently sized images (for Qwen2-VL: different M-RoPE deltas), interleaved
    with each other and with the model's own generate(); each gets what it gets alone."""
    model = tiny_model(arch, dtype="float64")
    a_input = (make_image(21, (64, 32)), "Describe the image.")
    b_input = (make_image(22, (40, 40)), "Is there a triangle above the red circle?")
    a_tokens, b_tokens = _tokens(model, 8, seed=4), _tokens(model, 8, seed=5)

    alone_a = model.start(*a_input).extend(a_tokens)
    alone_b = model.start(*b_input).extend(b_tokens)

    a, b = model.start(*a_input), model.start(*b_input)
    got_a, got_b = [], []
    for i in range(0, 8, 2):
        got_a.append(a.extend(a_tokens[i : i + 2]))
        model.generate(*b_input, max_new_tokens=2)  # HF generate keeps state on some modules (Qwen2-VL rope_deltas)
        got_b.append(b.extend(b_tokens[i : i + 2]))
    _close(np.concatenate(got_a), alone_a, "float64")
    _close(np.concatenate(got_b), alone_b, "float64")


def test_qwen2_vl_sequences_in_threads(tiny_model):
    model = tiny_model("qwen2_vl", dtype="float64")
    inputs = [
        (make_image(30 + i, size), "Describe the image.") for i, size in enumerate([(64, 32), (40, 40), (48, 64)])
    ]
    tokens = [_tokens(model, 6, seed=40 + i) for i in range(len(inputs))]
    expected = [model.start(*inp).extend(tok) for inp, tok in zip(inputs, tokens, strict=True)]
    results: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        seq = model.start(*inputs[i])
        results[i] = np.concatenate([seq.extend([t]) for t in tokens[i]])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, exp in enumerate(expected):
        _close(results[i], exp, "float64")


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_kv_bytes(tiny_model, arch):
    model = tiny_model(arch)
    seq = model.start(make_image(13), "Describe the image.")
    per_token = model.kv_bytes_per_token()
    assert per_token > 0
    assert seq.kv_bytes() == per_token * seq.length
    seq.extend(_tokens(model, 5, seed=6))
    assert seq.kv_bytes() == per_token * seq.length
    seq.crop(seq.prompt_length + 1)
    assert seq.kv_bytes() == per_token * (seq.prompt_length + 1)


def test_kv_bytes_follow_dtype(tiny_model):
    assert tiny_model("llava", dtype="float64").kv_bytes_per_token() == 2 * tiny_model("llava").kv_bytes_per_token()


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_bad_tokens_and_crops_are_rejected_without_damage(tiny_model, arch):
    model = tiny_model(arch)
    seq = model.start(make_image(14), "Describe the image.")
    tokens = _tokens(model, 3, seed=7)
    seq.extend(tokens)
    length = seq.length
    with pytest.raises(ValueError):
        seq.extend([tokens[0], model.vocab_size])
    with pytest.raises(ValueError):
        seq.extend([-1])
    assert seq.length == length
    with pytest.raises(ValueError):
        seq.crop(seq.prompt_length - 1)
    with pytest.raises(ValueError):
        seq.crop(length + 1)
    assert seq.length == length and seq.kv_bytes() == model.kv_bytes_per_token() * length
    empty = seq.extend([])
    assert empty.shape == (0, model.vocab_size)
    assert seq.length == length


def test_start_without_image(tiny_model):
    for arch in TINY_ARCHS:
        model = tiny_model(arch)
        seq = model.start(None, "Describe the image.")
        assert seq.image_tokens == 0
        rows = seq.extend(_tokens(model, 2, seed=8))
        assert rows.shape == (2, model.vocab_size)
        assert np.isfinite(rows).all()
