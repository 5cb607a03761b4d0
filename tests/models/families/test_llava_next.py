"""The anyres vision graph (LLaVA-NeXT, shared by LLaVA-OneVision) against transformers' ``get_image_features`` on
images whose sizes pick every grid of the tiny pinpoints, unpad rows or columns, or unpad a side away entirely."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

ARCHS = ("llava_next", "llava_onevision")
# (width, height): wide, tall, square, tiny, flat enough that a 2-patch side unpads to nothing
SIZES = ((56, 44), (48, 48), (40, 64), (100, 20), (20, 100), (13, 12), (12, 30), (300, 299), (7, 9))


@pytest.fixture(scope="module")
def drafters(tmp_path_factory):
    from covspec.models import build_tiny, load_model

    root = tmp_path_factory.mktemp("anyres")
    return {arch: load_model(str(build_tiny(arch, "drafter", root / arch)), dtype="float32") for arch in ARCHS}


def _batches(model):
    from PIL import Image

    for i, size in enumerate(SIZES):
        image = Image.new("RGB", size, (30 * i % 256, 200, 90))
        yield size, model.render(image, "What is in the image?")


def _numpy(batch) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in batch.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_graph_equals_get_image_features_on_every_grid(drafters, arch) -> None:
    import torch

    from covspec.models.families import family_named

    model, graph = drafters[arch], family_named(arch).vision
    parts = torch.nn.ModuleDict(graph.parts(model.hf_model))
    grids = set()
    for size, batch in _batches(model):
        grids.add(int(batch["pixel_values"].shape[1]))
        feeds = graph.feeds(_numpy(batch))
        with torch.no_grad():
            got = graph.encode(parts, model.hf_model.config, *(torch.from_numpy(feeds[n]) for n in graph.inputs))
            want = graph.reference(model.hf_model, batch)
        assert got.shape[0] == int((batch["input_ids"] == model.image_token_id).sum()), size
        assert got.shape == want.shape, size
        assert torch.allclose(got, want, atol=1e-5), size
    assert {3, 5} <= grids  # 1x2 or 2x1 and 2x2 grids (plus the base tile)


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_graph_follows_image_sizes(drafters, arch, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    import torch

    from covspec.export.onnx_export import _export_vision
    from covspec.models.families import family_named

    model, family = drafters[arch], family_named(arch)
    path = tmp_path / "vision_encoder.onnx"
    with torch.no_grad():
        _export_vision(model, family, path, 18)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size, batch in _batches(model):
        got = session.run(None, family.vision.feeds(_numpy(batch)))[0]
        want = family.vision.reference(model.hf_model, batch).detach().numpy()
        assert got.shape == want.shape, size
        assert np.abs(got - want).max() < 1e-4, size


@pytest.mark.parametrize("arch", ARCHS)
def test_feeds_refuse_more_than_one_image(arch) -> None:
    from covspec.models.families import family_named

    batch = {"pixel_values": np.zeros((2, 5, 3, 12, 12), np.float32), "image_sizes": np.full((2, 2), 40, np.int64)}
    with pytest.raises(ValueError, match=r"one image per call: pixel_values \[2, 5, 3, 12, 12\]"):
        family_named(arch).vision.feeds(batch)
