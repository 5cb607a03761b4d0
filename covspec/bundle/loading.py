"""Opening a bundle folder: its manifest read, its graphs present and, by default, every file's hash checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covspec.bundle.files import verify_files
from covspec.bundle.manifest import Manifest, read_manifest
from covspec.errors import BundleError


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


__all__ = ["Bundle", "load_bundle"]
