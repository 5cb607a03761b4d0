"""What a quantized drafter costs and gains, measured against its fp32 bundle through the same engine: the drafter's
decode step side by side, top-1 agreement along the fp32 bundle's greedy sequences, and (given a target) the pair's
AAL before and after. ``quantize_and_measure`` is the whole of ``covspec quantize``.

Engine-agnostic: everything goes through the drafter-engine protocol (``start`` -> ``ModelSequence``), so the same
numbers compare ONNX Runtime bundles, TensorRT engines or torch drafters.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from covspec.bench.inprocess import generate_in_process
from covspec.bundle.writing import update_manifest
from covspec.export.calibration import calibrate_bundle
from covspec.models import load_model
from covspec.protocol import VerifyMode
from covspec.quant.bundle import quantize_bundle, resolve_scheme
from covspec.quant.calibration import CalibrationSample, SampleSource, greedy_tokens
from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine
from covspec.runtime_device.loop import GenerationConfig
from covspec.spec import SpecStats

log = logging.getLogger(__name__)

AAL_DRAFT_LEN = 4
EVAL_SAMPLES = 8  # "heldout" samples for agreement and AAL
EVAL_MAX_NEW_TOKENS = 24


def step_latency(
    engines: Mapping[str, Any], sample: CalibrationSample, *, steps: int = 32, warmup: int = 4
) -> dict[str, dict[str, float]]:
    """Median and p90 milliseconds of one decode step (``extend`` of one token) for each engine, measured
    interleaved (engine A step, engine B step, ...) so both see the same machine state; each engine feeds back its
    own greedy token."""
    sequences = {}
    tokens = {}
    for name, engine in engines.items():
        sequences[name] = engine.start(sample.image if engine.accepts_images else None, sample.prompt)
        tokens[name] = int(np.argmax(sequences[name].prefill_logits))
    times: dict[str, list[float]] = {name: [] for name in engines}
    for step in range(warmup + steps):
        for name, sequence in sequences.items():
            started = time.perf_counter()
            logits = sequence.extend([tokens[name]])
            elapsed = time.perf_counter() - started
            tokens[name] = int(np.argmax(logits[-1]))
            if step >= warmup:
                times[name].append(elapsed * 1e3)
    return {
        name: {"median_ms": statistics.median(ms), "p90_ms": float(np.percentile(ms, 90)), "steps": len(ms)}
        for name, ms in times.items()
    }


def top1_agreement(
    reference: Any, candidate: Any, samples: list[CalibrationSample], *, max_new_tokens: int = 24
) -> dict[str, Any]:
    """How often ``candidate``'s argmax equals ``reference``'s along ``reference``'s own greedy sequences
    (teacher-forced: the candidate reads the reference's tokens). ``identical_sequences``: fraction of samples where
    every position agrees, i.e. the candidate's greedy output would be the reference's."""
    agree = positions = identical = 0
    for sample in samples:
        ref_tokens = greedy_tokens(reference, sample, max_new_tokens)
        sequence = candidate.start(sample.image if candidate.accepts_images else None, sample.prompt)
        predicted = [int(np.argmax(sequence.prefill_logits))]
        if len(ref_tokens) > 1:
            predicted += [int(t) for t in np.argmax(sequence.extend(ref_tokens[:-1]), axis=-1)]
        hits = sum(p == r for p, r in zip(predicted, ref_tokens, strict=True))
        agree += hits
        positions += len(ref_tokens)
        identical += hits == len(ref_tokens)
    return {
        "top1_agreement": agree / positions if positions else float("nan"),
        "positions": positions,
        "identical_sequences": identical / len(samples) if samples else float("nan"),
        "samples": len(samples),
        "max_new_tokens": max_new_tokens,
    }


def pair_acceptance(
    engine: Any,
    target: Any,
    samples: list[CalibrationSample],
    *,
    k: int = AAL_DRAFT_LEN,
    max_new_tokens: int = 24,
) -> dict[str, Any]:
    """AAL (committed tokens per round) and acceptance rate of ``engine`` drafting for ``target`` (a loaded
    ``covspec.models`` model), greedy, draft length ``k``, pooled over ``samples`` run through the in-process loop."""
    config = GenerationConfig(max_new_tokens=max_new_tokens, draft_len=k, verify_mode=VerifyMode.COMPACT)
    pooled = SpecStats()
    for sample in samples:
        _, stats, _ = generate_in_process(engine, target, sample.image, sample.prompt, config)
        pooled.add(stats)
    return {
        "aal": pooled.aal,
        "acceptance_rate": pooled.acceptance_rate,
        "rounds": pooled.rounds,
        "generated_tokens": pooled.committed,
        "k": k,
        "verify_mode": "greedy",
    }


def measure(
    fp32_dir: Path,
    quant_dir: Path,
    samples: list[CalibrationSample],
    *,
    target: str | Path | None = None,
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
    threads: int | None = None,
) -> dict[str, Any]:
    """Step latency, top-1 agreement and (with ``target``) AAL of the bundle at ``quant_dir`` against ``fp32_dir``,
    over ``samples``."""
    kwargs = {"threads": threads} if threads is not None else {}
    reference = OnnxDrafterEngine(fp32_dir, **kwargs)
    candidate = OnnxDrafterEngine(quant_dir, **kwargs)
    report: dict[str, Any] = {
        "step_latency_ms": step_latency({"fp32": reference, "quantized": candidate}, samples[0]),
        "agreement": top1_agreement(reference, candidate, samples, max_new_tokens=max_new_tokens),
        "pair": None,
    }
    if target is not None:
        target_model = load_model(str(target), dtype="float32")
        report["pair"] = {
            "target": str(target),
            "fp32": pair_acceptance(reference, target_model, samples, max_new_tokens=max_new_tokens),
            "quantized": pair_acceptance(candidate, target_model, samples, max_new_tokens=max_new_tokens),
        }
    return report


def quantize_and_measure(
    bundle_dir: Path | str,
    out_dir: Path | str,
    precision: str,
    *,
    samples: SampleSource,
    calibration_images: Path | str | None = None,
    static: bool | None = None,
    target: str | Path | None = None,
    progress: Any = None,
    eval_samples: int = EVAL_SAMPLES,
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
    threads: int | None = None,
) -> dict[str, Any]:
    """``covspec quantize``: calibrate (static int8: over ``calibration_images``, else ``samples("train", n)``),
    quantize, then measure on ``samples("heldout", eval_samples)`` and write the numbers into the new bundle's
    ``quantization.report``; returns that section. quant has no dataset of its own: ``covspec quantize`` passes the
    demo's scenes (``covspec.demo.samples.SCENES``) and, for the shipped demo drafter, the demo target."""
    calibrated = calibration_images is not None
    scheme = resolve_scheme(precision, static=static if static is not None else calibrated)
    calibration = None
    if scheme.calibrated:
        calibration = calibrate_bundle(
            bundle_dir, calibration_images=calibration_images, samples=samples, progress=progress
        )
    section = quantize_bundle(
        bundle_dir, out_dir, precision, static=scheme.calibrated, calibration=calibration, progress=progress
    )
    section["report"] = measure(
        Path(bundle_dir),
        Path(out_dir),
        samples("heldout", eval_samples),
        target=target,
        max_new_tokens=max_new_tokens,
        threads=threads,
    )
    return update_manifest(out_dir, quantization=section).quantization


__all__ = [
    "AAL_DRAFT_LEN",
    "EVAL_SAMPLES",
    "measure",
    "pair_acceptance",
    "quantize_and_measure",
    "step_latency",
    "top1_agreement",
]
