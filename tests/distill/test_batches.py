"""One padded forward over rows of different lengths gives each row's answer logits as its own forward does."""

from __future__ import annotations

import pytest

from covspec.distill.batches import answer_logits


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl", "idefics3"])
def test_batched_answer_logits_equal_row_by_row(arch: str, tiny_pair) -> None:
    import torch
    from PIL import Image

    from covspec.models import load_model

    model = load_model(str(tiny_pair(arch).target), dtype="float64")
    images = [Image.new("RGB", (40, 30), (250, 0, 0)), Image.new("RGB", (30, 40), (0, 0, 250))]
    prompts = ["What colour is it?", "Describe it."]
    words = ["a red circle", "two small blue squares"]  # ordinary text: no special or placeholder ids
    answers = [model.tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    rendered = [model.render(im, p) for im, p in zip(images, prompts, strict=True)]
    with torch.no_grad():
        batched = answer_logits(model.hf_model, rendered, answers, model.pad_token_id)
        single = torch.cat(
            [
                answer_logits(model.hf_model, [r], [a], model.pad_token_id)
                for r, a in zip(rendered, answers, strict=True)
            ]
        )
        full = []
        for r, a in zip(rendered, answers, strict=True):  # the plain forward of prompt + answer, no helper
            ids = torch.cat([r["input_ids"], torch.tensor([a])], dim=1)
            inputs = {**r, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
            for key in ("token_type_ids", "mm_token_type_ids"):  # Gemma 3 / Qwen2-VL: answer tokens are text (0)
                if key in r:
                    inputs[key] = torch.cat([r[key], torch.zeros(1, len(a), dtype=r[key].dtype)], dim=1)
            logits = model.hf_model(**inputs).logits[0]
            n = r["input_ids"].shape[1]
            full.append(logits[n - 1 : n - 1 + len(a)])
    assert batched.shape == (sum(map(len, answers)), model.vocab_size)
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-9)
    torch.testing.assert_close(batched, torch.cat(full), rtol=0, atol=1e-9)
