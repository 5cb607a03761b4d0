"""TensorRT engines from a bundle's ONNX graphs, built on the device that will run them.

Engines are not portable: a plan file runs only under the TensorRT version and on the GPU architecture it was built
with. So ``build_bundle_engines`` records both (with the JetPack / Jetson Linux release on a Jetson) in the manifest's
``"tensorrt"`` section, and ``check_compatible`` refuses plans from another version or GPU before deserializing them.

Four engines under ``BUNDLE/tensorrt/``: ``vision_encoder.plan`` (VLM drafters), ``embed_tokens.plan``, and the
decoder graph twice with its own optimization profile each: ``decoder_prefill.plan`` (a whole prompt, empty KV
cache) and ``decoder_decode.plan`` (a few tokens over a KV cache up to the profile's context length). Two engines
rather than two profiles of one: each gets tactics tuned for its shapes and the runner never switches profiles.

Precision: TensorRT >= 11 builds only strongly typed networks, so precision comes from the ONNX (an ``fp16`` or
``int8_qdq`` bundle from ``covspec quantize``). TensorRT 10 (JetPack 6 and 7) also builds strongly typed when the
bundle's precision is baked in, and falls back to the builder flags (FP16, INT8 for QDQ graphs) for an fp32 bundle.

``tensorrt`` is imported lazily: this module imports on machines without it, and says what to install when asked to
build.
"""

from __future__ import annotations

import datetime
import logging
import re
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from covspec.errors import BundleError, EngineUnavailableError, ExportError
from covspec.export.profiles import DeviceProfile, TensorRTSettings, get_profile

log = logging.getLogger(__name__)

TRT_DIR = "tensorrt"
TIMING_CACHE = "timing.cache"
ENGINE_FILES = {
    "vision_encoder": "vision_encoder.plan",
    "embed_tokens": "embed_tokens.plan",
    "decoder_prefill": "decoder_prefill.plan",
    "decoder_decode": "decoder_decode.plan",
}
NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")
# Jetson Linux (L4T) release -> JetPack, longest prefix first; a release missing here is recorded as L4T only.
L4T_TO_JETPACK = (
    ("35.1", "5.0.2"),
    ("35.2", "5.1"),
    ("35.3", "5.1.1"),
    ("35.4", "5.1.2"),
    ("35.5", "5.1.3"),
    ("35.6", "5.1.4"),
    ("36.2", "6.0 DP"),
    ("36.3", "6.0"),
    ("36.4.0", "6.1"),
    ("36.4.3", "6.2"),
    ("36.4.4", "6.2.1"),
    ("36.4", "6.1+"),
    ("38.2", "7.0"),
    ("38.4", "7.1"),
)


# --------------------------------------------------------------------------------------------- what is installed


def install_hint(*, jetson: bool | None = None) -> str:
    """How to get TensorRT's Python bindings on this kind of machine."""
    jetson = is_jetson() if jetson is None else jetson
    if jetson:
        return (
            "on a Jetson, TensorRT comes with JetPack: `sudo apt install python3-libnvinfer python3-libnvinfer-dev` "
            "(JetPack 6 / 7), then use the system Python 3 or a venv made with --system-site-packages; the PyPI "
            "tensorrt wheels do not install on Tegra. See docs/jetson.md"
        )
    return (
        "on an x86-64 (or SBSA arm64) GPU server: `pip install tensorrt-cu12` (CUDA 12 drivers) or "
        "`pip install tensorrt-cu13` (CUDA 13), plus a CUDA build of torch for the device buffers; see docs/jetson.md"
    )


def is_jetson() -> bool:
    return NV_TEGRA_RELEASE.exists()


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or EngineUnavailableError saying how to install it."""
    try:
        import tensorrt  # type: ignore[import-not-found]
    except ImportError as exc:
        raise EngineUnavailableError(f"TensorRT's Python module is not installed ({exc}); {install_hint()}") from exc
    return tensorrt


def trt_major(version: str) -> int:
    return int(version.split(".")[0])


def parse_l4t_release(text: str) -> str | None:
    """``# R36 (release), REVISION: 4.3, GCID: ...`` (``/etc/nv_tegra_release``) -> ``"36.4.3"``."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def jetpack_for_l4t(l4t: str | None) -> str | None:
    """The JetPack release that ships Jetson Linux ``l4t`` (best known; None when not in the table)."""
    if not l4t:
        return None
    for prefix, jetpack in L4T_TO_JETPACK:
        if l4t == prefix or l4t.startswith(prefix + "."):
            return jetpack
    return None


def _dpkg_version(package: str) -> str | None:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def jetson_release() -> tuple[str | None, str | None]:
    """(Jetson Linux release, JetPack release) of this machine; (None, None) off a Jetson."""
    l4t = parse_l4t_release(NV_TEGRA_RELEASE.read_text()) if NV_TEGRA_RELEASE.exists() else None
    if l4t is None:
        core = _dpkg_version("nvidia-l4t-core")  # e.g. "36.4.3-20250107174145"
        l4t = core.split("-")[0] if core else None
    jetpack_pkg = _dpkg_version("nvidia-jetpack")  # e.g. "6.2+b77"
    jetpack = jetpack_pkg.split("+")[0].split("-")[0] if jetpack_pkg else jetpack_for_l4t(l4t)
    return l4t, jetpack


def cuda_device(index: int = 0) -> tuple[str, str]:
    """(GPU / SoC name, compute capability "8.7") of CUDA device ``index``, through torch or cuda-python."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(index)
            return torch.cuda.get_device_name(index), f"{major}.{minor}"
    except ImportError:
        pass
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]

        err, props = cudart.cudaGetDeviceProperties(index)
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return name.rstrip("\x00"), f"{props.major}.{props.minor}"
    except ImportError:
        pass
    raise EngineUnavailableError(
        "no CUDA GPU is visible (neither a CUDA build of torch nor cuda-python found one); TensorRT engines need "
        "an NVIDIA GPU with its driver. " + install_hint()
    )


@dataclass(frozen=True)
class PlatformInfo:
    """What a TensorRT plan is tied to."""

    tensorrt_version: str
    device_name: str
    compute_capability: str
    jetpack: str | None = None
    l4t: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_platform(trt: Any | None = None, device: int = 0) -> PlatformInfo:
    trt = trt if trt is not None else import_tensorrt()
    name, capability = cuda_device(device)
    l4t, jetpack = jetson_release()
    return PlatformInfo(trt.__version__, name, capability, jetpack, l4t)


def check_compatible(recorded: dict[str, Any], platform: PlatformInfo) -> None:
    """Refuse plans built under another TensorRT version or for another GPU (BundleError saying what differs)."""
    problems = []
    if recorded.get("tensorrt_version") != platform.tensorrt_version:
        problems.append(f"TensorRT {recorded.get('tensorrt_version')} (this machine: {platform.tensorrt_version})")
    if recorded.get("compute_capability") != platform.compute_capability:
        problems.append(
            f"compute capability {recorded.get('compute_capability')} (this machine: {platform.compute_capability})"
        )
    if recorded.get("device_name") != platform.device_name:
        problems.append(f"GPU {recorded.get('device_name')!r} (this machine: {platform.device_name!r})")
    if recorded.get("jetpack") and platform.jetpack and recorded["jetpack"] != platform.jetpack:
        problems.append(f"JetPack {recorded['jetpack']} (this machine: {platform.jetpack})")
    if problems:
        raise BundleError(
            "the bundle's TensorRT engines were built for " + "; ".join(problems) + ". TensorRT plans run only "
            "under the TensorRT version and on the GPU they were built with: rebuild them here with "
            "`covspec export --device PROFILE --tensorrt` (or covspec.export.tensorrt.build_bundle_engines), or run "
            "the bundle's ONNX graphs with the onnxruntime engine"
        )


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
    inputs: dict[str, list[int | str]], model: dict[str, Any], profile: DeviceProfile, phase: str, opt_prompt: int
) -> dict[str, ShapeRange]:
    """Profile shapes for the merged decoder in ``phase`` ("prefill": a prompt of 1..max_prompt_tokens tokens over
    an empty cache; "decode": 1..max_step_tokens tokens over a cache of 1..max_context - max_step positions).
    ``model`` is the manifest's ``model`` section (hidden size, KV heads, head dim); batch is 1."""
    if phase == "prefill":
        seq = (1, min(opt_prompt, profile.max_prompt_tokens), profile.max_prompt_tokens)
        past = (0, 0, 0)
    elif phase == "decode":
        seq = (1, 1, profile.max_step_tokens)
        past_max = profile.max_context_tokens - profile.max_step_tokens
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


def embed_shapes(inputs: dict[str, list[int | str]], profile: DeviceProfile, opt_prompt: int) -> dict[str, ShapeRange]:
    """``input_ids`` [1, 1..max_prompt_tokens]."""
    seq = (1, min(opt_prompt, profile.max_prompt_tokens), profile.max_prompt_tokens)
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
        raise ExportError(
            f"a {bundle_precision} bundle holds ONNX Runtime contrib ops (MatMulInteger / MatMulNBits) that TensorRT "
            "does not build; quantize with --precision fp16, or int8 with calibration (int8_qdq), for TensorRT"
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
    config.builder_optimization_level = settings.builder_optimization_level
    for flag in typing.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if settings.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
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
        "build_s": round(time.perf_counter() - started, 2),
        "bytes": spec.out_path.stat().st_size,
        **spec.info,
    }


def _reference_feeds(bundle_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Feeds the ONNX Runtime engine gives each graph for one synthetic scene: the vision encoder's real input
    shapes and a realistic prompt length for the profiles' optimum."""
    from covspec.quant.calibration import record_feeds, synthetic_samples
    from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine

    engine = OnnxDrafterEngine(bundle_dir)
    return record_feeds(engine, synthetic_samples(1), decode_steps=1, max_per_role=4)


def plan_engines(bundle: Any, profile: DeviceProfile, feeds: dict[str, list[dict[str, Any]]]) -> list[EngineSpec]:
    """The engines a bundle needs on ``profile``, with their profile shapes."""
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
            embed_shapes(graph_inputs(embed), profile, opt_prompt),
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
                decoder_shapes(inputs, manifest.model, profile, phase, opt_prompt),
                out_dir / ENGINE_FILES[name],
                {"phase": phase},
            )
        )
    return specs


def build_bundle_engines(
    bundle_dir: Path | str, device: str | DeviceProfile = "jetson-orin", *, progress: Any = None
) -> dict[str, Any]:
    """Build the TensorRT engines of the bundle at ``bundle_dir`` for ``device`` (a profile name or
    ``DeviceProfile``) on this machine's GPU, store them under ``BUNDLE/tensorrt/`` with a timing cache, record them
    in the manifest's ``"tensorrt"`` section and return that section."""
    from covspec.export.bundle import load_bundle, update_manifest

    profile = get_profile(device)
    if profile.tensorrt is None:
        raise ExportError(f"device profile {profile.name} does not use TensorRT; pick jetson-orin or jetson-xavier")
    trt = import_tensorrt()
    platform = detect_platform(trt)
    bundle = load_bundle(bundle_dir, verify=True)
    precision = bundle.manifest.precision or "fp32"
    typing = choose_typing(platform.tensorrt_version, precision, profile.tensorrt)
    if typing.note:
        log.info("TensorRT typing: %s", typing.note)
    specs = plan_engines(bundle, profile, _reference_feeds(Path(bundle_dir)))
    cache = Path(bundle.root) / TRT_DIR / TIMING_CACHE
    task = progress.add_task("tensorrt", total=len(specs)) if progress is not None else None
    engines = {}
    for spec in specs:
        log.info("building TensorRT engine %s from %s", spec.name, spec.onnx_path.name)
        engines[spec.name] = build_engine(trt, spec, typing, profile.tensorrt, cache)
        if task is not None:
            progress.update(task, advance=1)
    section = {
        **platform.to_dict(),
        "device_profile": profile.name,
        "bundle_precision": precision,
        "strongly_typed": typing.strongly_typed,
        "builder_flags": list(typing.flags),
        "settings": asdict(profile.tensorrt),
        "max_prompt_tokens": profile.max_prompt_tokens,
        "max_context_tokens": profile.max_context_tokens,
        "max_step_tokens": profile.max_step_tokens,
        "timing_cache": f"{TRT_DIR}/{TIMING_CACHE}" if profile.tensorrt.timing_cache else None,
        "engines": engines,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    update_manifest(bundle_dir, tensorrt=section)
    return section


def engine_paths(bundle: Any, *, platform: PlatformInfo | None = None) -> dict[str, Path]:
    """Name -> plan file of a bundle's engines, after checking they fit this machine (BundleError otherwise)."""
    section = bundle.manifest.tensorrt
    if not section:
        raise BundleError(
            f"bundle {bundle.root} has no TensorRT engines; build them with `covspec export --device PROFILE "
            "--tensorrt` on the device"
        )
    check_compatible(section, platform if platform is not None else detect_platform())
    paths = {}
    for name, info in section["engines"].items():
        path = Path(bundle.root) / info["file"]
        if not path.exists():
            raise BundleError(f"bundle {bundle.root} lacks its TensorRT engine {info['file']}")
        paths[name] = path
    return paths


__all__ = [
    "ENGINE_FILES",
    "TRT_DIR",
    "EngineSpec",
    "PlatformInfo",
    "ShapeRange",
    "Typing",
    "build_bundle_engines",
    "build_engine",
    "check_compatible",
    "choose_typing",
    "decoder_shapes",
    "detect_platform",
    "embed_shapes",
    "engine_paths",
    "graph_inputs",
    "import_tensorrt",
    "install_hint",
    "jetpack_for_l4t",
    "jetson_release",
    "parse_l4t_release",
    "plan_engines",
]
