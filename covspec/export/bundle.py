"""The device bundle on disk: ``manifest.json`` beside the ONNX graphs, tokenizer and processor files (DESIGN.md §5).

Stdlib and numpy only, so a device without torch or onnx can check a bundle before loading it. ``write_manifest``
hashes every file of the folder (recursively, all but the manifest itself); ``load_bundle`` refuses a folder that
is not a bundle, comes from a newer covspec, lacks a listed file, or holds a file edited after export.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covspec.errors import BundleError

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = 1
MANIFEST_NAME = "manifest.json"
GRAPH_ROLES = ("vision_encoder", "embed_tokens", "decoder")
PRECISIONS = ("fp32", "fp16", "int8", "int8_qdq", "int4")
_HASH_CHUNK = 1 << 20


def covspec_version() -> str:
    try:
        from importlib.metadata import version

        return version("covspec")
    except Exception:  # not installed as a distribution (a bare checkout)
        return "0+unknown"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Manifest:
    """``manifest.json`` as a dataclass; keys this covspec does not know are kept in ``extra`` and written back."""

    family: str
    graphs: dict[str, str]
    format: int = BUNDLE_FORMAT
    covspec_version: str = dataclasses.field(default_factory=covspec_version)
    source: dict[str, Any] = field(default_factory=dict)
    opset: int | None = None
    precision: str = "fp32"
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    io: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    libraries: dict[str, str | None] = field(default_factory=dict)
    validation: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    tensorrt: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out = {"format": data.pop("format"), "covspec_version": data.pop("covspec_version"), **data}
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return json.loads(json.dumps(out))  # a deep, JSON-clean copy

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        missing = [k for k in ("family", "graphs") if k not in data]
        if missing:
            raise BundleError(f"manifest lacks {', '.join(missing)}: not a covspec bundle manifest; re-export")
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)


@dataclass(frozen=True)
class Bundle:
    """A bundle folder with its parsed manifest."""

    root: Path
    manifest: Manifest

    def graph_path(self, role: str) -> Path:
        """The ONNX file playing ``role`` (vision_encoder, embed_tokens, decoder)."""
        name = self.manifest.graphs.get(role)
        if not name:
            raise BundleError(f"{self.root}: this bundle has no {role} graph (family {self.manifest.family})")
        return self.root / name

    def has_graph(self, role: str) -> bool:
        return bool(self.manifest.graphs.get(role))

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self.manifest.fingerprint)


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


def read_manifest(bundle_dir: Path | str) -> Manifest:
    """Parse ``manifest.json`` without checking the files (see ``load_bundle``)."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"{root}: no such folder; give the folder `covspec export` wrote")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(
            f"{root}: no {MANIFEST_NAME}, so this is not a covspec bundle; "
            "create one with `covspec export MODEL --out DIR`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc}); re-export the bundle") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path}: the manifest is not a JSON object; re-export the bundle")
    fmt = data.get("format")
    if not isinstance(fmt, int):
        raise BundleError(f"{path}: the manifest has no integer format; re-export the bundle")
    if fmt > BUNDLE_FORMAT:
        raise BundleError(
            f"{root}: bundle format {fmt} is newer than this covspec reads ({BUNDLE_FORMAT}): upgrade covspec"
        )
    return Manifest.from_dict(data)


def load_bundle(bundle_dir: Path | str, *, verify: bool = True) -> Bundle:
    """Read and check a bundle: every graph role names a present file; with ``verify``, every listed file is present
    with its recorded size and sha256."""
    root = Path(bundle_dir)
    manifest = read_manifest(root)
    for role, name in manifest.graphs.items():
        if name and not (root / name).is_file():
            raise BundleError(f"{root}: graph {role} is {name}, which is missing; re-export or copy the whole bundle")
    if "decoder" not in manifest.graphs or "embed_tokens" not in manifest.graphs:
        raise BundleError(f"{root}: the manifest names no decoder / embed_tokens graph; re-export the bundle")
    if verify:
        verify_files(root, manifest)
    return Bundle(root=root, manifest=manifest)


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
        is_graph = rel.endswith((".onnx", ".onnx.data", ".onnx_data")) or rel.startswith("tensorrt/")
        if is_graph and not include_graphs:
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copied.append(rel)
    return copied


__all__ = [
    "BUNDLE_FORMAT",
    "GRAPH_ROLES",
    "MANIFEST_NAME",
    "PRECISIONS",
    "Bundle",
    "Manifest",
    "copy_bundle_files",
    "hash_files",
    "load_bundle",
    "read_manifest",
    "sha256_file",
    "update_manifest",
    "verify_files",
    "write_manifest",
]
