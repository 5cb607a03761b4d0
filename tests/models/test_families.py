"""The family registry: each family module declares its whole self, and loading and ``covspec tiny`` go through it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from covspec.errors import ModelLoadError
from covspec.models.families import TEXT_LM, VLM_FAMILIES, vlm_family_of
from covspec.models.loading import adapter_for
from covspec.models.tiny import TINY_ARCHS


@pytest.mark.parametrize("name", sorted(VLM_FAMILIES))
def test_each_family_declares_adapter_tokenizer_and_tiny_builder(name: str) -> None:
    family = VLM_FAMILIES[name]
    assert family.name == name == family.adapter.family
    assert vlm_family_of(family.model_type) is family
    assert adapter_for({"model_type": family.model_type, "vision_config": {}}) is family.adapter
    assert family.tokenizer is not None and family.build_tiny is not None
    assert name in TINY_ARCHS
    assert family.tokenizer.generation_eos[0] == family.tokenizer.named["eos_token"]
    assert set(family.tokenizer.model_specific.values()) <= set(family.tokenizer.special_tokens)


def test_text_only_models_and_unknown_families() -> None:
    assert adapter_for({"model_type": "llama"}) is TEXT_LM.adapter
    assert adapter_for({"model_type": "qwen2"}) is TEXT_LM.adapter
    with pytest.raises(ModelLoadError, match="unsupported model family 'no_such_vlm'.*llava, qwen2_vl, idefics3"):
        adapter_for({"model_type": "no_such_vlm", "vision_config": {}}, "somewhere")


def test_the_registry_loads_neither_torch_nor_transformers() -> None:
    code = "import sys, covspec.models.families; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
