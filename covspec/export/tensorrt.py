"""TensorRT engines from a bundle's ONNX graphs, built on the device that will run them.

Engines are not portable: a plan file runs only under the TensorRT version and on the GPU architecture it was built
with. So ``build_bundle_engines`` records both (with the JetPack / Jetson Linux release on a Jetson) in the manifest's
``"tensorrt"`` section, and ``covspec.bundle.engines.check_compatible`` refuses plans from another version or GPU
before deserializing them (the platform detection and the plans' layout are ``covspec.bundle``'s: the engine reads
them too).

Four engines under ``BUNDLE/tensorrt/``: ``vision_encoder.plan`` (VLM drafters), ``embed_tokens.plan``, and the
decoder graph twice with its own optimization profile each: ``decoder_prefill.plan`` (a whole prompt, empty KV
cache) and ``decoder_decode.plan`` (a few tokens over a KV cache up to the profile's context length). Two engines
rather than two profiles of one: each gets tactics tuned for its shapes and the runner never switches profiles.

Precision: TensorRT >= 11 builds only strongly typed networks, so precision comes from the ONNX (an ``fp16`` or
``int8_qdq`` bundle from ``covspec quantize``). TensorRT 10 (JetPack 6 and 7) also builds strongly typed when the
bundle's precision is baked in, and falls back to the builder flags (FP16, INT8 for QDQ graphs) for an fp32 bundle.
``int8`` (dynamic: MatMulInteger, a standard ONNX operator TensorRT's parser does not support) and ``int4``
(MatMulNBits, an ONNX Runtime contrib operator) bundles are refused.

DLA: only engines with fixed shapes (the vision encoder) may go to a DLA core; the decoder and embedding engines have
dynamic token and cache lengths, which DLA cannot run, so they always build for the GPU.

Profile shapes are sized on one reference sample (its image's pixel shape, its prompt's length), drawn from the
``SampleSource`` the caller passes: export knows no dataset of its own.

``tensorrt`` is imported lazily: this module imports on machines without it, and says what to install when asked to
build.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from covspec.bundle import load_bundle
from covspec.bundle.engines import ENGINE_FILES, TIMING_CACHE, TRT_DIR
from covspec.bundle.platform import detect_platform, import_tensorrt, trt_major
from covspec.bundle.writing import update_manifest
from covspec.errors import ExportError
from covspec.export.presets import DevicePreset, TensorRTSettings, get_preset
from covspec.quant.calibration import SampleSource, record_feeds

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ shapes, typing


@dataclass(frozen=True)
class ShapeRange:
    """One input's optimization-profile shapes."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def graph_inputs(onnx_path: Path | str) -> dict[str, list[int | str]]:
    """Input name -> dims (an int where fixed, the symbolic name or ``"?"`` where dynamic), weights not loaded."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    out: dict[str, list[int | str]] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        out[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    return out


def _fixed(dim: int | str, fallback: int) -> int:
    return dim if isinstance(dim, int) and dim > 0 else fallback


def decoder_shapes(
    inputs: dict[str, list[int | str]], model: dict[str, Any], preset: DevicePreset, phase: str, opt_prompt: int
) -> dict[str, ShapeRange]:
    """Profile shapes for the merged decoder in ``phase`` ("prefill": a prompt of 1..max_prompt_tokens tokens over
    an empty cache; "decode": 1..max_step_tokens tokens over a cache of 1..max_context - max_step positions).
    ``model`` is the manifest's ``model`` section (hidden size, KV heads, head dim); batch is 1."""
    if phase == "prefill":
        seq = (1, min(opt_prompt, preset.max_prompt_tokens), preset.max_prompt_tokens)
        past = (0, 0, 0)
    elif phase == "decode":
        seq = (1, 1, preset.max_step_tokens)
        past_max = preset.max_context_tokens - preset.max_step_tokens
        past = (1, min(max(opt_prompt, 1) + 64, past_max), past_max)
    else:
        raise ValueError(f"unknown decoder phase {phase!r}")
    total = tuple(s + p for s, p in zip(seq, past, strict=True))
    shapes = {}
    for name, dims in inputs.items():
        if name == "inputs_embeds":
            hidden = _fixed(dims[2], model["hidden_size"])
            ranges = [(1, s, hidden) for s in seq]
        elif name == "attention_mask":
            ranges = [(1, t) for t in total]
        elif name == "position_ids":
            ranges = [(3, 1, s) if len(dims) == 3 else (1, s) for s in seq]
        elif name.startswith("past_key_values."):
            heads, head_dim = _fixed(dims[1], model["num_kv_heads"]), _fixed(dims[3], model["head_dim"])
            ranges = [(1, heads, p, head_dim) for p in past]
        else:
            raise ExportError(f"the decoder has an input covspec does not know how to profile: {name} {dims}")
        shapes[name] = ShapeRange(*ranges)
    return shapes


def embed_shapes(inputs: dict[str, list[int | str]], preset: DevicePreset, opt_prompt: int) -> dict[str, ShapeRange]:
    """``input_ids`` [1, 1..max_prompt_tokens]."""
    seq = (1, min(opt_prompt, preset.max_prompt_tokens), preset.max_prompt_tokens)
    return {name: ShapeRange(*[(1, s) for s in seq]) for name in inputs}


def fixed_shapes(observed: dict[str, tuple[int, ...]]) -> dict[str, ShapeRange]:
    """min = opt = max = the shapes the processor produced for a reference image: LLaVA-style processors resize every
    image to one size, so the vision encoder sees one shape (other shapes fall back to ONNX Runtime at run time)."""
    return {name: ShapeRange(tuple(shape), tuple(shape), tuple(shape)) for name, shape in observed.items()}


@dataclass(frozen=True)
class Typing:
    """How precision reaches the engine: a strongly typed network (precision from the ONNX) or builder flags."""

    strongly_typed: bool
    flags: tuple[str, ...] = ()  # BuilderFlag names, weak typing only
    note: str = ""


def choose_typing(trt_version: str, bundle_precision: str, settings: TensorRTSettings) -> Typing:
    major = trt_major(trt_version)
    baked = bundle_precision in ("fp16", "int8_qdq")
    if bundle_precision in ("int8", "int4"):
        op, why = (
            ("MatMulInteger", "a standard ONNX operator that TensorRT's ONNX parser does not support")
            if bundle_precision == "int8"
            else ("MatMulNBits", "an ONNX Runtime contrib operator (com.microsoft), which TensorRT does not parse")
        )
        raise ExportError(
            f"a {bundle_precision} bundle's matmuls are {op}, {why}; quantize with --precision fp16, or int8 with "
            "calibration (int8_qdq: QuantizeLinear/DequantizeLinear pairs), for TensorRT"
        )
    if major >= 11:
        note = "" if baked else "fp32 bundle on TensorRT >= 11: the engine computes in fp32 (quantize to fp16 first)"
        return Typing(True, (), note)
    if major >= 10 and baked:
        return Typing(True, (), "precision from the ONNX graph")
    flags = []
    if settings.fp16:
        flags.append("FP16")
    if bundle_precision == "int8_qdq":  # explicit quantization: the QDQ pairs set the scales, no calibrator
        flags.append("INT8")
    return Typing(False, tuple(flags), f"TensorRT {major}: builder precision flags")


# --------------------------------------------------------------------------------------------------------- build


@dataclass
class EngineSpec:
    """One engine to build: its ONNX graph, profile shapes and output file."""

    name: str
    onnx_path: Path
    shapes: dict[str, ShapeRange]
    out_path: Path
    info: dict[str, Any] = field(default_factory=dict)


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    data = path.read_bytes() if path is not None and path.exists() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def set_optimization_level(config: Any, level: int) -> bool:
    """Set the builder optimization level where this TensorRT has it (8.6 and later); TensorRT 8.5, JetPack 5's on
    Xavier, has no such attribute and builds at its default. Returns whether it was set."""
    if not hasattr(config, "builder_optimization_level"):
        log.info("TensorRT has no builder_optimization_level (TensorRT < 8.6); building at its default")
        return False
    config.builder_optimization_level = level
    return True


def dla_core_for(spec: EngineSpec, settings: TensorRTSettings) -> int | None:
    """The DLA core ``spec`` may be built for, or None (GPU). DLA takes no dynamic dimensions (a profile's min, opt
    and max must be equal), so the decoder and embedding engines, whose token and cache lengths vary, always build
    for the GPU; only an engine with fixed shapes (the vision encoder) can use ``settings.dla_core``."""
    if settings.dla_core is None:
        return None
    if any(shape.min != shape.max for shape in spec.shapes.values()):
        log.warning("%s has dynamic shapes, which DLA cannot run: building it for the GPU", spec.name)
        return None
    return settings.dla_core


def build_engine(
    trt: Any, spec: EngineSpec, typing: Typing, settings: TensorRTSettings, timing_cache: Path | None
) -> dict:
    """Build one serialized engine; returns what the manifest records about it."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if typing.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if trt_major(trt.__version__) < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(spec.onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {spec.onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    set_optimization_level(config, settings.builder_optimization_level)
    for flag in typing.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    dla_core = dla_core_for(spec, settings)
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if settings.timing_cache:
        _load_timing_cache(config, timing_cache)
    profile = builder.create_optimization_profile()
    for name, shape in spec.shapes.items():
        profile.set_shape(name, shape.min, shape.opt, shape.max)
    config.add_optimization_profile(profile)
    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT failed to build {spec.name} from {spec.onnx_path.name} (see its log above)")
    spec.out_path.parent.mkdir(parents=True, exist_ok=True)
    spec.out_path.write_bytes(bytes(plan))
    if settings.timing_cache and timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {
        "file": f"{TRT_DIR}/{spec.out_path.name}",
        "onnx": spec.onnx_path.name,
        "profile": {name: shape.to_dict() for name, shape in spec.shapes.items()},
        "device": f"dla{dla_core}" if dla_core is not None else "gpu",
        "build_s": round(time.perf_counter() - started, 2),
        "bytes": spec.out_path.stat().st_size,
        **spec.info,
    }


def _reference_feeds(bundle_dir: Path, samples: SampleSource) -> dict[str, list[dict[str, Any]]]:
    """Feeds the ONNX Runtime engine gives each graph for one "train" sample of ``samples``: the vision encoder's
    real input shapes and a realistic prompt length for the profiles' optimum."""
    from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

    engine = OnnxDrafterEngine(bundle_dir)
    return record_feeds(engine, samples("train", 1), decode_steps=1, max_per_role=4)


def plan_engines(bundle: Any, preset: DevicePreset, feeds: dict[str, list[dict[str, Any]]]) -> list[EngineSpec]:
    """The engines a bundle needs on ``preset``, with their optimization-profile shapes."""
    manifest = bundle.manifest
    out_dir = Path(bundle.root) / TRT_DIR
    decoder_feeds = feeds.get("decoder") or []
    opt_prompt = int(decoder_feeds[0]["inputs_embeds"].shape[1]) if decoder_feeds else 64
    specs = []
    if bundle.has_graph("vision_encoder"):
        observed = feeds.get("vision_encoder") or []
        if not observed:
            raise ExportError("no vision encoder input was recorded to size its TensorRT profile")
        shapes = {name: tuple(value.shape) for name, value in observed[0].items()}
        specs.append(
            EngineSpec(
                "vision_encoder",
                bundle.graph_path("vision_encoder"),
                fixed_shapes(shapes),
                out_dir / ENGINE_FILES["vision_encoder"],
            )
        )
    embed = bundle.graph_path("embed_tokens")
    specs.append(
        EngineSpec(
            "embed_tokens",
            embed,
            embed_shapes(graph_inputs(embed), preset, opt_prompt),
            out_dir / ENGINE_FILES["embed_tokens"],
        )
    )
    decoder = bundle.graph_path("decoder")
    inputs = graph_inputs(decoder)
    for phase in ("prefill", "decode"):
        name = f"decoder_{phase}"
        specs.append(
            EngineSpec(
                name,
                decoder,
                decoder_shapes(inputs, manifest.model, preset, phase, opt_prompt),
                out_dir / ENGINE_FILES[name],
                {"phase": phase},
            )
        )
    return specs


def tensorrt_settings(preset: DevicePreset) -> TensorRTSettings:
    """``preset``'s TensorRT build settings; ``ExportError`` for a preset whose devices have no TensorRT."""
    if preset.tensorrt is None:
        raise ExportError(f"device preset {preset.name} does not use TensorRT; pick jetson-orin or jetson-xavier")
    return preset.tensorrt


def build_bundle_engines(
    bundle_dir: Path | str,
    device: str | DevicePreset = "jetson-orin",
    *,
    samples: SampleSource,
    progress: Any = None,
) -> dict[str, Any]:
    """Build the TensorRT engines of the bundle at ``bundle_dir`` for ``device`` (a preset name or
    ``DevicePreset``) on this machine's GPU, store them under ``BUNDLE/tensorrt/`` with a timing cache, record them
    in the manifest's ``"tensorrt"`` section and return that section.

    ``samples`` gives the reference sample that sizes the profiles (its image shape, its prompt length): pass images
    like the ones the drafter will see; ``covspec export`` passes the demo's scenes (``covspec.demo.samples.SCENES``).
    """
    preset = get_preset(device)
    settings = tensorrt_settings(preset)
    trt = import_tensorrt()
    platform = detect_platform(trt)
    bundle = load_bundle(bundle_dir, verify=True)
    precision = bundle.manifest.precision or "fp32"
    typing = choose_typing(platform.tensorrt_version, precision, settings)
    if typing.note:
        log.info("TensorRT typing: %s", typing.note)
    specs = plan_engines(bundle, preset, _reference_feeds(Path(bundle_dir), samples))
    cache = Path(bundle.root) / TRT_DIR / TIMING_CACHE
    task = progress.add_task("tensorrt", total=len(specs)) if progress is not None else None
    engines = {}
    for spec in specs:
        log.info("building TensorRT engine %s from %s", spec.name, spec.onnx_path.name)
        engines[spec.name] = build_engine(trt, spec, typing, settings, cache)
        if task is not None:
            progress.update(task, advance=1)
    section = {
        **platform.to_dict(),
        "device_profile": preset.name,  # the key keeps its old name: existing bundles still load
        "bundle_precision": precision,
        "strongly_typed": typing.strongly_typed,
        "builder_flags": list(typing.flags),
        "settings": asdict(settings),
        "max_prompt_tokens": preset.max_prompt_tokens,
        "max_context_tokens": preset.max_context_tokens,
        "max_step_tokens": preset.max_step_tokens,
        "timing_cache": f"{TRT_DIR}/{TIMING_CACHE}" if settings.timing_cache else None,
        "engines": engines,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    update_manifest(bundle_dir, tensorrt=section)
    return section


__all__ = [
    "EngineSpec",
    "ShapeRange",
    "Typing",
    "build_bundle_engines",
    "build_engine",
    "choose_typing",
    "dla_core_for",
    "decoder_shapes",
    "embed_shapes",
    "fixed_shapes",
    "graph_inputs",
    "plan_engines",
    "set_optimization_level",
    "tensorrt_settings",
]
