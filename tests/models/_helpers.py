"""Shared test material: seeded images, prompts, and a greedy verify loop built on start / extend / crop."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

PROMPTS = (
    "Describe the image.",
    "What is in this picture? Describe the colours and shapes you see.",
    "How many circles are there in the image?",
    "Is there a triangle above the red circle?",
    "Please give a detailed description of the image.",
    "What colour is the large square on the left?",
)

IMAGE_SIZES = ((48, 48), (56, 40), (32, 64), (40, 40), (64, 48), (36, 52))  # (width, height)


def make_image(seed: int, size: tuple[int, int] = (48, 48)):
    """A small PIL image of random coloured shapes on a random background (deterministic in ``seed``)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, 2))
        box = (x0, y0, x1 + 2, y1 + 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    return image


def image_prompt_pairs(n: int, seed: int = 0):
    return [(make_image(seed + i, IMAGE_SIZES[i % len(IMAGE_SIZES)]), PROMPTS[i % len(PROMPTS)]) for i in range(n)]


Proposer = Callable[[Sequence[int], int], list[int]]


def greedy_by_verification(
    model,
    image,
    prompt: str,
    *,
    max_new_tokens: int,
    propose: Proposer,
    draft_lengths: Sequence[int] = (3, 1, 4, 2, 5, 0),
) -> tuple[list[int], dict[str, int]]:
    """Greedy decoding of ``model`` by verifying proposed chunks: each round feeds the pending token and up to K
    proposed tokens in one ``extend``, follows the argmax chain as far as it agrees, and crops the rest away.

    The output depends only on the model's argmaxes, so it must equal the model's own greedy ``generate()``.
    """
    eos = set(model.eos_token_ids)
    seq = model.start(image, prompt)
    committed: list[int] = []
    pending = int(np.argmax(seq.prefill_logits))
    stats = {"rounds": 0, "accepted": 0, "rejected": 0}
    while True:
        committed.append(pending)
        if pending in eos or len(committed) >= max_new_tokens:
            break
        k = draft_lengths[stats["rounds"] % len(draft_lengths)]
        k = min(k, max_new_tokens - len(committed))
        draft = [int(t) for t in propose(committed, k)][:k]
        base = seq.length
        rows = seq.extend([pending] + draft)
        assert rows.shape == (1 + len(draft), model.vocab_size)
        stats["rounds"] += 1
        accepted = 0
        stop = False
        for i, token in enumerate(draft):
            if int(np.argmax(rows[i])) != token:
                stats["rejected"] += 1
                break
            committed.append(token)
            accepted += 1
            if token in eos or len(committed) >= max_new_tokens:
                stop = True
                break
        stats["accepted"] += accepted
        if stop:
            break
        pending = int(np.argmax(rows[accepted]))
        seq.crop(base + 1 + accepted)
        assert seq.length == base + 1 + accepted
    return committed, stats


def oracle_proposer(reference: Sequence[int], vocab_size: int, seed: int) -> Proposer:
    """Proposes the reference continuation, corrupting one token in about half the rounds."""
    rng = np.random.default_rng(seed)

    def propose(committed: Sequence[int], k: int) -> list[int]:
        draft = list(reference[len(committed) : len(committed) + k])
        while len(draft) < k:
            draft.append(int(rng.integers(0, vocab_size)))
        if draft and rng.random() < 0.5:
            i = int(rng.integers(0, len(draft)))
            draft[i] = (draft[i] + 1 + int(rng.integers(0, vocab_size - 1))) % vocab_size
        return draft

    return propose
