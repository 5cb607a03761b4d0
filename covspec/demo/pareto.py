"""`covspec bench pareto` on the demo pair: the operating points of ``covspec.bench.pareto`` on held-out scenes, the
drafter on ONNX Runtime from its device bundle (fp32, and int8 / int4 bundles quantized from it and cached beside
it), the edge a pinned `covspec serve` of the demo target, joules from the documented estimate of a power profile
and a radio (``covspec.profile.energy.objective``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from covspec.bench.pareto import ESTIMATED, quick_points, run_pareto, sweep_points
from covspec.bench.sidebyside import pinned
from covspec.bundle import load_bundle
from covspec.cpus import split_cpus
from covspec.demo.pareto_settings import ParetoSettings
from covspec.demo.runner import MAX_NEW_TOKENS, WARMUP_QUESTIONS, WARMUP_SCENE, demo_items
from covspec.demo.store import BUNDLE_DIR, cache_root
from covspec.demo.train import PairPaths
from covspec.errors import BundleError
from covspec.link.presets import link_profile
from covspec.models.loading import quiet_transformers
from covspec.profile.energy.objective import energy_inputs
from covspec.quant.bundle import quantize_bundle
from covspec.runtime_device.engines import load_engine


def run_demo_pareto(
    pair: PairPaths, *, bundle: Path, settings: ParetoSettings = ParetoSettings(), progress: Any = None
) -> dict[str, Any]:
    """The sweep of ``settings`` on the demo pair (``bundle``: its fp32 device bundle) as ``run_pareto`` returns it,
    with the scenario."""
    points = quick_points(settings.links) if settings.quick else sweep_points(settings.links)
    questions = 1 if settings.quick else settings.questions
    warmup_questions = 1 if settings.quick else WARMUP_QUESTIONS
    precisions = sorted({p.precision for p in points if p.verify_mode is not None})
    bundles = {precision: quantized_bundle(bundle, precision, progress=progress) for precision in precisions}
    cpus = split_cpus()
    energy = energy_inputs(settings.power_profile, settings.radio, busy_cores=len(cpus.device))
    with pinned(cpus):
        with quiet_transformers():
            engines = {
                p: load_engine("onnxruntime", path, ep="cpu", threads=len(cpus.device)) for p, path in bundles.items()
            }
        items = demo_items(pair, questions, "all", MAX_NEW_TOKENS)
        warmup = demo_items(pair, warmup_questions, "all", MAX_NEW_TOKENS, start=WARMUP_SCENE)
        result = run_pareto(
            engines, pair.target, items, points, {name: link_profile(name) for name in settings.links}, cpus=cpus,
            energy=energy, energy_label=ESTIMATED, max_new_tokens=MAX_NEW_TOKENS, warmup_items=warmup,
            progress=progress,
        )  # fmt: skip
    result.update(
        settings={**asdict(settings), "links": list(settings.links)},
        engine={p: f"onnxruntime-{p}" for p in bundles},
        target="demo pair target (LLaVA, 2.3M parameters), float32, this CPU",
        scenario="one device, one edge on this machine (disjoint CPUs), emulated links",
        scenario_lines=[
            "demo pair (LLaVA target 2.3M parameters, float32) on this machine's CPUs; one device (this process) and "
            "one edge (a pinned covspec serve) on disjoint CPUs, emulated links: " + ", ".join(settings.links),
            f"held-out demo scenes, every task; drafter on ONNX Runtime ({', '.join(bundles)} bundles)",
            f"energy model: power profile {settings.power_profile}, radio {settings.radio}, "
            f"{len(cpus.device)} busy core(s) while drafting",
        ],
    )
    return result


def quantized_bundle(
    bundle: Path, precision: str, *, cache_dir: Path | str | None = None, progress: Any = None
) -> Path:
    """``bundle`` itself for fp32; else its quantized copy (``covspec.quant``, dynamic int8 or weight-only int4,
    no calibration), built on first use into ``<cache root>/demo-bundle-v1/<fp32 bundle name>-<precision>`` through a
    temporary sibling renamed into place, and checked (every file's hash) on each later use."""
    if precision == "fp32":
        return bundle
    final = cache_root(cache_dir) / BUNDLE_DIR / f"{bundle.name}-{precision}"
    if _usable(final):
        return final
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        with quiet_transformers():
            quantize_bundle(bundle, staging, precision, static=False, progress=progress)
        try:
            os.rename(staging, final)
        except OSError:
            if not _usable(final):  # not another process's finished copy: a real failure
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final


def _usable(path: Path) -> bool:
    try:
        load_bundle(path, verify=True)
    except BundleError:
        return False
    return True


__all__ = ["quantized_bundle", "run_demo_pareto"]
