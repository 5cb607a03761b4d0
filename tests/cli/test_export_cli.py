"""`covspec export`, `covspec quantize` and `covspec run --bundle` as a user runs them: real subprocesses, real files,
a real edge server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PROMPTS, image_bytes, pil

pytest.importorskip("onnxruntime")

COVSPEC = str(Path(sys.executable).parent / "covspec")


def _covspec(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([COVSPEC, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_export_with_a_device_preset_takes_its_precision(tiny_pair, tmp_path) -> None:
    out = tmp_path / "x86"
    done = _covspec("export", tiny_pair("llava").drafter, "--out", out, "--device", "x86-cpu", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads(done.stdout)
    assert manifest["precision"] == "int8"  # the x86-cpu preset's choice
    assert manifest["device_profile"]["name"] == "x86-cpu"
    assert manifest["quantization"]["scheme"] == "int8"
    assert manifest["quantization"]["source_bundle"]["validation"]["top1_agreement"] == 1.0
    assert manifest["graphs"]["decoder"] == "decoder_model_merged_int8.onnx"
    assert (out / "manifest.json").is_file() and (out / manifest["graphs"]["decoder"]).is_file()
    again = _covspec("export", tiny_pair("llava").drafter, "--out", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_quantize_then_run_the_bundle_against_a_real_edge(tiny_bundle, edge_server, loaded_target, tmp_path) -> None:
    _, fp32 = tiny_bundle("llava")
    out = tmp_path / "q4"
    done = _covspec("quantize", fp32, "--precision", "int4", "--out", out, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["scheme"] == "int4" and report["block_size"] == 32
    assert report["bytes_after"] < report["bytes_before"]
    assert 0.0 <= report["report"]["agreement"]["top1_agreement"] <= 1.0

    image = tmp_path / "scene.png"
    image.write_bytes(image_bytes(11))
    target, server = loaded_target("llava"), edge_server("llava")
    want = target.generate(pil(image.read_bytes()), PROMPTS[1], max_new_tokens=12)
    args = ("--edge", server.url, "--image", image, "--prompt", PROMPTS[1], "--max-new-tokens", "12", "--json")
    ran = _covspec("run", "--bundle", out, "--ep", "cpu", *args)
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(ran.stdout)
    assert result["tokens"] == want  # an int4 drafter; the target's output all the same

    both = _covspec("run", "--bundle", out, "--drafter", str(tiny_bundle("llava")[0]), *args)
    assert both.returncode == 2 and "exactly one of --drafter" in both.stderr


def test_quantize_refuses_what_it_cannot_do(tiny_bundle, tmp_path) -> None:
    _, fp32 = tiny_bundle("llava")
    done = _covspec("quantize", fp32, "--precision", "int3", "--out", tmp_path / "x")
    assert done.returncode == 2 and "int3" in done.stderr
    damaged = tmp_path / "damaged"
    import shutil

    shutil.copytree(fp32, damaged)
    (damaged / "embed_tokens.onnx").write_bytes(b"not a graph")
    done = _covspec("quantize", damaged, "--precision", "int8", "--out", tmp_path / "y")
    assert done.returncode == 2 and "embed_tokens.onnx" in done.stderr and "re-export" in done.stderr


def test_tensorrt_export_without_tensorrt_says_what_is_missing(tiny_pair, tmp_path) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here; this checks the message on machines without it")
    done = _covspec("export", tiny_pair("llava").drafter, "--out", tmp_path / "trt", "--tensorrt")
    assert done.returncode == 2
    assert "engine_unavailable" in done.stderr and "tensorrt" in done.stderr.lower()
    assert not (tmp_path / "trt").exists()  # refused before any work
