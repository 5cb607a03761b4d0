"""The reduced demo drafter (a trained LLaVA) exports to a bundle that passes validation and drafts like torch."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")


def test_reduced_demo_drafter_exports_and_validates(reduced_demo_pair, tmp_path) -> None:
    from covspec.bundle import load_bundle
    from covspec.demo import scenes
    from covspec.export.onnx_export import export_bundle
    from covspec.runtime_device.engines import load_engine

    _, paths = reduced_demo_pair
    items = scenes.dataset("heldout", 3)
    manifest = export_bundle(paths.drafter, tmp_path / "bundle", sample_images=[item.scene.image for item in items])
    assert manifest.family == "llava"
    assert manifest.validation["passed"] is True
    assert manifest.validation["top1_agreement"] == 1.0
    assert manifest.validation["max_abs_logit_error"] < 1e-3
    assert manifest.validation["samples"] == 3
    assert load_bundle(tmp_path / "bundle").manifest.validation == manifest.validation
    torch_engine = load_engine("torch", str(paths.drafter), dtype="float32")
    onnx_engine = load_engine("onnxruntime", tmp_path / "bundle")
    assert onnx_engine.fingerprint == torch_engine.fingerprint
    for item in items:
        drafts = []
        for engine in (torch_engine, onnx_engine):
            seq = engine.start(item.scene.image, item.question)
            tokens = [int(np.argmax(seq.prefill_logits))]
            for _ in range(7):
                tokens.append(int(np.argmax(seq.extend([tokens[-1]])[0])))
            drafts.append(tokens)
        assert drafts[0] == drafts[1]
