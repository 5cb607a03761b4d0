"""`covspec bench reduce`: what each reducer costs and keeps, per budget, side by side on the same scenes.

Per (reducer, budget): the drafter's prefill time (median over the scenes; every configuration prefills each scene
in turn, so machine noise hits them alike) and, where the engine times them, its stages (preprocessing, vision
encoder, reduction, the decoder's prefill forward), the visual tokens it read, its KV cache after the prefill (the
part of the device's memory that reduction changes: weights and runtime arenas stay as they are), the pair's AAL,
acceptance and tokens/s (greedy, fixed K, drafter and target in one process, every output checked against the
target's own ``generate()``), with the speedup over the target decoding alone, timed in the same rotation.
Reduction is on the drafter only, so the output never changes; what moves is the drafter's prefill and how often
it is accepted. With ``reduce_target`` each (reducer, budget) also gets a LOSSY row, ``<reducer>+target``, where the
target reads only the kept tokens too: its output is checked against that reduced target's own greedy answer, and
its accuracy (exact match with the scene's answer) beside the full-view target's is the cost.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from covspec.bench.inprocess import generate_in_process
from covspec.bench.sidebyside import BenchItem
from covspec.models.base import LoadedModel
from covspec.protocol import VerifyMode
from covspec.reduce import Budget, TokenReduction
from covspec.runtime_device.engines.base import DrafterEngine
from covspec.runtime_device.loop import GenerationConfig
from covspec.runtime_device.upload import decode_rgb
from covspec.spec import SpecStats
from covspec.spec.policy import PolicyKind

DRAFT_LEN = 4


def target_greedy_answer(
    target: LoadedModel, image: Any, prompt: str, reduction: TokenReduction | None, max_new_tokens: int
) -> list[int]:
    """Greedy decoding by the target alone, through the sequence code the verifier uses: with ``reduction``, a
    target that reads only the visual tokens it keeps (what a lossy ``--reduce-target`` run must commit); without,
    the target-only baseline."""
    sequence = target.start(image, prompt, select=reduction.select if reduction is not None else None)
    logits, tokens = sequence.prefill_logits, []
    eos = set(target.eos_token_ids)
    while len(tokens) < max_new_tokens:
        tokens.append(int(np.argmax(logits)))
        if tokens[-1] in eos:
            break
        logits = sequence.extend(tokens[-1:])[0]
    return tokens


def run_reduce_bench(
    engine: DrafterEngine,
    target: LoadedModel,
    items: Sequence[BenchItem],
    *,
    budgets: Sequence[float],
    reducers: Sequence[str],
    max_new_tokens: int,
    draft_len: int = DRAFT_LEN,
    reduce_target: bool = False,
    progress: Any = None,
) -> dict[str, Any]:
    """One row per (reducer, budget) (and per lossy target reduction with ``reduce_target``), plus the full view
    (budget 1.0) once, as ``{"rows": [...], ...}``."""
    configs: list[tuple[str, float, TokenReduction | None, bool]] = [("all", 1.0, None, False)]
    for name in reducers:
        configs += [(name, b, TokenReduction(name, Budget(ratio=b)), False) for b in budgets if b < 1]
        if reduce_target:
            configs += [(f"{name}+target", b, TokenReduction(name, Budget(ratio=b)), True) for b in budgets if b < 1]
    images = [decode_rgb(item.image) for item in items]
    prefill: dict[int, list[float]] = {i: [] for i in range(len(configs))}
    kept: dict[int, list[int]] = {i: [] for i in range(len(configs))}
    kv_bytes: dict[int, list[int]] = {i: [] for i in range(len(configs))}
    stages: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(configs))}
    seconds = dict.fromkeys(range(len(configs)), 0.0)
    alone_seconds, alone_tokens = 0.0, 0
    pooled = {i: SpecStats() for i in range(len(configs))}
    correct = dict.fromkeys(range(len(configs)), 0)
    scored = 0
    task = progress.add_task("bench reduce", total=len(items) * len(configs)) if progress is not None else None
    for n, (item, image) in enumerate(zip(items, images, strict=True)):
        scored += item.answer is not None
        order = [-1, *range(len(configs))]  # -1: the target alone
        order = order[n % len(order) :] + order[: n % len(order)]  # rotate who goes first
        for i in order:
            if i < 0:
                started = time.perf_counter()
                alone = target_greedy_answer(target, image, item.prompt, None, max_new_tokens)
                alone_seconds += time.perf_counter() - started
                alone_tokens += len(alone)
                if alone != item.reference:
                    raise AssertionError(f"the target alone did not reproduce generate() on {item.prompt!r}")
                continue
            _, _, reduction, lossy = configs[i]
            started = time.perf_counter()
            sequence = engine.start(image, item.prompt, reduction)
            prefill[i].append(time.perf_counter() - started)
            kept[i].append(sequence.image_tokens)
            kv_bytes[i].append(sequence.kv_bytes())
            stages[i].append(sequence.prefill_stages)
            config = GenerationConfig(
                max_new_tokens=max_new_tokens,
                draft_len=draft_len,
                verify_mode=VerifyMode.COMPACT,
                policy=PolicyKind.FIXED,
                reduction=reduction,
                reduce_target=lossy,
            )
            tokens, stats, elapsed = generate_in_process(engine, target, image, item.prompt, config)
            seconds[i] += elapsed
            want = item.reference
            if lossy and reduction is not None:
                want = target_greedy_answer(target, image, item.prompt, reduction, max_new_tokens)
            if tokens != want:
                raise AssertionError(f"{configs[i][0]} at {configs[i][1]} changed the output on {item.prompt!r}")
            if item.answer is not None:
                correct[i] += engine.decode(tokens).strip() == item.answer.strip()
            pooled[i].add(stats)
            if task is not None:
                progress.update(task, advance=1)
    full_prefill = statistics.median(prefill[0])
    full_aal = pooled[0].aal
    stage_ms = {i: _median_stages(stages[i]) for i in range(len(configs))}
    full_decoder = stage_ms[0].get("decoder")
    alone_rate = alone_tokens / alone_seconds
    rows = []
    for i, (name, budget, _, lossy) in enumerate(configs):
        median = statistics.median(prefill[i])
        rate = pooled[i].committed / seconds[i]
        rows.append(
            {
                "reducer": name,
                "mode": name,
                "keep": budget,
                "visual_tokens": statistics.mean(kept[i]),
                "prefill_ms": median * 1e3,
                "prefill_share": median / full_prefill,
                "prefill_stages_ms": stage_ms[i],  # where the engine times them (ONNX Runtime does)
                "decoder_prefill_share": stage_ms[i]["decoder"] / full_decoder if full_decoder else None,
                "drafter_kv_kib": statistics.mean(kv_bytes[i]) / 1024,
                "tokens_per_s": rate,
                "speedup": rate / alone_rate,
                "aal": pooled[i].aal,
                "aal_share": pooled[i].aal / full_aal if full_aal else None,
                "acceptance_rate": pooled[i].acceptance_rate,
                "target_reduced": lossy,
                "identical_to_target": not lossy,  # else identical to the reduced target's own answer
                "accuracy": correct[i] / scored if scored else None,
            }
        )
    return {
        "rows": rows,
        "scenes": len(items),
        "draft_len": draft_len,
        "max_new_tokens": max_new_tokens,
        "verify": "greedy, fixed K, in process (no link)",
        "target_only_tokens_per_s": alone_rate,
        "speedup_scenario": "drafter and target in one process on this machine's CPUs, no link; target-only is the "
        "target decoding alone through the same sequence code, timed in the same rotation",
    }


def _median_stages(timed: list[dict[str, float]]) -> dict[str, float]:
    """Median milliseconds per prefill stage, over the prefills that timed it."""
    names = dict.fromkeys(name for stages in timed for name in stages)
    return {name: statistics.median(s[name] for s in timed if name in s) * 1e3 for name in names}


def plot_reduce_bench(result: dict[str, Any], path: Path) -> None:
    """AAL and drafter prefill time against the budget, one line per reducer; the full view as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    full = rows[0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in dict.fromkeys(r["reducer"] for r in rows[1:] if not r["target_reduced"]):
        mine = sorted((r for r in rows if r["reducer"] == name), key=lambda r: r["keep"])
        keeps = [r["keep"] for r in mine] + [1.0]
        left.plot(keeps, [r["aal"] for r in mine] + [full["aal"]], marker="o", label=name)
        right.plot(keeps, [r["prefill_ms"] for r in mine] + [full["prefill_ms"]], marker="o", label=name)
    left.axhline(full["aal"], color="grey", ls="--", lw=0.8)
    right.axhline(full["prefill_ms"], color="grey", ls="--", lw=0.8)
    left.set(xlabel="share of visual tokens the drafter reads", ylabel=f"AAL (K = {result['draft_len']})")
    right.set(xlabel="share of visual tokens the drafter reads", ylabel="drafter prefill (ms, median)")
    left.legend(fontsize=8)
    fig.suptitle(f"covspec bench reduce ({result['scenes']} scenes; output identical to the target's in every row)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["plot_reduce_bench", "run_reduce_bench", "target_greedy_answer"]
