"""Where the demo pair lives: shipped in the package for the default config, otherwise trained on first use and
cached under the user cache dir, keyed by its config digest.

``ensure_pair()`` with the default config and seed 0 returns the shipped pair (``covspec.demo.ship``) when the package
holds it; any other config or seed (or a package without the weights) trains into the cache. Cache layout:
``<cache root>/demo-pair-v2/<digest[:16]>/{target,drafter,covspec_demo_pair.json}``. The cache
root is, in order: the ``cache_dir`` argument, ``$COVSPEC_CACHE_DIR``, ``$XDG_CACHE_HOME/covspec``,
``~/.cache/covspec``.

Training writes into a temporary sibling folder that is renamed into place only when complete, so an interrupted run
leaves no half pair behind, and two processes racing to train keep whichever finished first.

``ensure_bundle(pair)``: the drafter's device bundle (``covspec export``, fp32, validated against PyTorch), exported
on first use (about half a minute) into ``<cache root>/demo-bundle-v1/<drafter weights sha256[:16]>`` the same
atomic way, and checked (every file's hash) on each later use; a damaged cached bundle is exported again.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from covspec.demo.ship import shipped_pair
from covspec.demo.train import PairPaths, TrainConfig, train_pair
from covspec.models.loading import quiet_transformers

logger = logging.getLogger(__name__)

CACHE_ENV = "COVSPEC_CACHE_DIR"
PAIR_DIR = "demo-pair-v2"
BUNDLE_DIR = "demo-bundle-v1"


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """covspec's user cache folder (not created)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "covspec"


def pair_dir(cache_dir: Path | str | None = None, config: TrainConfig | None = None, seed: int = 0) -> Path:
    """The folder the pair of (config, seed) is cached in."""
    config = config or TrainConfig()
    return cache_root(cache_dir) / PAIR_DIR / config.digest(seed)[:16]


def ensure_pair(
    cache_dir: Path | str | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    progress: Any = None,
    use_shipped: bool = True,
) -> PairPaths:
    """The pair of (config, seed): the shipped one if it matches (and ``use_shipped``), else the cached one, trained
    first if it is not there yet (the default config takes about 90 minutes on two CPU cores, hence shipped)."""
    config = config or TrainConfig()
    if use_shipped and config.digest(seed) == TrainConfig().digest(0):
        shipped = shipped_pair()
        if shipped is not None:
            return shipped
    final = pair_dir(cache_dir, config, seed)
    paths = PairPaths(final)
    if paths.exists():
        return paths
    logger.info("training the demo pair into %s", final)
    _build_atomically(
        final, lambda staging: train_pair(staging, config, seed, progress=progress), lambda p: PairPaths(p).exists()
    )
    return paths


def ensure_bundle(pair: PairPaths, cache_dir: Path | str | None = None, progress: Any = None) -> Path:
    """The fp32 device bundle of ``pair``'s drafter, exported on first use and verified on every use."""
    from covspec.bundle import load_bundle, sha256_file
    from covspec.errors import BundleError
    from covspec.export.onnx_export import export_bundle

    weights = sha256_file(pair.drafter / "model.safetensors")
    final = cache_root(cache_dir) / BUNDLE_DIR / weights[:16]

    def usable(path: Path) -> bool:
        try:
            load_bundle(path, verify=True)
        except BundleError as exc:
            if path.exists():
                logger.warning("cached demo bundle unusable (%s); exporting again", exc)
            return False
        return True

    if usable(final):
        return final
    if final.exists():
        shutil.rmtree(final)
    task = progress.add_task("export drafter bundle", total=None) if progress is not None else None
    with quiet_transformers():
        _build_atomically(final, lambda staging: export_bundle(pair.drafter, staging, overwrite=True), usable)
    if task is not None:
        progress.update(task, total=1, completed=1)
    return final


def _build_atomically(final: Path, build: Any, complete: Any) -> None:
    """``build(staging)`` into a temporary sibling of ``final``, then rename it into place; a lost race keeps the
    winner's copy (``complete(final)`` true)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(staging)
        try:
            os.rename(staging, final)
        except OSError:
            if not complete(final):  # not a lost race: a real failure
                raise
            logger.info("another process cached %s first; keeping its copy", final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


__all__ = ["BUNDLE_DIR", "CACHE_ENV", "PAIR_DIR", "cache_root", "ensure_bundle", "ensure_pair", "pair_dir"]
