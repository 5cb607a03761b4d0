"""Export validation: ONNX Runtime (CPU) against PyTorch (float32) on rendered prompts and a greedy continuation.

For each sample (image, prompt): both sides prefill the same rendered prompt; then PyTorch's greedy tokens are fed
one at a time to both (teacher forcing, so one early flip does not derail the comparison). Recorded: the largest
absolute logit difference over every compared row, the share of rows whose argmax agrees, and, for a VLM, the largest
difference of the image features against the model's own ``get_image_features``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from covspec.errors import ExportError

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-2  # max |logit difference| for fp32 graphs
DEFAULT_MIN_TOP1 = 0.95  # share of compared rows whose argmax must agree
DEFAULT_TOKENS = 16
DEFAULT_SAMPLES = 2


def validate_bundle(
    bundle_dir: str | Path,
    loaded: Any,
    *,
    sample_images: Sequence[Any] | None = None,
    prompts: Sequence[str] | None = None,
    tokens: int = DEFAULT_TOKENS,
    tolerance: float | None = None,
    min_top1: float = DEFAULT_MIN_TOP1,
    verify: bool = True,
) -> dict[str, Any]:
    """Compare the bundle at ``bundle_dir`` with ``loaded`` (a float32 ``covspec.models`` model); return the numbers."""
    import torch

    from covspec.export import samples
    from covspec.export.wrappers import reference_image_features
    from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

    tolerance = DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
    engine = OnnxDrafterEngine(bundle_dir, ep="cpu", verify=verify)
    images = list(sample_images) if sample_images is not None else samples.sample_images(DEFAULT_SAMPLES)
    prompts = list(prompts) if prompts is not None else list(samples.SAMPLE_PROMPTS)
    if not loaded.accepts_images:
        images = [None] * max(1, len(images))
    began = time.perf_counter()
    max_err = 0.0
    feature_err = 0.0
    agree = rows = 0
    for i, image in enumerate(images):
        prompt = prompts[i % len(prompts)]
        if image is not None:
            batch = engine.render(image, prompt)
            onnx_features = engine.image_features(batch)
            with torch.no_grad():
                ref = reference_image_features(loaded.hf_model, loaded.family, loaded.render(image, prompt))
            feature_err = max(feature_err, float(np.abs(onnx_features - ref.float().numpy()).max()))
        ref_seq = loaded.start(image, prompt)
        onnx_seq = engine.start(image, prompt)
        if list(ref_seq.token_ids) != list(onnx_seq.token_ids):
            raise ExportError(f"sample {i}: the engine rendered a different prompt than PyTorch (tokens differ)")
        ref_row, onnx_row = ref_seq.prefill_logits, onnx_seq.prefill_logits
        for step in range(tokens + 1):
            max_err = max(max_err, float(np.abs(ref_row.astype(np.float64) - onnx_row).max()))
            agree += int(np.argmax(ref_row) == np.argmax(onnx_row))
            rows += 1
            if step == tokens:
                break
            token = int(np.argmax(ref_row))
            ref_row = ref_seq.extend([token])[0]
            onnx_row = onnx_seq.extend([token])[0]
    report = {
        "max_abs_logit_error": max_err,
        "top1_agreement": agree / rows,
        "tokens": tokens,
        "samples": len(images),
        "rows_compared": rows,
        "tolerance": tolerance,
        "min_top1_agreement": min_top1,
        "max_abs_image_feature_error": feature_err if loaded.accepts_images else None,
        "reference": "torch float32, teacher-forced greedy, decoded one token at a time with KV",
        "provider": "CPUExecutionProvider",
        "seconds": round(time.perf_counter() - began, 3),
    }
    report["passed"] = max_err <= tolerance and report["top1_agreement"] >= min_top1
    logger.info(
        "validation: max |logit error| %.3g, top-1 agreement %.3f over %d rows", max_err, report["top1_agreement"], rows
    )
    return report


def check_tolerance(report: dict[str, Any]) -> None:
    """Raise ``ExportError`` with the numbers when a validation report is past its tolerance."""
    if report.get("passed"):
        return
    raise ExportError(
        f"ONNX export does not match PyTorch: max |logit error| {report['max_abs_logit_error']:.4g} "
        f"(tolerance {report['tolerance']:.4g}), top-1 agreement {report['top1_agreement']:.3f} "
        f"(needs >= {report['min_top1_agreement']:.3f}) over {report['rows_compared']} positions"
    )


__all__ = ["DEFAULT_MIN_TOP1", "DEFAULT_TOKENS", "DEFAULT_TOLERANCE", "check_tolerance", "validate_bundle"]
