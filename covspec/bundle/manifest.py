"""``manifest.json``: what a bundle holds (graphs by role, precision, source, hashes) as a dataclass, and reading it.

Stdlib only, so a device without torch or onnx can read a manifest before loading anything.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covspec.errors import BundleError

BUNDLE_FORMAT = 1
MANIFEST_NAME = "manifest.json"
GRAPH_ROLES = ("vision_encoder", "embed_tokens", "decoder")
PRECISIONS = ("fp32", "fp16", "int8", "int8_qdq", "int4")


def covspec_version() -> str:
    try:
        from importlib.metadata import version

        return version("covspec")
    except Exception:  # not installed as a distribution (a bare checkout)
        return "0+unknown"


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


__all__ = [
    "BUNDLE_FORMAT",
    "GRAPH_ROLES",
    "MANIFEST_NAME",
    "PRECISIONS",
    "Manifest",
    "covspec_version",
    "read_manifest",
]
