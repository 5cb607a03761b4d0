"""Visual-token reduction on the drafter: the drafter prefills only the kept visual tokens at their original
positions, and the output stays the target's own (the target reads every token), for every reducer.

Checked on the engines: a reduced prefill that keeps every token equals the unreduced one (the embedding path
reproduces the pixel path); a reduced sequence rolls back exactly (its cache is shorter than its ids); the ONNX
engine's reduced drafts equal the torch engine's. Then end to end against a real uvicorn edge on 127.0.0.1.
"""

from __future__ import annotations

import numpy as np
import pytest

from covspec.bench.reduction import target_greedy_answer
from covspec.protocol import VerifyMode
from covspec.reduce import REDUCERS, Budget, TokenReduction
from covspec.runtime_device.client import EdgeClient
from covspec.runtime_device.loop import GenerationConfig, generate
from covspec.spec.policy import PolicyKind
from tests.helpers import ARCHS, PROMPTS, image_bytes, pil

MAX_NEW = 12


def _engine(path, dtype: str = "float64"):
    from covspec.runtime_device.engines import load_engine

    return load_engine("torch", str(path), dtype=dtype)


@pytest.mark.parametrize("arch", ARCHS)
def test_keeping_every_token_through_the_reduced_path_equals_the_plain_prefill(arch, tiny_pair) -> None:
    engine = _engine(tiny_pair(arch).drafter)
    image, prompt = pil(image_bytes(900)), PROMPTS[0]
    plain = engine.start(image, prompt)
    everything = engine.start(image, prompt, TokenReduction("covspec", Budget(count=100_000)))
    assert everything.image_tokens == plain.image_tokens > 0
    np.testing.assert_allclose(everything.prefill_logits, plain.prefill_logits, atol=1e-9, rtol=0)
    np.testing.assert_allclose(everything.extend([5, 6, 7]), plain.extend([5, 6, 7]), atol=1e-9, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_reduced_sequence_keeps_its_budget_and_rolls_back_exactly(arch, tiny_pair) -> None:
    engine = _engine(tiny_pair(arch).target)
    image, prompt = pil(image_bytes(901)), PROMPTS[1]
    full = engine.start(image, prompt)
    reduction = TokenReduction("covspec", Budget(ratio=0.5))
    seq = engine.start(image, prompt, reduction)
    assert seq.image_tokens == Budget(ratio=0.5).tokens(full.image_tokens) < full.image_tokens
    assert seq.token_ids == full.token_ids  # ids (and so positions) stay the full prompt's
    assert not np.allclose(seq.prefill_logits, full.prefill_logits)  # the drafter really read fewer tokens
    first = seq.extend([11, 12, 13])
    seq.crop(seq.prompt_length + 1)
    again = seq.extend([12, 40])
    fresh = engine.start(image, prompt, reduction)
    np.testing.assert_allclose(fresh.extend([11, 12, 40]), np.concatenate([first[:1], again]), atol=1e-9, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_reduced_drafts_equal_the_torch_drafters(arch, tiny_bundle) -> None:
    pytest.importorskip("onnxruntime")
    from covspec.runtime_device.engines import load_engine

    source, bundle = tiny_bundle(arch)
    onnx_engine = load_engine("onnxruntime", bundle, ep="cpu")
    torch_engine = _engine(source, dtype="float32")
    image, prompt = pil(image_bytes(902)), PROMPTS[2]
    for name in ("covspec", "merge"):
        reduction = TokenReduction(name, Budget(ratio=0.5))
        drafts = []
        for engine in (onnx_engine, torch_engine):
            seq = engine.start(image, prompt, reduction)
            logits, tokens = seq.prefill_logits, []
            for _ in range(6):
                tokens.append(int(np.argmax(logits)))
                logits = seq.extend(tokens[-1:])[0]
            drafts.append((seq.image_tokens, tokens))
        assert drafts[0] == drafts[1], (arch, name)


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ARCHS)
def test_every_reducer_on_the_drafter_leaves_the_targets_output(
    arch, edge_server, loaded_target, self_drafter_engine
) -> None:
    """The target drafting for itself, reading a quarter of the visual tokens: the output is still the target's;
    its acceptance falls below the full-view drafter's on some prompt (it really sees less)."""
    server, target, engine = edge_server(arch), loaded_target(arch), self_drafter_engine(arch)
    client = EdgeClient(server.url)
    pairs = [(image_bytes(910 + i), PROMPTS[i]) for i in range(3)]
    rates = []
    for img, prompt in pairs:
        want = target.generate(pil(img), prompt, max_new_tokens=MAX_NEW)
        n_image = target.start(pil(img), prompt).image_tokens
        for name in REDUCERS:
            reduction = TokenReduction(name, Budget(ratio=0.25))
            config = GenerationConfig(
                max_new_tokens=MAX_NEW,
                draft_len=3,
                verify_mode=VerifyMode.COMPACT,
                policy=PolicyKind.FIXED,
                reduction=reduction,
            )
            result = generate(engine, client, img, prompt, config)
            assert result.tokens == want, (arch, name, prompt)
            assert result.stats["drafter_image_tokens"] == Budget(ratio=0.25).tokens(n_image)
            assert result.stats["reducer"] == name
            rates.append(result.stats["acceptance_rate"])
    assert min(rates) < 1.0  # a full-view self-drafter is accepted every time (test_loop_e2e)


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_reduce_target_gives_the_reduced_targets_output_and_a_like_drafter_is_always_accepted(
    arch, edge_server, loaded_target, self_drafter_engine
) -> None:
    """Lossy, asked for: the edge's target reads only the kept tokens. The output is that reduced target's greedy
    answer, and the target drafting for itself with the same reduction has every draft accepted (both read alike)."""
    server, target, engine = edge_server(arch), loaded_target(arch), self_drafter_engine(arch)
    client = EdgeClient(server.url)
    reduction = TokenReduction("covspec", Budget(ratio=0.25))
    differs = 0
    for i in range(3):
        img, prompt = image_bytes(930 + i), PROMPTS[i]
        want = target_greedy_answer(target, pil(img), prompt, reduction, MAX_NEW)
        full = target.generate(pil(img), prompt, max_new_tokens=MAX_NEW)
        differs += want != full
        config = GenerationConfig(
            max_new_tokens=MAX_NEW,
            draft_len=3,
            verify_mode=VerifyMode.COMPACT,
            policy=PolicyKind.FIXED,
            reduction=reduction,
            reduce_target=True,
        )
        result = generate(engine, client, img, prompt, config)
        assert result.tokens == want, (arch, prompt)
        assert result.stats["target_reduced"] and result.stats["acceptance_rate"] == 1.0
    assert differs  # the reduced target really answers differently somewhere: it is lossy, and labelled so


@pytest.mark.e2e
def test_a_target_reduction_with_an_unknown_reducer_is_refused(edge_server) -> None:
    from covspec.errors import EdgeError
    from covspec.protocol import SessionSpec

    connection = EdgeClient(edge_server("llava").url).connection()
    connection.hello()
    with pytest.raises(EdgeError, match="unknown reducer 'magic'") as caught:
        connection.open_generation(SessionSpec("Describe.", target_reduction=("magic", 0.5)), image_bytes(1))
    assert caught.value.code == "invalid_request"
