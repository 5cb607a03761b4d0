"""The files of a bundle folder and their hashes: what ``manifest.json`` lists, and the check that they are unchanged.

A bundle is copied onto a device by hand (scp, SD card); a truncated or edited graph would otherwise fail deep inside
ONNX Runtime or TensorRT, or worse, run with wrong weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from covspec.bundle.manifest import MANIFEST_NAME, Manifest
from covspec.errors import BundleError

_HASH_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_files(root: Path) -> dict[str, dict[str, Any]]:
    """{relative posix path: {"sha256", "bytes"}} for every file under ``root`` except the manifest."""
    root = Path(root)
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST_NAME:
            continue
        files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return files


def verify_files(root: Path, manifest: Manifest) -> None:
    """Raise ``BundleError`` for the first listed file that is missing, resized or rehashed."""
    for rel, info in sorted(manifest.files.items()):
        path = root / rel
        if not path.is_file():
            raise BundleError(
                f"{root}: {rel} is listed in the manifest but missing; copy the whole bundle or re-export"
            )
        size = path.stat().st_size
        if "bytes" in info and size != int(info["bytes"]):
            raise BundleError(
                f"{root}: {rel} has {size} bytes, the manifest says {info['bytes']}: "
                "edited or corrupted after export: re-export"
            )
        if "sha256" in info and sha256_file(path) != info["sha256"]:
            raise BundleError(
                f"{root}: {rel} no longer matches its sha256: edited or corrupted after export: re-export"
            )


__all__ = ["hash_files", "sha256_file", "verify_files"]
