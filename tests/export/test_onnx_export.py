"""``export_bundle`` on every family's tiny drafter: the graphs, the manifest, the validation numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from covspec.bundle import load_bundle
from covspec.errors import ExportError

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

ARCHS = ("llava", "qwen2_vl", "idefics3", "text")
TOLERANCE = 1e-3  # float32 graphs of the tiny drafters measure about 2e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_export_validates_and_records_everything(tiny_bundle, arch: str) -> None:
    source, root = tiny_bundle(arch)
    bundle = load_bundle(root)  # every file present with its recorded hash
    manifest = bundle.manifest
    family = "text_lm" if arch == "text" else arch
    assert manifest.family == family
    assert manifest.precision == "fp32" and manifest.opset == 18
    assert manifest.quantization is None and manifest.tensorrt is None
    assert manifest.source["model"] == str(source) and len(manifest.source["sha256"]) == 64
    assert set(manifest.graphs) == ({"embed_tokens", "decoder"} | ({"vision_encoder"} if arch != "text" else set()))
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert name in manifest.files
    if arch != "text":
        assert "processor_config.json" in manifest.files
    v = manifest.validation
    assert v["passed"] is True
    assert v["top1_agreement"] == 1.0
    assert 0.0 <= v["max_abs_logit_error"] < TOLERANCE
    assert v["tokens"] == 16 and v["rows_compared"] == v["samples"] * 17
    if arch != "text":
        assert v["max_abs_image_feature_error"] < TOLERANCE
    info = manifest.model
    assert info["positions"] == ("mrope" if arch == "qwen2_vl" else "1d")
    assert info["vocab_size"] == manifest.fingerprint["vocab_size"]
    assert manifest.fingerprint["family"] == family
    assert set(manifest.libraries) >= {"torch", "transformers", "onnx", "onnxruntime"}


@pytest.mark.parametrize("arch", ARCHS)
def test_every_graph_loads_in_onnxruntime_with_the_declared_io(tiny_bundle, arch: str) -> None:
    import onnxruntime as ort

    _, root = tiny_bundle(arch)
    manifest = json.loads((root / "manifest.json").read_text())
    graphs = sorted(root.glob("*.onnx"))
    assert {p.name for p in graphs} == set(manifest["graphs"].values())
    for role, name in manifest["graphs"].items():
        session = ort.InferenceSession(str(root / name), providers=["CPUExecutionProvider"])
        declared = manifest["io"][role]
        assert [i.name for i in session.get_inputs()] == [i["name"] for i in declared["inputs"]]
        assert [o.name for o in session.get_outputs()] == [o["name"] for o in declared["outputs"]]
    layers = manifest["model"]["num_layers"]
    decoder = manifest["io"]["decoder"]
    names = [i["name"] for i in decoder["inputs"]]
    assert names[:3] == ["inputs_embeds", "attention_mask", "position_ids"]
    assert names[3:] == [f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    outs = [o["name"] for o in decoder["outputs"]]
    assert outs == ["logits"] + [f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    past = decoder["inputs"][3]["shape"]
    assert isinstance(past[0], str) and isinstance(past[2], str)  # batch and past length are symbolic
    position = decoder["inputs"][2]["shape"]
    assert len(position) == (3 if arch == "qwen2_vl" else 2)


def test_zero_length_past_prefill_and_decode_in_onnxruntime(tiny_bundle) -> None:
    """Prefill with an empty past, then one step on its presents; batch 2 (dynamic batch)."""
    import onnxruntime as ort

    _, root = tiny_bundle("text")
    manifest = json.loads((root / "manifest.json").read_text())
    info = manifest["model"]
    session = ort.InferenceSession(str(root / manifest["graphs"]["decoder"]), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    batch, seq = 2, 5
    names = [i.name for i in session.get_inputs()]
    empty = np.zeros((batch, info["num_kv_heads"], 0, info["head_dim"]), np.float32)
    feeds = {
        "inputs_embeds": rng.standard_normal((batch, seq, info["hidden_size"])).astype(np.float32),
        "attention_mask": np.ones((batch, seq), np.int64),
        "position_ids": np.tile(np.arange(seq, dtype=np.int64), (batch, 1)),
        **{n: empty for n in names[3:]},
    }
    out = session.run(None, feeds)
    assert out[0].shape == (batch, seq, info["vocab_size"])
    assert out[1].shape == (batch, info["num_kv_heads"], seq, info["head_dim"])
    step = {
        "inputs_embeds": feeds["inputs_embeds"][:, -1:],
        "attention_mask": np.ones((batch, seq), np.int64),
        "position_ids": np.full((batch, 1), seq - 1, np.int64),
        **{n: np.ascontiguousarray(v[:, :, :-1]) for n, v in zip(names[3:], out[1:], strict=True)},
    }
    again = session.run(None, step)
    # the last prompt row fed again after the first seq-1 positions: same logits as in the prefill
    np.testing.assert_allclose(again[0][:, 0], out[0][:, -1], atol=1e-4)
    assert again[1].shape[2] == seq


def test_validation_past_tolerance_raises_with_the_numbers(tiny_bundle) -> None:
    from covspec.export.validate import check_tolerance, validate_bundle
    from covspec.models import load_model

    source, root = tiny_bundle("text")
    report = validate_bundle(root, load_model(str(source), dtype="float32"), tolerance=1e-12, tokens=3)
    assert report["passed"] is False and report["max_abs_logit_error"] > 1e-12
    with pytest.raises(ExportError, match=r"max \|logit error\| .* \(tolerance 1e-12\), top-1 agreement 1.000"):
        check_tolerance(report)


def test_export_refuses_a_non_empty_folder(tiny_text_drafter, tmp_path) -> None:
    from covspec.export.onnx_export import export_bundle

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_bundle(tiny_text_drafter, out)
    assert (out / "keep.txt").read_text() == "mine"


def test_export_refuses_an_opset_below_18(tiny_text_drafter, tmp_path) -> None:
    from covspec.export.onnx_export import export_bundle

    with pytest.raises(ExportError, match="opset 17 is not supported.*18 or later"):
        export_bundle(tiny_text_drafter, tmp_path / "out", opset=17)
    assert not (tmp_path / "out").exists()


def test_qwen2_vl_vision_wrapper_handles_several_images(tiny_pair) -> None:
    """The shape-static vision wrapper equals get_image_features for two images of different grids at once."""
    import torch

    from covspec.export.samples import sample_images
    from covspec.export.wrappers import VisionEncoder, reference_image_features
    from covspec.models import load_model
    from covspec.models.families import qwen2_vl

    loaded = load_model(str(tiny_pair("qwen2_vl").drafter), dtype="float32")
    batches = [loaded.render(image, "Describe.") for image in sample_images(3)]
    assert len({tuple(b["image_grid_thw"][0].tolist()) for b in batches}) > 1
    batch = {
        "pixel_values": torch.cat([b["pixel_values"] for b in batches]),
        "image_grid_thw": torch.cat([b["image_grid_thw"] for b in batches]),
    }
    with torch.no_grad():
        ours = VisionEncoder(loaded.hf_model, qwen2_vl.VISION)(batch["pixel_values"], batch["image_grid_thw"])
        ref = reference_image_features(loaded.hf_model, "qwen2_vl", batch)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
