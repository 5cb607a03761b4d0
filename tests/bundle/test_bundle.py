"""The bundle manifest: written with every file's hash, read back, and refused with a clear message when broken."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from covspec.bundle import BUNDLE_FORMAT, MANIFEST_NAME, Manifest, load_bundle, read_manifest
from covspec.bundle.writing import copy_bundle_files, update_manifest, write_manifest
from covspec.errors import BundleError


def _fake_bundle(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("embed_tokens.onnx", "decoder_model_merged.onnx", "tokenizer.json", "config.json"):
        (root / name).write_bytes(name.encode() * 3)
    (root / "tensorrt").mkdir()
    (root / "tensorrt" / "engine.plan").write_bytes(b"plan")
    manifest = Manifest(
        family="text_lm",
        graphs={"embed_tokens": "embed_tokens.onnx", "decoder": "decoder_model_merged.onnx"},
        fingerprint={"name": "x", "vocab_size": 7},
        extra={"future_key": {"kept": True}},
    )
    write_manifest(root, manifest)
    return root


def test_manifest_lists_every_file_recursively_and_round_trips(tmp_path: Path) -> None:
    root = _fake_bundle(tmp_path / "b")
    data = json.loads((root / MANIFEST_NAME).read_text())
    assert data["format"] == BUNDLE_FORMAT
    assert set(data["files"]) == {
        "embed_tokens.onnx",
        "decoder_model_merged.onnx",
        "tokenizer.json",
        "config.json",
        "tensorrt/engine.plan",
    }
    assert data["files"]["tokenizer.json"]["bytes"] == len(b"tokenizer.json" * 3)
    assert data["future_key"] == {"kept": True}  # unknown keys survive a round trip
    bundle = load_bundle(root)
    assert bundle.graph_path("decoder") == root / "decoder_model_merged.onnx"
    assert bundle.fingerprint == {"name": "x", "vocab_size": 7}
    assert Manifest.from_dict(bundle.manifest.to_dict()).to_dict() == bundle.manifest.to_dict()
    with pytest.raises(BundleError, match="no vision_encoder graph"):
        bundle.graph_path("vision_encoder")


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a covspec bundle.*covspec export"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="no such folder"):
        load_bundle(tmp_path / "absent")


def test_unparsable_manifest(tmp_path: Path) -> None:
    root = _fake_bundle(tmp_path / "b")
    (root / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest.*re-export"):
        load_bundle(root)


def test_newer_format_refused(tmp_path: Path) -> None:
    root = _fake_bundle(tmp_path / "b")
    data = json.loads((root / MANIFEST_NAME).read_text())
    data["format"] = BUNDLE_FORMAT + 1
    (root / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"bundle format 2 is newer than this covspec reads \(1\): upgrade covspec"):
        load_bundle(root)


def test_missing_listed_file(tmp_path: Path) -> None:
    root = _fake_bundle(tmp_path / "b")
    (root / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is listed in the manifest but missing"):
        load_bundle(root)


def test_missing_graph_file(tmp_path: Path) -> None:
    root = _fake_bundle(tmp_path / "b")
    (root / "decoder_model_merged.onnx").unlink()
    with pytest.raises(BundleError, match="graph decoder is decoder_model_merged.onnx, which is missing"):
        load_bundle(root, verify=False)


@pytest.mark.parametrize("same_size", [True, False])
def test_edited_file_refused(tmp_path: Path, same_size: bool) -> None:
    root = _fake_bundle(tmp_path / "b")
    path = root / "decoder_model_merged.onnx"
    data = bytearray(path.read_bytes())
    if same_size:
        data[0] ^= 0xFF
    else:
        data += b"x"
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="edited or corrupted after export: re-export"):
        load_bundle(root)
    assert load_bundle(root, verify=False).manifest.family == "text_lm"  # verify=False skips the hashes


def test_update_manifest_and_copy_files(tmp_path: Path) -> None:
    src = _fake_bundle(tmp_path / "src")
    dst = tmp_path / "dst"
    copied = copy_bundle_files(src, dst, exclude={"config.json"})
    assert copied == ["tokenizer.json"]  # graphs, engines, the manifest and the excluded file stay behind
    for name in ("embed_tokens.onnx", "decoder_model_merged.onnx"):
        (dst / name.replace(".onnx", "_int8.onnx")).write_bytes(b"q")
    manifest = Manifest(
        family="text_lm",
        graphs={"embed_tokens": "embed_tokens_int8.onnx", "decoder": "decoder_model_merged_int8.onnx"},
        precision="int8",
    )
    write_manifest(dst, manifest)
    updated = update_manifest(dst, quantization={"scheme": "int8"}, note="hello")
    assert updated.quantization == {"scheme": "int8"}
    assert read_manifest(dst).extra["note"] == "hello"
    assert load_bundle(dst).graph_path("decoder").name == "decoder_model_merged_int8.onnx"
    with pytest.raises(ValueError, match="recomputed"):
        update_manifest(dst, files={})


def test_bundle_package_and_manifest_writing_need_neither_torch_nor_onnx() -> None:
    code = (
        "import sys\n"
        "for name in ('torch', 'onnx', 'onnxruntime', 'transformers', 'tensorrt'): sys.modules[name] = None\n"
        "import covspec.bundle, covspec.bundle.engines, covspec.bundle.platform, covspec.bundle.writing\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
