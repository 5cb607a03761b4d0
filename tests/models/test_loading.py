"""load_model: family detection, dtypes, errors, the text-only drafter, tokenizer hashing, generate() settings."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from covspec.errors import ConfigError, ModelLoadError
from covspec.models import load_model, tokenizer_hash
from covspec.models.tiny import TINY_ARCHS, tiny_tokenizer
from tests.models._helpers import (
    greedy_by_verification,
    image_prompt_pairs,
    make_image,
    oracle_proposer,
)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_family_detection_and_fingerprint(tiny_model, arch):
    model = tiny_model(arch)
    assert model.family == arch and model.accepts_images
    fp = model.fingerprint
    assert fp.family == arch and fp.vocab_size == model.vocab_size
    assert len(fp.tokenizer_hash) == 64
    assert fp.eos_token_ids == model.eos_token_ids and fp.eos_token_ids[0] == model.tokenizer.eos_token_id
    assert fp.special_tokens["eos_token"] == model.tokenizer.eos_token
    assert fp.to_dict()["vocab_size"] == model.vocab_size


def test_missing_or_unknown_folders_raise_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_model(str(tmp_path / "does-not-exist"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(str(empty))
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "no_such_family"}))
    with pytest.raises(ModelLoadError, match="unsupported model family"):
        load_model(str(unknown))
    other_vlm = tmp_path / "other_vlm"
    other_vlm.mkdir()
    (other_vlm / "config.json").write_text(json.dumps({"model_type": "paligemma", "vision_config": {}}))
    with pytest.raises(ModelLoadError, match="unsupported"):
        load_model(str(other_vlm))
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"\0")
    with pytest.raises(ModelLoadError):
        load_model(str(a_file))


def test_broken_checkpoint_raises_model_load_error(tmp_path, tiny_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_path("llava", "drafter"), broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError):
        load_model(str(broken))


def test_dtypes(tiny_path):
    path = str(tiny_path("idefics3", "drafter"))
    image = make_image(1)
    for dtype, expected in [
        ("auto", np.float32),
        ("float32", np.float32),
        ("float64", np.float64),
        ("bfloat16", np.float32),
    ]:
        model = load_model(path, dtype=dtype)
        seq = model.start(image, "Describe the image.")
        assert seq.prefill_logits.dtype == expected
        assert seq.extend([5, 6]).dtype == expected
    with pytest.raises(ConfigError):
        load_model(path, dtype="int8")


def test_text_only_drafter(tiny_root, tiny_model):
    text = load_model(str(tiny_root / "llama-text-drafter"))
    target = tiny_model("llava")
    assert text.family == "text_lm" and not text.accepts_images
    assert text.fingerprint.tokenizer_hash == target.fingerprint.tokenizer_hash
    assert text.vocab_size == target.vocab_size
    assert text.eos_token_ids == target.eos_token_ids
    image = make_image(2)
    seq = text.start(image, "Describe the image.")  # the image is ignored
    assert seq.image_tokens == 0
    assert "Describe the image." in text.tokenizer.decode(list(seq.token_ids))
    assert list(seq.token_ids) == list(text.start(None, "Describe the image.").token_ids)
    reference = text.generate(None, "Describe the image.", max_new_tokens=16)
    got, _ = greedy_by_verification(
        text, None, "Describe the image.", max_new_tokens=16, propose=oracle_proposer(reference, text.vocab_size, 0)
    )
    assert got == reference


def test_generate_ignores_checkpoint_generation_settings(tmp_path, tiny_path, tiny_model):
    """A generation_config full of extras (penalties, sampling, min length, suppressed tokens) changes nothing."""
    plain = tiny_model("llava", "drafter")
    noisy_path = tmp_path / "noisy"
    shutil.copytree(tiny_path("llava", "drafter"), noisy_path)
    settings = json.loads((noisy_path / "generation_config.json").read_text())
    references = [plain.generate(img, p, max_new_tokens=12) for img, p in image_prompt_pairs(2, seed=900)]
    settings.update(
        do_sample=True,
        temperature=0.3,
        top_k=3,
        repetition_penalty=3.0,
        no_repeat_ngram_size=1,
        min_new_tokens=20,
        max_length=5,
        suppress_tokens=sorted({t for ref in references for t in ref}),
    )
    (noisy_path / "generation_config.json").write_text(json.dumps(settings))
    noisy = load_model(str(noisy_path))
    assert noisy.source_generation_config.repetition_penalty == 3.0
    for (image, prompt), reference in zip(image_prompt_pairs(2, seed=900), references, strict=True):
        assert noisy.generate(image, prompt, max_new_tokens=12) == reference


def test_sampling_is_seeded_and_top_k_one_is_greedy(tiny_model):
    model = tiny_model("qwen2_vl", "drafter")
    image, prompt = make_image(4), "Describe the image."
    greedy = model.generate(image, prompt, max_new_tokens=10)
    kwargs = {"max_new_tokens": 10, "do_sample": True, "temperature": 1.5, "top_p": 0.95}
    first = model.generate(image, prompt, seed=123, **kwargs)
    assert model.generate(image, prompt, seed=123, **kwargs) == first
    samples = {tuple(model.generate(image, prompt, seed=s, **kwargs)) for s in range(4)}
    assert len(samples) > 1
    assert model.generate(image, prompt, do_sample=True, top_k=1, seed=9, max_new_tokens=10) == greedy
    assert model.generate(image, prompt, max_new_tokens=0) == []


def test_decode_drops_eos(tiny_model):
    model = tiny_model("llava")
    eos = model.eos_token_ids[0]
    ids = model.tokenizer("a red circle", add_special_tokens=False)["input_ids"]
    assert model.decode(ids + [eos]) == "a red circle"


def test_tokenizer_hash_ignores_padding_and_truncation():
    a, b = tiny_tokenizer("llava"), tiny_tokenizer("llava")
    b.padding_side = "left"
    b.truncation_side = "left"
    b.model_max_length = 16
    b.backend_tokenizer.enable_padding(length=32, pad_id=b.pad_token_id, pad_token=b.pad_token)
    b.backend_tokenizer.enable_truncation(max_length=8)
    assert tokenizer_hash(a) == tokenizer_hash(b)
    c = tiny_tokenizer("llava")
    c.add_tokens(["<extra_token>"])
    assert tokenizer_hash(c) != tokenizer_hash(a)
    assert tokenizer_hash(tiny_tokenizer("qwen2_vl")) != tokenizer_hash(a)


def test_importing_models_base_is_light():
    code = (
        "import sys, covspec.models, covspec.models.base\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert covspec.models.ModelFingerprint is covspec.models.base.ModelFingerprint\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tokenizer_hash_is_the_same_whichever_way_the_tokenizer_is_loaded(tiny_path, tiny_model):
    import transformers

    for arch in TINY_ARCHS:
        path = tiny_path(arch)
        expected = tiny_model(arch).fingerprint.tokenizer_hash
        assert tokenizer_hash(tiny_tokenizer(arch)) == expected
        assert tokenizer_hash(transformers.AutoTokenizer.from_pretrained(path)) == expected
        # Idefics3's processor re-registers its special tokens on the tokenizer: the hash must not move.
        assert tokenizer_hash(transformers.AutoProcessor.from_pretrained(path).tokenizer) == expected


def test_sliding_window_text_lm_rolls_back_exactly(tmp_path):
    """A text LM with sliding-window attention (window shorter than the prompt) still crops to any length."""
    import torch
    from transformers import GenerationConfig, MistralConfig, MistralForCausalLM

    tokenizer = tiny_tokenizer("llava")
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=6,
        initializer_range=0.25,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    hf_model = MistralForCausalLM(config)
    hf_model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    hf_model.save_pretrained(tmp_path / "mistral")
    tokenizer.save_pretrained(tmp_path / "mistral")

    model = load_model(str(tmp_path / "mistral"), dtype="float64")
    assert model.family == "text_lm"
    prompt = "What is in this picture? Describe the colours."
    reference = model.generate(None, prompt, max_new_tokens=20)
    got, stats = greedy_by_verification(
        model, None, prompt, max_new_tokens=20, propose=oracle_proposer(reference, model.vocab_size, 1)
    )
    assert got == reference and stats["rejected"] > 0
    seq = model.start(None, prompt)
    rows = seq.extend(reference[:10])
    seq.crop(seq.prompt_length + 1)  # back further than the window
    np.testing.assert_allclose(seq.extend(reference[1:10]), rows[1:], rtol=0, atol=1e-10 * np.abs(rows).max())


def test_generation_stops_at_any_eos_of_the_checkpoint(tmp_path, tiny_path, tiny_model):
    """EOS ids come from the tokenizer and the checkpoint's generation config; the EOS is kept in the output and
    dropped from the text, and the verify loop stops at the same place as generate()."""
    plain = tiny_model("llava", "drafter")
    image, prompt = make_image(5), "Describe the image."
    free_run = plain.generate(image, prompt, max_new_tokens=16)
    stop_at = next(i for i in range(2, len(free_run)) if free_run[i] not in free_run[:i])
    path = tmp_path / "more_eos"
    shutil.copytree(tiny_path("llava", "drafter"), path)
    settings = json.loads((path / "generation_config.json").read_text())
    settings["eos_token_id"] = [plain.tokenizer.eos_token_id, free_run[stop_at]]
    (path / "generation_config.json").write_text(json.dumps(settings))

    model = load_model(str(path))
    assert model.eos_token_ids == (plain.tokenizer.eos_token_id, free_run[stop_at])
    stopped = model.generate(image, prompt, max_new_tokens=16)
    assert stopped == free_run[: stop_at + 1]
    got, _ = greedy_by_verification(
        model, image, prompt, max_new_tokens=16, propose=oracle_proposer(free_run, model.vocab_size, 2)
    )
    assert got == stopped
    assert model.decode(stopped) == plain.decode(free_run[:stop_at])
