"""`covspec bench load` on the demo pair: N devices against one pinned edge of the demo target, the full runtime's
settings (compact verification, the cost policy, K up to 6), device 0 the real ONNX drafter, the others emulated."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from covspec.bench.load import load_modes, run_load
from covspec.bench.sidebyside import pinned
from covspec.cpus import split_cpus
from covspec.demo.runner import MAX_NEW_TOKENS, demo_items, load_drafter
from covspec.demo.train import PairPaths
from covspec.link.presets import link_profile
from covspec.protocol import VerifyMode
from covspec.runtime_device.loop import GenerationConfig
from covspec.runtime_edge.schedules import Schedule
from covspec.spec.policy import PolicyKind

DRAFT_LEN = 6  # the demo's covspec row: the cost policy drafts up to 6


def run_demo_load(
    pair: PairPaths,
    *,
    bundle: Path | None,
    devices: Sequence[int] = (1, 2, 4, 8, 16),
    link: str = "loopback",
    schedules: Sequence[Schedule] = (Schedule.FCFS,),
    max_batch: int = 32,
    questions: int = 4,
    task: str = "describe",
    window_s: float = 0.0,
    progress: Any = None,
) -> dict[str, Any]:
    """Every device answers the same ``questions`` held-out scenes of ``task`` (describe: the longest answers, where
    drafting pays most), each starting at another one."""
    cpus = split_cpus()
    config = GenerationConfig(
        MAX_NEW_TOKENS, draft_len=DRAFT_LEN, verify_mode=VerifyMode.COMPACT, policy=PolicyKind.COST
    )
    with pinned(cpus):
        engine = load_drafter(pair, bundle, len(cpus.device))
        items = demo_items(pair, questions, task, MAX_NEW_TOKENS)
        result = run_load(
            engine, pair.target, items, devices, cpus=cpus, config=config, modes=load_modes(max_batch, schedules),
            link=link_profile(link), questions=questions, window_s=window_s, progress=progress,
        )  # fmt: skip
    return {
        **result,
        "engine": "onnxruntime-fp32" if bundle is not None else "torch-fp32",
        "target": "demo pair target (LLaVA, 2.3M parameters), float32, this CPU",
        "task": task,
        "scenario": f"N devices, one edge on this machine ({cpus.describe()}), link {link}",
    }
