"""`covspec demo`: the trained pair behind a real `covspec serve`, the device runtime on held-out scenes, one table.

Modes, side by side in one run through the same server (and the same emulated link, if any), scene by scene:
target-only (the edge's chat completions), conventional speculative decoding (vanilla, K = 4, a fresh session per
question), and the full runtime (compact verification, one connection across generations, the cost policy). Every
row's ``identical_to_target`` compares its tokens with transformers' own ``generate()`` of the target. The edge (a
pinned subprocess) and the device (this process) run on disjoint CPUs (DESIGN.md §10). Prints nothing itself.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from covspec.bench.sidebyside import BenchItem, BenchMode, pinned, run_side_by_side
from covspec.cpus import split_cpus
from covspec.demo import scenes
from covspec.demo.train import PairPaths
from covspec.link.presets import link_profile
from covspec.models.loading import load_model, quiet_transformers
from covspec.protocol import VerifyMode
from covspec.runtime_device.engines import load_engine
from covspec.spec.policy import PolicyKind

DRAFT_LEN = 4
MAX_NEW_TOKENS = 40
WARMUP_SCENE = 100_000  # held-out scenes no run measures: each mode answers them untimed first
WARMUP_QUESTIONS = 3  # a connection's first questions carry the cost policy's first measurements (3 draft rounds)

DEMO_MODES = (
    BenchMode("target-only", None, draft_len=0),
    BenchMode("vanilla", VerifyMode.VANILLA, PolicyKind.FIXED, DRAFT_LEN, persistent=False),
    BenchMode("covspec", VerifyMode.COMPACT, PolicyKind.COST, 6),  # the full runtime: the best row
)


def demo_items(
    pair: PairPaths, n_scenes: int, task: str = "all", max_new_tokens: int = MAX_NEW_TOKENS, start: int = 0
) -> list[BenchItem]:
    """Held-out scenes ``start .. start + n_scenes - 1`` asking ``task`` (any task for ``all``), each with the
    target's own greedy ``generate()`` as the reference every row must commit."""
    tasks = scenes.TASKS if task == "all" else (task,)
    with quiet_transformers():
        target = load_model(str(pair.target), dtype="float32")
    items = []
    for qa in scenes.dataset("heldout", n_scenes, tasks=tasks, start=start):
        reference = target.generate(qa.scene.image, qa.question, max_new_tokens=max_new_tokens)
        items.append(BenchItem(_png(qa.scene.image), qa.question, reference, qa.answer, qa.task))
    return items


def load_drafter(pair: PairPaths, bundle: Path | None, threads: int) -> Any:
    """The drafter on ONNX Runtime from its device ``bundle`` when given, else from the checkpoint on torch."""
    with quiet_transformers():
        if bundle is not None:
            return load_engine("onnxruntime", bundle, ep="cpu", threads=threads)
        return load_engine("torch", str(pair.drafter), dtype="float32", threads=threads)


def run_demo(
    pair: PairPaths,
    *,
    bundle: Path | None = None,
    n_scenes: int = 20,
    link: str = "loopback",
    modes: Sequence[BenchMode] = DEMO_MODES,
    max_new_tokens: int = MAX_NEW_TOKENS,
    progress: Any = None,
) -> dict[str, Any]:
    """Rows of DESIGN.md §7 (``mode``, ``accuracy``, ``tokens_per_s``, ``speedup``, ``aal``, bytes per token,
    ``identical_to_target``, and the bench harness's columns) for held-out scenes ``0 .. n_scenes - 1``, with
    ``edge_cpus``, ``device_cpus``, ``edge_threads``, ``device_threads`` and ``cpus_shared``."""
    profile = link_profile(link)
    cpus = split_cpus()
    with pinned(cpus):  # before the engine starts its thread pool; the previous affinity comes back on return
        engine = load_drafter(pair, bundle, len(cpus.device))
        items = demo_items(pair, n_scenes, "all", max_new_tokens)
        warmup = demo_items(pair, WARMUP_QUESTIONS, "all", max_new_tokens, start=WARMUP_SCENE)
        result = run_side_by_side(
            engine, pair.target, items, [profile], cpus=cpus, modes=modes, max_new_tokens=max_new_tokens,
            warmup_items=warmup, progress=progress,
        )  # fmt: skip
    pool = "onnxruntime" if bundle is not None else "torch"
    return {
        "rows": result["links"][0]["rows"],
        "scenes": n_scenes,
        "engine": f"{pool}-fp32",
        "link": profile.name,
        "link_profile": profile.as_dict(),
        "edge_cpus": sorted(cpus.edge),
        "device_cpus": sorted(cpus.device),
        "edge_threads": len(cpus.edge),
        "device_threads": len(cpus.device),
        "cpus_shared": cpus.shared,
        "bound": result["bound"],
        "note": result["note"],
    }


def _png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
