"""Pairs across families against a real uvicorn edge on 127.0.0.1: a drafter pairs when its ids mean what the
target's mean, whatever its tokenizer files; a vocabulary that differs in one token, or a chat template that renders
the request differently, is refused naming the difference."""

from __future__ import annotations

import json
import shutil

import pytest

from covspec.errors import IncompatiblePairError
from covspec.protocol import VerifyMode
from covspec.runtime_device.client import EdgeClient
from covspec.runtime_device.loop import GenerationConfig, generate
from tests.helpers import PROMPTS, image_bytes, pil

MAX_NEW = 12


@pytest.fixture(scope="module")
def qwen2_text_drafter(tmp_path_factory):
    """A tiny text-only Qwen2 LM over the tiny Qwen2-VL vocabulary, its tokenizer without the processor's image
    attributes (as a real Qwen2 LM's): files that hash differently, ids that mean the same."""
    from covspec.models import build_tiny_text_drafter

    return build_tiny_text_drafter(tmp_path_factory.mktemp("qwen2-text") / "drafter", arch="qwen2_vl")


def _engine(path):
    from covspec.runtime_device.engines import load_engine

    return load_engine("torch", str(path), dtype="float64")


def _lossless(engine, server, target, n: int = 3) -> None:
    client = EdgeClient(server.url)
    for i in range(n):
        img, prompt = image_bytes(800 + i), PROMPTS[i]
        want = target.generate(pil(img), prompt, max_new_tokens=MAX_NEW)
        for k in (1, 3):
            config = GenerationConfig(max_new_tokens=MAX_NEW, draft_len=k, verify_mode=VerifyMode.COMPACT)
            assert generate(engine, client, img, prompt, config).tokens == want, (i, k)


@pytest.mark.e2e
def test_a_text_only_qwen2_lm_drafts_for_qwen2_vl(qwen2_text_drafter, edge_server, loaded_target) -> None:
    engine, server, target = _engine(qwen2_text_drafter), edge_server("qwen2_vl"), loaded_target("qwen2_vl")
    assert engine.fingerprint.tokenizer_hash != target.fingerprint.tokenizer_hash  # compared id by id, not by hash
    _lossless(engine, server, target)


@pytest.mark.e2e
@pytest.mark.parametrize("drafter", ["qwen2_vl", "text"])
def test_qwen2_vl_and_a_text_qwen2_lm_draft_for_qwen2_5_vl(
    drafter, qwen2_text_drafter, tiny_pair, edge_server, loaded_target
) -> None:
    from covspec.models.tiny import TINY_ARCHS

    if "qwen2_5_vl" not in TINY_ARCHS:
        pytest.fail("qwen2_5_vl has no tiny checkpoint")
    path = qwen2_text_drafter if drafter == "text" else tiny_pair("qwen2_vl").drafter
    _lossless(_engine(path), edge_server("qwen2_5_vl"), loaded_target("qwen2_5_vl"))


def _swap_two_tokens(source, out) -> tuple[int, str, str]:
    """A copy of a drafter whose tokenizer swaps the ids of two ordinary tokens: every merge still holds, and the
    vocabulary differs from the original at exactly those two ids. Returns (lower id, its new token, its old)."""
    shutil.copytree(source, out)
    path = out / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    a, b = 300, 301
    vocab[by_id[a]], vocab[by_id[b]] = b, a
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return a, by_id[b], by_id[a]


@pytest.mark.e2e
def test_a_vocabulary_that_differs_in_one_token_is_refused_naming_it(qwen2_text_drafter, edge_server, tmp_path) -> None:
    idx, ours, theirs = _swap_two_tokens(qwen2_text_drafter, tmp_path / "swapped")
    message = f"token id {idx} is {ours!r} for the drafter but {theirs!r} for the target"
    with pytest.raises(IncompatiblePairError) as caught:
        generate(
            _engine(tmp_path / "swapped"),
            EdgeClient(edge_server("qwen2_vl").url),
            image_bytes(1),
            "Hi",
            GenerationConfig(),
        )
    assert message in str(caught.value)


@pytest.mark.e2e
def test_a_chat_template_that_renders_the_request_differently_is_refused(
    qwen2_text_drafter, edge_server, tmp_path
) -> None:
    out = tmp_path / "other-template"
    shutil.copytree(qwen2_text_drafter, out)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    template = "{% for m in messages %}<|im_start|>system\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    for path in out.glob("chat_template.jinja"):
        path.write_text(template, encoding="utf-8")
    config["chat_template"] = template
    config_path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(IncompatiblePairError, match="chat templates render the request differently: at token 1"):
        generate(_engine(out), EdgeClient(edge_server("qwen2_vl").url), image_bytes(1), "Hi", GenerationConfig())
