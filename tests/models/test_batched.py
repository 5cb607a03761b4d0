"""One forward for several sequences gives each the logits and the cache its own forward would: ragged cache lengths
(different prompts, rolled-back rounds, a reduced prefill), ragged new-token counts, M-RoPE positions."""

from __future__ import annotations

import numpy as np
import pytest

from covspec.models.base import extend_together
from covspec.reduce import Budget, TokenReduction
from tests.helpers import PROMPTS, image_bytes, pil

# (image seed, prompt index, tokens fed and rolled back before, tokens of the batched step)
ROWS = [
    (1, 0, [], [5, 9, 11, 3]),
    (2, 3, [7, 8, 9], [4]),
    (3, 1, [12, 13], [6, 2, 8]),
    (4, 6, [], [10, 20]),
]


def _sequences(model, reduce_first: bool = False) -> list:
    sequences = []
    for index, (seed, prompt, before, _) in enumerate(ROWS):
        select = TokenReduction("random", Budget.parse("0.5")).select if reduce_first and index == 0 else None
        sequence = model.start(pil(image_bytes(seed)), PROMPTS[prompt], select=select)
        if before:  # a round that was partly rejected: fed, then rolled back to one past the prompt
            sequence.extend(before)
            sequence.crop(sequence.prompt_length + 1)
        sequences.append(sequence)
    return sequences


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl", "idefics3"])
def test_one_forward_for_many_equals_each_alone(loaded_target, arch: str) -> None:
    model = loaded_target(arch)
    alone, together = _sequences(model, reduce_first=arch == "llava"), _sequences(model, reduce_first=arch == "llava")
    assert len({s.batch_key for s in together}) == 1 and together[0].batch_key is not None
    expected = [s.extend(new) for s, (_, _, _, new) in zip(alone, ROWS, strict=True)]
    forwards = []
    hook = model.hf_model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    try:
        got = extend_together([(s, new) for s, (_, _, _, new) in zip(together, ROWS, strict=True)])
    finally:
        hook.remove()
    assert len(forwards) == 1  # one forward for the four
    for want, have in zip(expected, got, strict=True):
        assert isinstance(have, np.ndarray) and have.shape == want.shape
        np.testing.assert_allclose(have, want, rtol=0, atol=1e-9)
        assert (have.argmax(-1) == want.argmax(-1)).all()
    # the caches grew exactly as alone: the next step, each alone, agrees
    for a, t in zip(alone, together, strict=True):
        assert a.token_ids == t.token_ids and a.kv_bytes() == t.kv_bytes()
        np.testing.assert_allclose(t.extend([4, 5]), a.extend([4, 5]), rtol=0, atol=1e-9)


def test_a_bad_request_fails_alone(loaded_target) -> None:
    model = loaded_target("llava")
    sequences = _sequences(model)
    before = [s.length for s in sequences]
    requests = [(s, new) for s, (_, _, _, new) in zip(sequences, ROWS, strict=True)]
    requests[1] = (sequences[1], [model.vocab_size + 3])
    results = extend_together(requests)
    assert isinstance(results[1], ValueError) and "outside the vocabulary" in str(results[1])
    assert sequences[1].length == before[1]
    for index in (0, 2, 3):
        assert isinstance(results[index], np.ndarray) and sequences[index].length == before[index] + len(ROWS[index][3])


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_prompts_started_together_equal_each_started_alone(loaded_target, arch: str) -> None:
    """LLaVA prefills them in one left-padded forward (prompts of different lengths); Qwen2-VL one by one. A prompt
    past its limit fails alone."""
    from covspec.errors import LimitError
    from covspec.models.base import PromptStart

    model = loaded_target(arch)
    prompts = [PROMPTS[0], "Describe every shape you can see in this picture, and their colours.", PROMPTS[3]]
    requests = [PromptStart(pil(image_bytes(60 + i)), p) for i, p in enumerate(prompts)]
    requests.append(PromptStart(pil(image_bytes(70)), PROMPTS[2], max_prompt_tokens=5))
    forwards = []
    hook = model.hf_model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    try:
        together = model.start_many(requests)
    finally:
        hook.remove()
    assert len(forwards) == (1 if arch == "llava" else 3)
    assert isinstance(together[3], LimitError) and together[3].code == "prompt_too_long"
    for request, sequence in zip(requests[:3], together[:3], strict=True):
        alone = model.start(request.image, request.prompt)
        assert sequence.token_ids == alone.token_ids and sequence.image_tokens == alone.image_tokens
        np.testing.assert_allclose(sequence.prefill_logits, alone.prefill_logits, rtol=0, atol=1e-9)
        assert sequence.kv_bytes() == alone.kv_bytes() and sequence.batch_key is not None
        np.testing.assert_allclose(sequence.extend([4, 9, 2]), alone.extend([4, 9, 2]), rtol=0, atol=1e-9)
