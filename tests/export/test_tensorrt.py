"""TensorRT engine build: the parts that need no GPU run everywhere (typing choice, profile shapes, the clear error
without TensorRT, the orchestration over a fake ``tensorrt``); the build itself runs only where ``tensorrt`` and a CUDA
GPU exist. Platform detection and the compatibility check are ``covspec.bundle``'s (tests/bundle)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from covspec.bundle import load_bundle
from covspec.bundle import platform as trt_platform
from covspec.bundle.engines import engine_paths
from covspec.bundle.platform import PlatformInfo
from covspec.demo.samples import SCENES
from covspec.errors import BundleError, EngineUnavailableError, ExportError
from covspec.export import tensorrt as trt_build
from covspec.export.presets import get_preset
from tests.helpers import tensorrt_missing

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
ORIN = get_preset("jetson-orin")


MISSING = tensorrt_missing()


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_build_without_tensorrt_raises_engine_unavailable(tmp_path):
    with pytest.raises(EngineUnavailableError, match="TensorRT"):
        trt_build.build_bundle_engines(tmp_path, "jetson-orin", samples=SCENES)


def test_cpu_presets_refuse_tensorrt(tmp_path):
    with pytest.raises(ExportError, match="does not use TensorRT"):
        trt_build.build_bundle_engines(tmp_path, "x86-cpu", samples=SCENES)


def test_choose_typing():
    orin = ORIN.tensorrt
    assert trt_build.choose_typing("11.4.1", "fp32", orin).strongly_typed
    assert trt_build.choose_typing("11.4.1", "fp16", orin) == trt_build.Typing(True, (), "")
    assert trt_build.choose_typing("10.3.0", "fp16", orin).strongly_typed
    weak = trt_build.choose_typing("10.3.0", "fp32", orin)
    assert not weak.strongly_typed and weak.flags == ("FP16",)
    assert trt_build.choose_typing("10.3.0", "int8_qdq", orin).strongly_typed
    assert "INT8" in trt_build.choose_typing("8.5.2", "int8_qdq", orin).flags
    with pytest.raises(ExportError, match="MatMulNBits"):
        trt_build.choose_typing("10.3.0", "int4", orin)


def _decoder_inputs(layers: int = 2, mrope: bool = False):
    inputs = {
        "inputs_embeds": ["batch", "seq", 96],
        "attention_mask": ["batch", "total"],
        "position_ids": [3, "batch", "seq"] if mrope else ["batch", "seq"],
    }
    for i in range(layers):
        inputs[f"past_key_values.{i}.key"] = ["batch", 2, "past", 24]
        inputs[f"past_key_values.{i}.value"] = ["batch", 2, "past", 24]
    return inputs


MODEL = {"hidden_size": 96, "num_kv_heads": 2, "head_dim": 24}


def test_prefill_profile_has_empty_cache():
    shapes = trt_build.decoder_shapes(_decoder_inputs(), MODEL, ORIN, "prefill", opt_prompt=40)
    assert shapes["inputs_embeds"].min == (1, 1, 96) and shapes["inputs_embeds"].max == (1, ORIN.max_prompt_tokens, 96)
    assert shapes["inputs_embeds"].opt == (1, 40, 96)
    assert shapes["past_key_values.0.key"].max == (1, 2, 0, 24)
    assert shapes["attention_mask"].max == (1, ORIN.max_prompt_tokens)


def test_decode_profile_spans_the_context():
    shapes = trt_build.decoder_shapes(_decoder_inputs(mrope=True), MODEL, ORIN, "decode", opt_prompt=40)
    assert shapes["inputs_embeds"].max == (1, ORIN.max_step_tokens, 96)
    assert shapes["position_ids"].max == (3, 1, ORIN.max_step_tokens)
    assert shapes["past_key_values.1.value"].min == (1, 2, 1, 24)
    assert shapes["attention_mask"].max == (1, ORIN.max_context_tokens)  # past + step never exceeds the context
    for shape in shapes.values():
        assert all(a <= b <= c for a, b, c in zip(shape.min, shape.opt, shape.max, strict=True))


def test_unknown_decoder_input_is_refused():
    with pytest.raises(ExportError, match="cache_position"):
        trt_build.decoder_shapes({"cache_position": ["seq"]}, MODEL, ORIN, "decode", opt_prompt=8)


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(bool(MISSING), reason=f"needs {MISSING}")
def test_build_engines_for_a_tiny_bundle(tiny_fp16_bundle):
    section = trt_build.build_bundle_engines(tiny_fp16_bundle, "jetson-orin", samples=SCENES)
    assert set(section["engines"]) >= {"embed_tokens", "decoder_prefill", "decoder_decode"}
    bundle = load_bundle(tiny_fp16_bundle)
    assert bundle.manifest.tensorrt["tensorrt_version"] == section["tensorrt_version"]
    assert any(f.startswith("tensorrt/") for f in bundle.manifest.files)
    paths = engine_paths(bundle)
    assert all(p.stat().st_size > 0 for p in paths.values())


@pytest.fixture(scope="module")
def tiny_fp32_bundle(tmp_path_factory):
    from tests.quant.bundles import shared_fp32_bundle

    return shared_fp32_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def tiny_fp16_bundle(tiny_fp32_bundle, tmp_path_factory):
    from covspec.quant import quantize_bundle

    out = tmp_path_factory.mktemp("trt_build") / "fp16"
    quantize_bundle(tiny_fp32_bundle, out, "fp16")
    return out


class _FakeTensorRT:
    """Just enough of the ``tensorrt`` module's builder API to run ``build_bundle_engines`` without a GPU: it
    records what covspec asks of TensorRT and writes placeholder plans."""

    __version__ = "10.3.0"

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        fake = self

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class NetworkDefinitionCreationFlag:
            EXPLICIT_BATCH = 0
            STRONGLY_TYPED = 5

        class MemoryPoolType:
            WORKSPACE = "workspace"

        class BuilderFlag:
            FP16, INT8, GPU_FALLBACK = "FP16", "INT8", "GPU_FALLBACK"

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                self.network = network

            def parse_from_file(self, path):
                self.network["onnx"] = path
                return True

        class TimingCache:
            def serialize(self):
                return b"timing"

        class Config:
            def __init__(self):
                self.flags, self.profiles, self.builder_optimization_level = [], [], None

            def set_memory_pool_limit(self, pool, size):
                self.workspace = size

            def set_flag(self, flag):
                self.flags.append(flag)

            def create_timing_cache(self, data):
                return TimingCache()

            def set_timing_cache(self, cache, ignore_mismatch):
                pass

            def get_timing_cache(self):
                return TimingCache()

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)

        class Profile(dict):
            def set_shape(self, name, low, opt, high):
                self[name] = (tuple(low), tuple(opt), tuple(high))

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return {"flags": flags}

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append((network, config))
                return b"plan for " + network["onnx"].encode()

        self.Logger, self.NetworkDefinitionCreationFlag, self.MemoryPoolType = (
            Logger,
            NetworkDefinitionCreationFlag,
            MemoryPoolType,
        )
        self.BuilderFlag, self.OnnxParser, self.Builder = BuilderFlag, OnnxParser, Builder


@pytest.fixture
def fake_trt(monkeypatch):
    import sys

    fake = _FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt_platform, "cuda_device", lambda index=0: ("Orin", "8.7"))
    monkeypatch.setattr(trt_platform, "jetson_release", lambda: ("36.4.3", "6.2"))
    return fake


def test_build_bundle_engines_with_a_fake_tensorrt(tiny_fp16_bundle, fake_trt, tmp_path):
    """The orchestration around TensorRT on CPU: engines planned, profiles sized, typing chosen, manifest written."""
    import shutil

    bundle_dir = tmp_path / "bundle"
    shutil.copytree(tiny_fp16_bundle, bundle_dir)
    section = trt_build.build_bundle_engines(bundle_dir, "jetson-orin", samples=SCENES)
    assert set(section["engines"]) == {"vision_encoder", "embed_tokens", "decoder_prefill", "decoder_decode"}
    assert section["tensorrt_version"] == "10.3.0" and section["jetpack"] == "6.2" and section["l4t"] == "36.4.3"
    assert section["compute_capability"] == "8.7" and section["strongly_typed"] and section["builder_flags"] == []
    networks = {Path(net["onnx"]).name for net, _ in fake_trt.calls}
    assert networks == {"vision_encoder_fp16.onnx", "embed_tokens_fp16.onnx", "decoder_model_merged_fp16.onnx"}
    assert all(net["flags"] == 1 << 5 for net, _ in fake_trt.calls)  # STRONGLY_TYPED, no precision flags
    assert all(config.workspace == ORIN.tensorrt.workspace_mib << 20 for _, config in fake_trt.calls)

    vision = section["engines"]["vision_encoder"]["profile"]["pixel_values"]
    assert vision["min"] == vision["max"] == [1, 3, 32, 32]  # the processor's fixed image size
    prefill = section["engines"]["decoder_prefill"]["profile"]
    decode = section["engines"]["decoder_decode"]["profile"]
    assert prefill["past_key_values.0.key"]["max"][2] == 0 and decode["past_key_values.0.key"]["min"][2] == 1
    assert 1 < prefill["inputs_embeds"]["opt"][1] < ORIN.max_prompt_tokens  # opt = a real prompt's length

    bundle = load_bundle(bundle_dir)  # the plans and the timing cache are hashed into the manifest
    assert {"tensorrt/decoder_decode.plan", "tensorrt/timing.cache"} <= set(bundle.manifest.files)
    orin = PlatformInfo("10.3.0", "Orin", "8.7", "6.2", "36.4.3")
    assert set(engine_paths(bundle, platform=orin)) == set(section["engines"])
    with pytest.raises(BundleError, match="TensorRT 10.3.0"):
        engine_paths(bundle, platform=PlatformInfo("10.7.0", "Orin", "8.7", "6.2"))


def test_fp32_bundle_on_tensorrt_10_uses_the_fp16_flag(tiny_fp32_bundle, fake_trt, tmp_path):
    import shutil

    bundle_dir = tmp_path / "bundle"
    shutil.copytree(tiny_fp32_bundle, bundle_dir)
    section = trt_build.build_bundle_engines(bundle_dir, "jetson-orin", samples=SCENES)
    assert section["bundle_precision"] == "fp32" and not section["strongly_typed"]
    assert section["builder_flags"] == ["FP16"]
    assert all(config.flags == ["FP16"] for _, config in fake_trt.calls)


def test_refusals_name_the_operator_and_why():
    with pytest.raises(ExportError, match="MatMulInteger, a standard ONNX operator that TensorRT's ONNX parser"):
        trt_build.choose_typing("10.3.0", "int8", ORIN.tensorrt)
    with pytest.raises(ExportError, match="MatMulNBits, an ONNX Runtime contrib operator"):
        trt_build.choose_typing("10.3.0", "int4", ORIN.tensorrt)


class _ConfigTRT85:
    """TensorRT 8.5's IBuilderConfig (JetPack 5 on Xavier) has no builder_optimization_level: setting one on the
    real binding raises AttributeError, so this fake refuses unknown attributes the same way."""

    __slots__ = ("flags",)

    def __init__(self):
        self.flags = []


class _ConfigTRT10:
    def __init__(self):
        self.builder_optimization_level = 3


def test_optimization_level_is_set_only_where_tensorrt_has_it():
    old = _ConfigTRT85()
    assert trt_build.set_optimization_level(old, 5) is False
    assert not hasattr(old, "builder_optimization_level")
    new = _ConfigTRT10()
    assert trt_build.set_optimization_level(new, 5) is True and new.builder_optimization_level == 5


def test_dla_only_for_engines_with_fixed_shapes():
    import dataclasses

    dla = dataclasses.replace(ORIN.tensorrt, dla_core=0)
    fixed = trt_build.EngineSpec(
        "vision_encoder", Path("v.onnx"), trt_build.fixed_shapes({"pixel_values": (1, 3, 8, 8)}), Path("v.plan")
    )
    decoder = trt_build.EngineSpec(
        "decoder_decode",
        Path("d.onnx"),
        trt_build.decoder_shapes(_decoder_inputs(), MODEL, ORIN, "decode", 16),
        Path("d.plan"),
    )
    assert trt_build.dla_core_for(fixed, dla) == 0
    assert trt_build.dla_core_for(decoder, dla) is None  # DLA takes no dynamic dimensions
    assert trt_build.dla_core_for(fixed, ORIN.tensorrt) is None  # the preset leaves DLA off
