"""InternVL: the vision graph on the real processor's tiling (``crop_to_patches`` with several tiles and a
thumbnail), which the tiny processor keeps to one tile, and the device path without torch (images-only
processor)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.models._helpers import make_image

pytest.importorskip("torch")

PROMPT = "What is in the image?"


def test_vision_graph_equals_get_image_features_with_tiles(tiny_pair) -> None:
    import torch

    from covspec.models import load_model
    from covspec.models.families.internvl import FAMILY

    model = load_model(str(tiny_pair("internvl").target), dtype="float32")
    processor = model.processor
    content = [{"type": "image"}, {"type": "text", "text": PROMPT}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    batch = processor(
        text=text, images=[make_image(3, (160, 64))], crop_to_patches=True, max_patches=6, return_tensors="pt"
    )
    tiles = int(batch["pixel_values"].shape[0])
    assert tiles > 2  # several tiles and the thumbnail
    ids = batch["input_ids"][0]
    vision = FAMILY.vision
    assert vision is not None
    feeds = {k: torch.from_numpy(v) for k, v in vision.feeds({"pixel_values": batch["pixel_values"].numpy()}).items()}
    with torch.inference_mode():
        ours = vision.encode(vision.parts(model.hf_model), model.hf_model.config, *feeds.values())
        want = vision.reference(model.hf_model, dict(batch))
    assert ours.shape[0] == int((ids == model.image_token_id).sum()) == tiles * processor.image_seq_length
    torch.testing.assert_close(ours, want, atol=1e-5, rtol=0)


def test_engine_runs_without_torch_or_torchvision(tiny_bundle) -> None:
    pytest.importorskip("onnxruntime")
    from covspec.runtime_device.engines import load_engine

    source, root = tiny_bundle("internvl")
    code = textwrap.dedent(
        f"""
        import sys
        for name in ("torch", "torchvision"):
            sys.modules[name] = None
        import numpy as np
        from covspec.runtime_device.engines import load_engine
        from tests.models._helpers import make_image
        engine = load_engine("onnxruntime", {str(root)!r})
        seq = engine.start(make_image(1, (56, 40)), {PROMPT!r})
        rows = seq.extend([int(np.argmax(seq.prefill_logits)), 5])
        print(" ".join(str(t) for t in seq.token_ids[: seq.prompt_length]))
        print(seq.image_tokens, rows.shape[0], int(np.argmax(seq.prefill_logits)))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    *_, ids_line, numbers = result.stdout.strip().splitlines()
    image_tokens, rows, top1 = (int(v) for v in numbers.split())
    with_torch = load_engine("torch", str(source), dtype="float32").start(make_image(1, (56, 40)), PROMPT)
    assert [int(t) for t in ids_line.split()] == list(with_torch.token_ids)  # same rendering without torch
    assert image_tokens == with_torch.image_tokens == 4 and rows == 2
    assert top1 == int(np.argmax(with_torch.prefill_logits))
