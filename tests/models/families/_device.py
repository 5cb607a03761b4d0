"""A family's ONNX bundle run where the device lacks some packages (torch, torchvision, num2words): in a subprocess
that cannot import them, compared with the torch engine on the checkpoint."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from tests.models._helpers import make_image

PROMPT = "What is in the image?"


def assert_bundle_runs_without(source: Path, bundle: Path, missing: tuple[str, ...], image_tokens: int) -> None:
    """The bundle renders the same prompt ids, reads ``image_tokens`` visual tokens and predicts the same first token
    as the torch engine, with ``missing`` unimportable."""
    from covspec.runtime_device.engines import load_engine

    code = textwrap.dedent(
        f"""
        import sys
        for name in {missing!r}:
            sys.modules[name] = None
        import numpy as np
        from covspec.runtime_device.engines import load_engine
        from tests.models._helpers import make_image
        engine = load_engine("onnxruntime", {str(bundle)!r})
        seq = engine.start(make_image(1, (56, 40)), {PROMPT!r})
        rows = seq.extend([int(np.argmax(seq.prefill_logits)), 5])
        print(" ".join(str(t) for t in seq.token_ids[: seq.prompt_length]))
        print(seq.image_tokens, rows.shape[0], int(np.argmax(seq.prefill_logits)))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    *_, ids_line, numbers = result.stdout.strip().splitlines()
    tokens, rows, top1 = (int(v) for v in numbers.split())
    with_torch = load_engine("torch", str(source), dtype="float32").start(make_image(1, (56, 40)), PROMPT)
    assert [int(t) for t in ids_line.split()] == list(with_torch.token_ids)  # same rendering without torch
    assert tokens == with_torch.image_tokens == image_tokens and rows == 2
    assert top1 == int(np.argmax(with_torch.prefill_logits))
