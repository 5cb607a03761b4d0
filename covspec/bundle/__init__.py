"""The device bundle as data (DESIGN.md §3, §5): ``manifest.json`` beside the ONNX graphs, tokenizer and processor
files, the hashes that prove them unchanged, and the TensorRT platform the bundle's engines are tied to.

Its own layer, below models and the runtimes, because the device reads bundles (``runtime_device``) and export and
quant write them. Stdlib only, so a device without torch or onnx can check a bundle before loading it:

- ``manifest``: ``Manifest`` and ``read_manifest``; ``files``: hashing and ``verify_files``;
- ``loading``: ``Bundle`` and ``load_bundle`` (refuses a folder that is not a bundle, comes from a newer covspec,
  lacks a listed file, or holds a file edited after export);
- ``platform``: TensorRT, GPU and JetPack detection; ``engines``: the plans' layout and compatibility check;
- ``writing``: ``write_manifest``, ``update_manifest``, ``copy_bundle_files``, what export and quant write with.
"""

from covspec.bundle.files import hash_files, sha256_file, verify_files
from covspec.bundle.loading import Bundle, load_bundle
from covspec.bundle.manifest import BUNDLE_FORMAT, GRAPH_ROLES, MANIFEST_NAME, PRECISIONS, Manifest, read_manifest

__all__ = [
    "BUNDLE_FORMAT",
    "GRAPH_ROLES",
    "MANIFEST_NAME",
    "PRECISIONS",
    "Bundle",
    "Manifest",
    "hash_files",
    "load_bundle",
    "read_manifest",
    "sha256_file",
    "verify_files",
]
