"""Writing a bundle's ``manifest.json``: every file of the folder hashed into it (recursively, all but the manifest
itself), fields updated in place, and a new bundle started from an old one's support files.

Export and quant are the writers; both read and write bundles through ``covspec.bundle`` alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from covspec.bundle.engines import TRT_DIR
from covspec.bundle.files import hash_files
from covspec.bundle.manifest import MANIFEST_NAME, Manifest, read_manifest
from covspec.errors import BundleError

logger = logging.getLogger(__name__)


def write_manifest(bundle_dir: Path | str, manifest: Manifest) -> Manifest:
    """Recompute ``files`` over the folder and write ``manifest.json``; returns the manifest as written."""
    root = Path(bundle_dir)
    for role, name in manifest.graphs.items():
        if name and not (root / name).is_file():
            raise BundleError(f"{root}: graph {role} names {name}, which is not in the folder")
    manifest.files = hash_files(root)
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n"
    tmp = root / (MANIFEST_NAME + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(root / MANIFEST_NAME)
    logger.info("wrote %s (%d files)", root / MANIFEST_NAME, len(manifest.files))
    return manifest


def update_manifest(bundle_dir: Path | str, **changes: Any) -> Manifest:
    """Set top-level manifest fields (known or extra) and rewrite it, rehashing the folder's files."""
    root = Path(bundle_dir)
    manifest = read_manifest(root)
    known = {f.name for f in dataclasses.fields(Manifest)} - {"extra", "files"}
    for key, value in changes.items():
        if key in known:
            setattr(manifest, key, value)
        elif key == "files":
            raise ValueError("files is recomputed from the folder; do not set it")
        else:
            manifest.extra[key] = value
    return write_manifest(root, manifest)


def copy_bundle_files(
    src: Path | str,
    dst: Path | str,
    *,
    exclude: Iterable[str] | Callable[[str], bool] = (),
    include_graphs: bool = False,
) -> list[str]:
    """Copy a bundle's files into ``dst`` to start a new bundle from an old one (tokenizer, processor, config files).

    ``.onnx`` files (and their external ``.onnx.data``) are left out unless ``include_graphs``; ``exclude`` is a set of
    relative paths or a predicate over them. The manifest is never copied: write a new one with ``write_manifest``.
    Returns the relative paths copied.
    """
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    skip = exclude if callable(exclude) else set(exclude).__contains__
    copied: list[str] = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src).as_posix()
        if rel == MANIFEST_NAME or skip(rel):
            continue
        is_graph = rel.endswith((".onnx", ".onnx.data", ".onnx_data")) or rel.startswith(f"{TRT_DIR}/")
        if is_graph and not include_graphs:
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copied.append(rel)
    return copied


__all__ = ["copy_bundle_files", "update_manifest", "write_manifest"]
