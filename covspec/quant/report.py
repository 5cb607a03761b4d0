"""What a quantized drafter costs and gains, measured against its fp32 bundle through the same engine.

Engine-agnostic: everything goes through the drafter-engine protocol (``start`` -> ``ModelSequence``), so the same
numbers can compare ONNX Runtime bundles, TensorRT engines or torch drafters.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from covspec.quant.calibration import CalibrationSample, greedy_tokens

if TYPE_CHECKING:
    from covspec.models.base import LoadedModel
    from covspec.runtime_device.engines.base import DrafterEngine
    from covspec.runtime_device.loop import GenerationConfig
    from covspec.spec import SpecStats

log = logging.getLogger(__name__)

AAL_DRAFT_LEN = 4


class PairGenerator(Protocol):
    """``generate(engine, target, image, prompt, config) -> (tokens, round stats, seconds)``: the speculative loop
    with drafter and target in one process, i.e. ``covspec.bench.inprocess.generate_in_process``. Passed in by the
    caller because quant sits below bench (DESIGN.md §3)."""

    def __call__(
        self, engine: DrafterEngine, target: LoadedModel, image: Any, prompt: str, config: GenerationConfig
    ) -> tuple[list[int], SpecStats, float]: ...


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
    generate: PairGenerator,
    k: int = AAL_DRAFT_LEN,
    max_new_tokens: int = 24,
) -> dict[str, Any]:
    """AAL (committed tokens per round) and acceptance rate of ``engine`` drafting for ``target`` (a loaded
    ``covspec.models`` model), greedy, draft length ``k``, pooled over ``samples`` through ``generate`` (the
    in-process loop, ``covspec.bench.inprocess.generate_in_process``)."""
    from covspec.protocol import VerifyMode
    from covspec.runtime_device.loop import GenerationConfig
    from covspec.spec import SpecStats

    config = GenerationConfig(max_new_tokens=max_new_tokens, draft_len=k, verify_mode=VerifyMode.COMPACT)
    pooled = SpecStats()
    for sample in samples:
        _, stats, _ = generate(engine, target, sample.image, sample.prompt, config)
        pooled.rounds += stats.rounds
        pooled.drafted += stats.drafted
        pooled.accepted += stats.accepted
        pooled.committed += stats.committed
    return {
        "aal": pooled.aal,
        "acceptance_rate": pooled.acceptance_rate,
        "rounds": pooled.rounds,
        "generated_tokens": pooled.committed,
        "k": k,
        "verify_mode": "greedy",
    }


__all__ = ["AAL_DRAFT_LEN", "PairGenerator", "pair_acceptance", "step_latency", "top1_agreement"]
