"""The ONNX Runtime drafter engine against the torch engine (float32) on every family's tiny drafter.

Tolerance: both run float32; the exported graphs differ from PyTorch in the last bits (about 2e-5 on these logits),
so logits are compared with atol 1e-4 and greedy tokens must be identical (the tiny checkpoints' wide initializer
keeps near-ties away, DESIGN.md §6).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from covspec.errors import EngineUnavailableError
from tests.models._helpers import image_prompt_pairs

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

ARCHS = ("llava", "qwen2_vl", "idefics3", "text")
ATOL = 1e-4


@pytest.fixture(scope="module")
def engines(tiny_bundle):
    from covspec.runtime_device.engines import load_engine

    cache: dict[str, tuple] = {}

    def get(arch: str):
        if arch not in cache:
            source, root = tiny_bundle(arch)
            cache[arch] = (load_engine("torch", str(source), dtype="float32"), load_engine("onnxruntime", root))
        return cache[arch]

    return get


def _greedy(seq, steps: int) -> list[int]:
    """Greedy tokens, one extend per token."""
    tokens = [int(np.argmax(seq.prefill_logits))]
    for _ in range(steps - 1):
        tokens.append(int(np.argmax(seq.extend([tokens[-1]])[0])))
    return tokens


@pytest.mark.parametrize("arch", ARCHS)
def test_fingerprint_and_prefill_match_torch(engines, arch: str) -> None:
    torch_engine, onnx_engine = engines(arch)
    assert onnx_engine.fingerprint == torch_engine.fingerprint  # a device pairs without torch
    assert onnx_engine.accepts_images == torch_engine.accepts_images == (arch != "text")
    for image, prompt in image_prompt_pairs(3, seed=11):
        ref, ours = torch_engine.start(image, prompt), onnx_engine.start(image, prompt)
        assert ours.prompt_length == ref.prompt_length and ours.length == ref.length
        assert ours.token_ids == ref.token_ids
        assert ours.image_tokens == ref.image_tokens
        if arch != "text":
            assert ours.image_tokens > 0
        assert ours.prefill_logits.shape == ref.prefill_logits.shape
        np.testing.assert_allclose(ours.prefill_logits, ref.prefill_logits, atol=ATOL, rtol=0)
        assert ours.kv_bytes() == ref.kv_bytes()


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_drafts_equal_torch_token_for_token(engines, arch: str) -> None:
    torch_engine, onnx_engine = engines(arch)
    for image, prompt in image_prompt_pairs(2, seed=3):
        ref_tokens = _greedy(torch_engine.start(image, prompt), 12)
        assert _greedy(onnx_engine.start(image, prompt), 12) == ref_tokens
        assert len(set(ref_tokens)) > 1  # not a degenerate repeat of one id


@pytest.mark.parametrize("arch", ARCHS)
def test_block_extend_crop_and_continue_match_torch(engines, arch: str) -> None:
    torch_engine, onnx_engine = engines(arch)
    image, prompt = image_prompt_pairs(1, seed=5)[0]
    ref, ours = torch_engine.start(image, prompt), onnx_engine.start(image, prompt)
    block = [int(t) for t in np.random.default_rng(0).integers(0, onnx_engine.vocab_size, 5)]
    np.testing.assert_allclose(ours.extend(block), ref.extend(block), atol=ATOL, rtol=0)  # 5 rows in one run
    assert ours.length == ref.length == ref.prompt_length + 5
    for seq in (ref, ours):
        seq.crop(seq.prompt_length + 2)
    assert ours.length == ref.length and ours.kv_bytes() == ref.kv_bytes()
    more = [7, 8, 9]
    np.testing.assert_allclose(ours.extend(more), ref.extend(more), atol=ATOL, rtol=0)
    assert _greedy_after(ours, 6) == _greedy_after(ref, 6)
    ours.crop(ours.prompt_length)
    assert ours.length == ours.prompt_length
    with pytest.raises(ValueError, match="allowed range"):
        ours.crop(ours.prompt_length - 1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours.extend([onnx_engine.vocab_size])
    assert ours.extend([]).shape == (0, onnx_engine.vocab_size)


def _greedy_after(seq, steps: int) -> list[int]:
    token = int(np.argmax(seq.extend([1])[0]))
    out = [token]
    for _ in range(steps - 1):
        token = int(np.argmax(seq.extend([token])[0]))
        out.append(token)
    return out


@pytest.mark.parametrize("arch", ["llava", "text"])
def test_prefill_reports_the_time_of_each_stage(engines, arch: str) -> None:
    """``prefill_stages``: what a profile reads; the vision and reduction stages exist only where an image is read."""
    from covspec.reduce import Budget, TokenReduction

    _, onnx_engine = engines(arch)
    image, prompt = image_prompt_pairs(1, seed=5)[0]
    plain = onnx_engine.start(image, prompt).prefill_stages
    expected = ["preprocess", "vision", "reduce", "decoder"] if arch != "text" else ["preprocess", "decoder"]
    assert list(plain) == expected and all(seconds > 0 for seconds in plain.values())
    if arch != "text":
        reduced = onnx_engine.start(image, prompt, TokenReduction("covspec", Budget(ratio=0.5))).prefill_stages
        assert list(reduced) == expected


def test_decode_drops_eos_like_torch(engines) -> None:
    torch_engine, onnx_engine = engines("llava")
    tokens = [10, 20, 30, *torch_engine.fingerprint.eos_token_ids]
    assert onnx_engine.decode(tokens) == torch_engine.decode(tokens)


def test_feed_recorder_sees_every_session_run(engines) -> None:
    _, onnx_engine = engines("qwen2_vl")
    seen: list[tuple[str, dict]] = []
    onnx_engine.feed_recorder = lambda role, feeds: seen.append((role, dict(feeds)))
    try:
        image, prompt = image_prompt_pairs(1, seed=2)[0]
        seq = onnx_engine.start(image, prompt)
        seq.extend([5, 6])
    finally:
        onnx_engine.feed_recorder = None
    roles = [role for role, _ in seen]
    assert roles == ["embed_tokens", "vision_encoder", "decoder", "embed_tokens", "decoder"]
    decoder_feeds = seen[-1][1]
    assert decoder_feeds["position_ids"].shape == (4, 1, 2)  # text row + 3 M-RoPE rows
    assert decoder_feeds["past_key_values.0.key"].shape[2] == seq.prompt_length
    assert set(onnx_engine.sessions) == {"vision_encoder", "embed_tokens", "decoder"}


@pytest.mark.parametrize("ep", ["cuda", "tensorrt"])
def test_missing_gpu_provider_is_refused_with_the_fix(tiny_bundle, ep: str) -> None:
    from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

    provider = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[ep]
    if provider in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has {provider}; the refusal needs a build without it")
    _, root = tiny_bundle("text")
    with pytest.raises(EngineUnavailableError, match=f"{provider}.*onnxruntime-gpu"):
        OnnxDrafterEngine(root, ep=ep)


def test_unknown_provider_and_auto(tiny_bundle) -> None:
    from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

    _, root = tiny_bundle("text")
    with pytest.raises(EngineUnavailableError, match="unknown execution provider 'npu'"):
        OnnxDrafterEngine(root, ep="npu")
    engine = OnnxDrafterEngine(root, ep="auto", threads=1)
    expected = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    assert engine.ep == expected


@pytest.mark.gpu
def test_cuda_keeps_the_kv_on_the_gpu(tiny_bundle) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu with CUDAExecutionProvider and a GPU (this build has none)")
    from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

    _, root = tiny_bundle("llava")
    cpu, gpu = OnnxDrafterEngine(root, ep="cpu"), OnnxDrafterEngine(root, ep="cuda")
    image, prompt = image_prompt_pairs(1, seed=4)[0]
    a, b = cpu.start(image, prompt), gpu.start(image, prompt)
    assert _greedy(a, 8) == _greedy(b, 8)
    b.crop(b.prompt_length + 2)
    a.crop(a.prompt_length + 2)
    np.testing.assert_allclose(b.extend([3, 4]), a.extend([3, 4]), atol=1e-3, rtol=0)


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_engine_runs_with_torch_unimportable(tiny_bundle, engines, arch: str) -> None:
    """A device without torch: transformers falls back to its PIL image processors (and, for Qwen2-VL, the engine
    leaves out the torchvision-only video processor)."""
    _, root = tiny_bundle(arch)
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None
        sys.modules["torchvision"] = None
        import numpy as np
        from covspec.runtime_device.engines import load_engine
        from tests.models._helpers import make_image
        engine = load_engine("onnxruntime", {str(root)!r})
        seq = engine.start(make_image(1), "What is in the image?")
        rows = seq.extend([int(np.argmax(seq.prefill_logits)), 5])
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
        print(" ".join(str(t) for t in seq.token_ids[: seq.prompt_length]))
        print(seq.prompt_length, seq.image_tokens, rows.shape[0], seq.length)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    *_, ids_line, numbers = result.stdout.strip().splitlines()
    prompt_length, image_tokens, rows, length = (int(v) for v in numbers.split())
    assert image_tokens > 0 and rows == 2 and length == prompt_length + 2
    from tests.models._helpers import make_image

    with_torch = engines(arch)[1].start(make_image(1), "What is in the image?")
    assert [int(t) for t in ids_line.split()] == list(with_torch.token_ids)  # same rendering without torch
    assert image_tokens == with_torch.image_tokens


# -- M-RoPE in numpy ------------------------------------------------------------------------------------------------


def test_mrope_positions_equal_transformers_get_rope_index(tiny_pair) -> None:
    import torch

    from covspec.models import load_model, mrope
    from tests.models._helpers import IMAGE_SIZES, make_image

    model = load_model(str(tiny_pair("qwen2_vl").drafter), dtype="float32")
    config = model.hf_model.config
    seen_negative_delta = False
    for i, size in enumerate(IMAGE_SIZES):
        inputs = model.render(make_image(i, size), f"Prompt number {i}: what is there?")
        ref_positions, ref_delta = model.prompt_positions(inputs)  # [4, 1, L] via get_rope_index
        ids = inputs["input_ids"][0].numpy()
        ours, delta = mrope.prompt_position_ids(
            ids,
            image_token_id=config.image_token_id,
            video_token_id=config.video_token_id,
            spatial_merge_size=config.vision_config.spatial_merge_size,
            image_grid_thw=inputs["image_grid_thw"].numpy(),
        )
        np.testing.assert_array_equal(ours, ref_positions.numpy())
        assert delta == ref_delta
        seen_negative_delta |= delta < 0
        start = ids.shape[0] + 3
        np.testing.assert_array_equal(
            mrope.extend_position_ids(start, 4, delta), model.extend_positions(start, 4, ref_delta).numpy()
        )
    assert seen_negative_delta  # images whose grid is smaller than their token count were covered
    text_only = model.render(None, "no image here")
    ours, delta = mrope.prompt_position_ids(
        text_only["input_ids"][0].numpy(),
        image_token_id=config.image_token_id,
        video_token_id=None,
        spatial_merge_size=2,
    )
    np.testing.assert_array_equal(ours, model.prompt_positions(text_only)[0].numpy())
    assert delta == 0
    two_images = np.array([[1, 4, 6], [1, 6, 4]])
    types = np.array([0, 0] + [1] * 6 + [0] + [1] * 6 + [0, 0])
    ref, ref_delta = model.hf_model.model.get_rope_index(
        torch.tensor(types)[None], mm_token_type_ids=torch.tensor(types)[None], image_grid_thw=torch.tensor(two_images)
    )
    positions, delta = mrope.rope_index(types, 2, two_images)
    np.testing.assert_array_equal(positions, ref[:, 0].numpy())
    assert delta == int(ref_delta.reshape(-1)[0])
    with pytest.raises(ValueError, match="more image/video placeholder runs than grids"):
        mrope.rope_index(types, 2, two_images[:1])


# -- in the device loop ---------------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ["llava", "qwen2_vl", "idefics3"])
def test_loop_with_the_onnx_drafter_is_lossless(arch, tiny_bundle, edge_server, loaded_target) -> None:
    """Speculative decoding through a real edge server with the ONNX drafter commits the target's greedy tokens."""
    from covspec.protocol import VerifyMode
    from covspec.runtime_device.client import EdgeClient
    from covspec.runtime_device.engines import load_engine
    from covspec.runtime_device.loop import GenerationConfig, generate
    from tests.helpers import PROMPTS, image_bytes, pil

    _, root = tiny_bundle(arch)
    engine = load_engine("onnxruntime", root, ep="cpu")
    server, target = edge_server(arch), loaded_target(arch)
    client = EdgeClient(server.url)
    for i in range(4):
        img, prompt = image_bytes(200 + i), PROMPTS[i % len(PROMPTS)]
        want = target.generate(pil(img), prompt, max_new_tokens=12)
        for k, mode in ((2, VerifyMode.COMPACT), (5, VerifyMode.VANILLA)):
            result = generate(
                engine, client, img, prompt, GenerationConfig(max_new_tokens=12, draft_len=k, verify_mode=mode)
            )
            assert result.tokens == want, (arch, k, mode.value, prompt)
            assert result.stats["generated_tokens"] == len(want)


def test_engine_refuses_a_broken_bundle(tiny_bundle, tmp_path) -> None:
    import json
    import shutil

    from covspec.errors import BundleError
    from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

    _, root = tiny_bundle("text")
    edited = tmp_path / "edited"
    shutil.copytree(root, edited)
    with open(edited / "decoder_model_merged.onnx", "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(BundleError, match="decoder_model_merged.onnx no longer matches.*re-export"):
        OnnxDrafterEngine(edited)
    missing = tmp_path / "missing"
    shutil.copytree(root, missing)
    (missing / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is listed in the manifest but missing"):
        OnnxDrafterEngine(missing)
    newer = tmp_path / "newer"
    shutil.copytree(root, newer)
    data = json.loads((newer / "manifest.json").read_text())
    data["format"] = 2
    (newer / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="newer than this covspec reads"):
        OnnxDrafterEngine(newer)
    with pytest.raises(BundleError, match="not a covspec bundle"):
        OnnxDrafterEngine(tiny_bundle("text")[0])  # the checkpoint folder itself
