"""The tiny checkpoint factory: real files, loadable by transformers' own classes and by ``load_model``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from covspec.models.families import VLM_FAMILIES
from covspec.models.tiny import TINY_ARCHS, TINY_SIZES, build_tiny
from tests.models._helpers import make_image

# what AutoProcessor must find in each family's tiny checkpoint (the model class is the adapter's model_class_name)
PROCESSOR_CLASSES = {
    "llava": "LlavaProcessor",
    "qwen2_vl": "Qwen2VLProcessor",
    "idefics3": "Idefics3Processor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
    "llava_next": "LlavaNextProcessor",
    "llava_onevision": "LlavaOnevisionProcessor",
    "smolvlm": "SmolVLMProcessor",
    "internvl": "InternVLProcessor",
    "fast_vlm": "LlavaProcessor",
    "lfm2_vl": "Lfm2VlProcessor",
    "gemma3": "Gemma3Processor",
    "mistral3": "PixtralProcessor",
}


def test_exports():
    assert TINY_ARCHS[:3] == ("llava", "qwen2_vl", "idefics3")  # registration order fixes their seeds
    assert TINY_SIZES == ("target", "drafter")


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("size", TINY_SIZES)
def test_files_load_with_transformers_classes(tiny_path, arch, size):
    import transformers

    path = tiny_path(arch, size)
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
        assert (path / name).is_file(), name
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == arch
    generation = json.loads((path / "generation_config.json").read_text())
    assert generation["do_sample"] is False
    assert generation["pad_token_id"] is not None and generation["eos_token_id"] is not None

    processor = transformers.AutoProcessor.from_pretrained(path)
    assert type(processor).__name__ == PROCESSOR_CLASSES[arch]
    if arch == "qwen2_vl":
        assert type(processor.video_processor).__name__ == "Qwen2VLVideoProcessor"
    model = getattr(transformers, VLM_FAMILIES[arch].adapter.model_class_name).from_pretrained(path)
    assert model.config.get_text_config().vocab_size == len(processor.tokenizer)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_processor_round_trip_matches_sequence(tiny_path, tiny_model, arch):
    """The prompt rendered by the family's own AutoProcessor is exactly what the adapter prefilled."""
    import transformers

    processor = transformers.AutoProcessor.from_pretrained(tiny_path(arch))
    model = tiny_model(arch)
    for i, size in enumerate([(48, 48), (56, 40), (32, 64)]):
        image = make_image(100 + i, size)
        prompt = "What colour is the large square on the left?"
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        assert prompt in text
        inputs = processor(text=text, images=[image], return_tensors="pt")
        ids = inputs["input_ids"][0].tolist()
        image_token_id = model.hf_model.config.image_token_id
        seq = model.start(image, prompt)
        assert list(seq.token_ids) == ids
        assert seq.prompt_length == seq.length == len(ids)
        assert seq.image_tokens == ids.count(image_token_id) > 0
        if arch == "qwen2_vl":  # dynamic resolution: tokens = merged grid cells
            assert seq.image_tokens == int(inputs["image_grid_thw"][0].prod()) // 4


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_target_and_drafter_pair(tiny_model, arch):
    target = tiny_model(arch, "target")
    drafter = tiny_model(arch, "drafter")
    assert target.fingerprint.tokenizer_hash == drafter.fingerprint.tokenizer_hash
    assert target.vocab_size == drafter.vocab_size == len(target.tokenizer)
    assert target.eos_token_ids == drafter.eos_token_ids and target.eos_token_ids
    assert drafter.num_parameters() < target.num_parameters() / 2
    assert target.fingerprint.family == drafter.fingerprint.family == arch
    image = make_image(7)
    assert (
        drafter.start(image, "Describe the image.").image_tokens
        <= target.start(image, "Describe the image.").image_tokens
    )


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_tokenizer_depends_on_family_only(tmp_path, tiny_model, arch):
    """Same family with another seed: another model, the very same tokenizer."""
    from covspec.models import load_model

    other = load_model(str(build_tiny(arch, "drafter", tmp_path / "other", seed=5)))
    reference = tiny_model(arch, "drafter")
    assert other.fingerprint.tokenizer_hash == reference.fingerprint.tokenizer_hash
    image = make_image(3)
    assert not np.allclose(
        other.start(image, "Describe the image.").prefill_logits,
        reference.start(image, "Describe the image.").prefill_logits,
    )


def test_build_is_deterministic(tmp_path):
    a = build_tiny("llava", "drafter", tmp_path / "a", seed=3)
    b = build_tiny("llava", "drafter", tmp_path / "b", seed=3)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_families_share_a_tokenizer_exactly_when_they_share_its_tokens(tiny_model):
    """Families whose tiny tokenizers have the same special tokens share one vocabulary and pair across families
    (Qwen2-VL, Qwen2.5-VL and Qwen3-VL; LLaVA and LLaVA-NeXT, which differ in chat template only)."""

    def tokens(arch: str) -> tuple:
        spec = VLM_FAMILIES[arch].tokenizer
        return spec.special_tokens, sorted(spec.named.items()), sorted(spec.model_specific.items())

    hashes = {arch: tiny_model(arch).fingerprint.tokenizer_hash for arch in TINY_ARCHS}
    for a in TINY_ARCHS:
        for b in TINY_ARCHS:
            assert (hashes[a] == hashes[b]) == (tokens(a) == tokens(b)), (a, b)
    assert hashes["qwen2_vl"] == hashes["qwen2_5_vl"] == hashes["qwen3_vl"]


def test_rejects_unknown_arch_and_size(tmp_path):
    with pytest.raises(ValueError):
        build_tiny("gpt2", "target", tmp_path / "x")
    with pytest.raises(ValueError):
        build_tiny("llava", "huge", tmp_path / "y")
