"""Greedy decoding by chunked verification (start + extend + crop) equals the model's own ``generate()``."""

from __future__ import annotations

import numpy as np
import pytest

from covspec.models.tiny import TINY_ARCHS
from tests.models._helpers import (
    greedy_by_verification,
    image_prompt_pairs,
    oracle_proposer,
)

MAX_NEW = 24
PAIRS = 5


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_chunked_greedy_equals_generate(tiny_model, arch, dtype):
    model = tiny_model(arch, dtype=dtype)
    totals = {"rounds": 0, "accepted": 0, "rejected": 0}
    outputs = []
    for i, (image, prompt) in enumerate(image_prompt_pairs(PAIRS, seed=500)):
        reference = model.generate(image, prompt, max_new_tokens=MAX_NEW)
        assert 1 <= len(reference) <= MAX_NEW
        assert reference[0] not in model.eos_token_ids  # EOS is reachable, never immediate
        assert len(reference) == MAX_NEW or reference[-1] in model.eos_token_ids
        got, stats = greedy_by_verification(
            model,
            image,
            prompt,
            max_new_tokens=MAX_NEW,
            propose=oracle_proposer(reference, model.vocab_size, seed=i),
        )
        assert got == reference, f"pair {i}: {got} != {reference}"
        outputs.append(tuple(reference))
        for key in totals:
            totals[key] += stats[key]
    # The loop really verified multi-token chunks, accepting some and rolling back others.
    assert totals["accepted"] > 10 and totals["rejected"] > 3
    # Different images / prompts lead to different generations (the image matters).
    assert len(set(outputs)) == PAIRS


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_one_token_at_a_time_equals_generate(tiny_model, arch):
    model = tiny_model(arch, dtype="float64")
    for image, prompt in image_prompt_pairs(2, seed=600):
        reference = model.generate(image, prompt, max_new_tokens=MAX_NEW)
        got, _ = greedy_by_verification(
            model, image, prompt, max_new_tokens=MAX_NEW, propose=lambda c, k: [], draft_lengths=(0,)
        )
        assert got == reference


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_drafter_proposals_keep_the_target_output(tiny_model, arch):
    """Speculative greedy with the real drafter (its own sequence, cropped in step) gives the target's output."""
    target = tiny_model(arch, "target", dtype="float64")
    drafter = tiny_model(arch, "drafter", dtype="float64")
    for image, prompt in image_prompt_pairs(2, seed=700):
        reference = target.generate(image, prompt, max_new_tokens=MAX_NEW)
        draft_seq = drafter.start(image, prompt)
        fed: list[int] = []  # tokens in the drafter's cache after its prompt

        def propose(committed, k, draft_seq=draft_seq, fed=fed):
            common = 0
            while common < min(len(fed), len(committed)) and fed[common] == committed[common]:
                common += 1
            draft_seq.crop(draft_seq.prompt_length + common)
            del fed[common:]
            rows = draft_seq.extend(list(committed[common:]))
            fed.extend(committed[common:])
            draft = []
            for _ in range(k):
                token = int(np.argmax(rows[-1]))
                draft.append(token)
                rows = draft_seq.extend([token])
                fed.append(token)
            return draft

        got, _ = greedy_by_verification(target, image, prompt, max_new_tokens=MAX_NEW, propose=propose)
        assert got == reference


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_prefill_argmax_is_first_generated_token(tiny_model, arch):
    model = tiny_model(arch)
    for image, prompt in image_prompt_pairs(3, seed=800):
        first = model.generate(image, prompt, max_new_tokens=1)
        assert first == [int(np.argmax(model.start(image, prompt).prefill_logits))]
