"""Every family of the registry beyond the first three (llava, qwen2_vl, idefics3 have their own suites), through every
path a user takes: ``covspec tiny``, ``serve`` as the target (a real uvicorn server on 127.0.0.1), ``run`` with a torch
drafter, ``export`` + validation against PyTorch, ``quantize``, and ``run --bundle`` with the ONNX drafter.

Greedy output equals the target's own ``generate()`` token for token at K = 1, 3, 6. The target drafting for itself
has every draft accepted (a broken speed path fails here, not only a broken output); the family's tiny drafter is a
random one, so its runs prove losslessness only. The ONNX bundle's greedy drafts equal the torch drafter's.
"""

from __future__ import annotations

import numpy as np
import pytest

from covspec.models.tiny import TINY_ARCHS
from covspec.protocol import VerifyMode
from covspec.runtime_device.client import EdgeClient
from covspec.runtime_device.loop import GenerationConfig, generate
from covspec.spec.policy import PolicyKind
from tests.helpers import ARCHS, PROMPTS, image_bytes, pil

FAMILIES = tuple(arch for arch in TINY_ARCHS if arch not in ARCHS)
DRAFT_LENS = (1, 3, 6)
MAX_NEW = 12
DRAFT_STEPS = 8
N_PROMPTS = 2


def _pairs() -> list[tuple[bytes, str]]:
    return [(image_bytes(700 + i, size=(56, 44)), PROMPTS[i]) for i in range(N_PROMPTS)]


def _fixed_k(k: int) -> GenerationConfig:
    return GenerationConfig(
        max_new_tokens=MAX_NEW, draft_len=k, verify_mode=VerifyMode.COMPACT, policy=PolicyKind.FIXED
    )


def _greedy_drafts(engine, image, prompt: str, steps: int) -> list[int]:
    sequence = engine.start(image, prompt)
    logits, drafts = sequence.prefill_logits, []
    for _ in range(steps):
        drafts.append(int(np.argmax(logits)))
        logits = sequence.extend(drafts[-1:])[0]
    return drafts


@pytest.mark.e2e
@pytest.mark.parametrize("arch", FAMILIES)
def test_device_edge_greedy_equals_target_generate(
    arch, edge_server, loaded_target, drafter_engine, self_drafter_engine
) -> None:
    server, target = edge_server(arch), loaded_target(arch)
    client = EdgeClient(server.url)
    pairs = _pairs()
    expected = [target.generate(pil(img), prompt, max_new_tokens=MAX_NEW) for img, prompt in pairs]
    assert any(len(want) >= 4 for want in expected), "the tiny target stops at once: nothing is drafted"
    for k in DRAFT_LENS:
        for (img, prompt), want in zip(pairs, expected, strict=True):
            accepted = generate(self_drafter_engine(arch), client, img, prompt, _fixed_k(k))
            assert accepted.tokens == want, (arch, k, prompt)
            assert accepted.stats["acceptance_rate"] == 1.0, (arch, k, prompt)
            assert accepted.stats["rounds"] == -(-len(want) // (k + 1)), (arch, k, prompt)
            random_drafter = generate(drafter_engine(arch), client, img, prompt, _fixed_k(k))
            assert random_drafter.tokens == want, (arch, k, prompt)
            assert random_drafter.text == target.decode(want)


@pytest.mark.e2e
@pytest.mark.parametrize("arch", FAMILIES)
def test_onnx_bundle_drafts_equal_torch_and_its_runs_are_lossless(
    arch, tiny_bundle, edge_server, loaded_target, tmp_path
) -> None:
    pytest.importorskip("onnxruntime")
    from covspec.bundle import load_bundle
    from covspec.models.families import family_named

    family = family_named(arch)
    if family.vision is None:
        pytest.skip(f"{arch}: no ONNX export: {family.no_export}")
    from covspec.quant.bundle import quantize_bundle
    from covspec.runtime_device.engines import load_engine

    source, bundle = tiny_bundle(arch)
    validation = load_bundle(bundle).manifest.validation
    assert validation["passed"] and validation["top1_agreement"] == 1.0, validation
    assert validation["max_abs_image_feature_error"] < 1e-3, validation
    onnx_engine = load_engine("onnxruntime", bundle, ep="cpu")
    torch_engine = load_engine("torch", str(source), dtype="float32")
    for img, prompt in _pairs():
        assert _greedy_drafts(onnx_engine, pil(img), prompt, DRAFT_STEPS) == _greedy_drafts(
            torch_engine, pil(img), prompt, DRAFT_STEPS
        ), (arch, prompt)

    quantize_bundle(bundle, tmp_path / "int8", "int8")
    server, target = edge_server(arch), loaded_target(arch)
    client = EdgeClient(server.url)
    for engine in (onnx_engine, load_engine("onnxruntime", tmp_path / "int8", ep="cpu")):
        for img, prompt in _pairs():
            want = target.generate(pil(img), prompt, max_new_tokens=MAX_NEW)
            assert generate(engine, client, img, prompt, _fixed_k(3)).tokens == want, (arch, engine.name, prompt)
