"""``export_bundle``: a drafter checkpoint -> a device bundle of ONNX graphs (DESIGN.md §5), validated against PyTorch.

Graphs are exported with ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript) from the wrappers in
``covspec.export.wrappers`` over each family's graphs (``Family.vision``, ``Family.positions``).
Every example input has size >= 2 on its dynamic dims so torch.export keeps them
symbolic (a size-1 example dim would be specialised); the prefill's zero-length past then works in ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from covspec.bundle import Manifest, load_bundle
from covspec.bundle.writing import update_manifest, write_manifest
from covspec.errors import ExportError
from covspec.models.families import Family, family_named

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
MIN_OPSET = 18  # torch.onnx's dynamo exporter writes opset 18 or later; converting down fails on some graphs
VISION_FILE = "vision_encoder.onnx"
EMBED_FILE = "embed_tokens.onnx"
DECODER_FILE = "decoder_model_merged.onnx"
_EXTERNAL_DATA_BYTES = 1 << 30  # graphs with more weight bytes keep them in a ``.onnx.data`` file beside
_SOURCE_FILES = ("config.json", "generation_config.json")

Progress = Callable[[str], None]


def export_bundle(
    model: str | Path,
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    validate: bool = True,
    tolerance: float | None = None,
    sample_images: Sequence[Any] | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Export the drafter at ``model`` (folder or Hub id) to the bundle folder ``out`` and return its manifest.

    With ``validate`` (the default), ONNX Runtime (CPU) is compared with PyTorch (float32) on rendered sample prompts
    (``sample_images``, PIL images, or a few synthetic ones) and a 16-token greedy continuation; the numbers go into
    the manifest, and ``ExportError`` is raised when they are past ``tolerance`` (see ``covspec.export.validate``).
    """
    import torch

    from covspec.models import load_model

    say = progress or (lambda message: logger.info("%s", message))
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is not supported: the exporter writes opset {MIN_OPSET} or later")
    out = Path(out)
    _prepare_out(out, overwrite)
    say(f"loading {model}")
    loaded = load_model(str(model), dtype="float32")
    family = family_named(loaded.family)
    if loaded.accepts_images and family.vision is None:
        why = family.no_export or "no ONNX vision graph yet"
        raise ExportError(f"{model}: family {family.name!r} cannot be exported to ONNX: {why}")
    hf = loaded.hf_model
    graphs: dict[str, str] = {}
    with torch.no_grad():
        if loaded.accepts_images:
            say("exporting vision_encoder")
            _export_vision(loaded, family, out / VISION_FILE, opset)
            graphs["vision_encoder"] = VISION_FILE
        say("exporting embed_tokens")
        _export_embed(hf, out / EMBED_FILE, opset)
        graphs["embed_tokens"] = EMBED_FILE
        say("exporting decoder_model_merged")
        _export_decoder(hf, family, out / DECODER_FILE, opset)
        graphs["decoder"] = DECODER_FILE
    _save_support_files(loaded, Path(str(model)), out)
    manifest = Manifest(
        family=family.name,
        graphs=graphs,
        source={"model": str(model), "sha256": source_hash(Path(str(model)))},
        opset=graph_opset(out, graphs),
        precision="fp32",
        io=graph_io(out, graphs),
        model=model_info(loaded, family),
        fingerprint=loaded.fingerprint.to_dict(),
        libraries=library_versions(),
        extra={"exporter": {"tool": "torch.onnx.export", "dynamo": True}},
    )
    manifest = write_manifest(out, manifest)
    if validate:
        from covspec.export.validate import check_tolerance, validate_bundle

        say("validating against PyTorch")
        report = validate_bundle(out, loaded, sample_images=sample_images, tolerance=tolerance)
        manifest = update_manifest(out, validation=report)
        check_tolerance(report)
    return manifest


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(
                f"{out}: folder exists and is not empty; pass overwrite=True (--overwrite) or a new --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _export(
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    *,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: tuple[Any, ...],
    opset: int,
) -> None:
    """One ``torch.onnx.export`` (dynamo) into ``path``; export failures become ``ExportError``."""
    import torch

    module.eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    chatter = io.StringIO()  # torch.onnx prints its steps; they go to the debug log instead
    try:
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                dynamo=True,
                external_data=weight_bytes > _EXTERNAL_DATA_BYTES,
                verbose=False,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed for {path.name}: {type(exc).__name__}: {exc}") from exc
    finally:
        logger.debug("torch.onnx.export of %s:\n%s", path.name, chatter.getvalue())
    _check_dynamic(path, input_names, dynamic_shapes)
    logger.info("exported %s (%.1f MB of weights)", path.name, weight_bytes / 1e6)


def _check_dynamic(path: Path, input_names: list[str], dynamic_shapes: tuple[Any, ...]) -> None:
    """torch.export silently fixes a dim that the traced code specialised on: refuse such a graph."""
    import onnx

    flat: list[dict[int, Any]] = []
    for spec in dynamic_shapes:
        flat.extend(spec if isinstance(spec, tuple) else [spec])
    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {v.name: v.type.tensor_type.shape.dim for v in graph.input}
    for name, spec in zip(input_names, flat, strict=True):
        for axis in spec:
            dim = shapes[name][axis]
            if not dim.dim_param:
                raise ExportError(
                    f"{path.name}: input {name} axis {axis} should be dynamic but was fixed to {dim.dim_value} "
                    "while tracing (the model code specialises on it)"
                )


def _dims(*names: str) -> dict[str, Any]:
    from torch.export import Dim

    return {name: Dim(name) for name in names}


def _export_embed(hf: Any, path: Path, opset: int) -> None:
    import torch

    from covspec.export.wrappers import EmbedTokens

    d = _dims("batch", "sequence")
    ids = torch.zeros((2, 3), dtype=torch.long)
    _export(
        EmbedTokens(hf),
        (ids,),
        path,
        input_names=["input_ids"],
        output_names=["inputs_embeds"],
        dynamic_shapes=({0: d["batch"], 1: d["sequence"]},),
        opset=opset,
    )


def decoder_io_names(num_layers: int, token_types: bool = False) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    extra = ["token_type_ids"] if token_types else []
    return ["inputs_embeds", "attention_mask", "position_ids", *extra, *past], ["logits", *present]


def _export_decoder(hf: Any, family: Family, path: Path, opset: int) -> None:
    import torch

    from covspec.export.wrappers import DecoderWithPast, DecoderWithTokenTypes, kv_layout, text_config

    layers, kv_heads, head_dim = kv_layout(hf)
    hidden = int(text_config(hf).hidden_size)
    batch, seq, past_len = 2, 3, 4
    d = _dims("batch", "sequence", "past", "total")
    embeds = torch.randn(batch, seq, hidden) * 0.02
    mask = torch.ones(batch, past_len + seq, dtype=torch.long)
    pos = torch.arange(past_len, past_len + seq).view(1, seq).expand(batch, seq).contiguous()
    pos_shape: dict[int, Any] = {0: d["batch"], 1: d["sequence"]}
    if family.positions == "mrope":
        pos = pos.view(1, batch, seq).expand(4, batch, seq).contiguous()
        pos_shape = {1: d["batch"], 2: d["sequence"]}
    past = tuple(torch.randn(batch, kv_heads, past_len, head_dim) for _ in range(2 * layers))
    inputs, outputs = decoder_io_names(layers, family.decoder_token_types)
    module: Any = DecoderWithPast(hf)
    args: tuple[Any, ...] = (embeds, mask, pos)
    shapes: tuple[Any, ...] = ({0: d["batch"], 1: d["sequence"]}, {0: d["batch"], 1: d["total"]}, pos_shape)
    if family.decoder_token_types:  # an image block among the new tokens, so the bidirectional path is traced
        module = DecoderWithTokenTypes(hf)
        types = torch.zeros(batch, past_len + seq, dtype=torch.long)
        types[:, past_len : past_len + 2] = 1
        args += (types,)
        shapes += ({0: d["batch"], 1: d["total"]},)
    _export(
        module,
        (*args, past),
        path,
        input_names=inputs,
        output_names=outputs,
        dynamic_shapes=(*shapes, tuple({0: d["batch"], 2: d["past"]} for _ in past)),
        opset=opset,
    )


def vision_example(loaded: Any, family: Family) -> dict[str, Any]:
    """The vision graph's export inputs from two synthetic sample prompts (size >= 2 on every dynamic axis)."""
    from covspec.export.samples import sample_images
    from covspec.models.families.base import stack_examples

    graph = family.vision
    assert graph is not None
    batches = [loaded.render(image, "Describe the image.") for image in sample_images(2)]
    if graph.example is not None:
        return graph.example(batches)
    return stack_examples(graph.inputs, batches)


def _export_vision(loaded: Any, family: Family, path: Path, opset: int) -> None:
    from covspec.export.wrappers import VisionEncoder

    graph = family.vision
    assert graph is not None
    example = vision_example(loaded, family)
    names = list(graph.inputs)
    dims = _dims(*sorted({name for axes in graph.dynamic_axes for name in axes.values()}))
    shapes = tuple({axis: dims[name] for axis, name in axes.items()} for axes in graph.dynamic_axes)
    _export(
        VisionEncoder(loaded.hf_model, graph),
        tuple(example[n] for n in names),
        path,
        input_names=names,
        output_names=["image_features"],
        dynamic_shapes=(shapes,),  # forward(*inputs): torch.export sees one tuple argument
        opset=opset,
    )


def _save_support_files(loaded: Any, source: Path, out: Path) -> None:
    """Tokenizer / processor files, config.json and generation_config.json of the source."""
    if getattr(loaded, "processor", None) is not None:
        loaded.processor.save_pretrained(out)
    else:
        loaded.tokenizer.save_pretrained(out)
    for name in _SOURCE_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
    if not (out / "config.json").is_file():
        loaded.hf_model.config.save_pretrained(out)
    if not (out / "generation_config.json").is_file() and loaded.source_generation_config is not None:
        loaded.source_generation_config.save_pretrained(out)


def source_hash(source: Path) -> str | None:
    """sha256 over the names and bytes of a local checkpoint's weight files (None for a Hub id)."""
    if not source.is_dir():
        return None
    digest = hashlib.sha256()
    weights = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt"))
    for path in weights:
        digest.update(path.relative_to(source).as_posix().encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def graph_io(root: Path, graphs: dict[str, str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Inputs and outputs of each graph as {"name", "dtype", "shape"} (symbolic dims as strings)."""
    import onnx

    def describe(values: Any) -> list[dict[str, Any]]:
        rows = []
        for value in values:
            tensor = value.type.tensor_type
            shape = [
                d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?")
                for d in tensor.shape.dim
            ]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
            rows.append({"name": value.name, "dtype": dtype, "shape": shape})
        return rows

    io = {}
    for role, name in graphs.items():
        graph = onnx.load(str(root / name), load_external_data=False).graph
        io[role] = {"inputs": describe(graph.input), "outputs": describe(graph.output)}
    return io


def graph_opset(root: Path, graphs: dict[str, str]) -> int:
    """The default-domain opset the graphs were written with (torch.onnx may raise a lower request to its minimum)."""
    import onnx

    found = set()
    for name in graphs.values():
        model = onnx.load(str(root / name), load_external_data=False)
        found.update(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if len(found) != 1:
        raise ExportError(f"graphs disagree on their opset ({sorted(found)}); re-export")
    return found.pop()


def model_info(loaded: Any, family: Family) -> dict[str, Any]:
    from covspec.export.wrappers import kv_layout, text_config

    hf = loaded.hf_model
    layers, kv_heads, head_dim = kv_layout(hf)
    info: dict[str, Any] = {
        "num_layers": layers,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_size": int(text_config(hf).hidden_size),
        "vocab_size": int(loaded.vocab_size),
        "image_token_id": loaded.image_token_id,
        "positions": family.positions,
        "eos_token_ids": list(loaded.eos_token_ids),
        "pad_token_id": loaded.pad_token_id,
    }
    if family.positions == "mrope":
        info["video_token_id"] = int(hf.config.video_token_id)
        info["spatial_merge_size"] = int(hf.config.vision_config.spatial_merge_size)
        info["position_ids_layout"] = "[4, batch, sequence]: row 0 text positions, rows 1-3 M-RoPE (t, h, w)"
    else:
        info["position_ids_layout"] = "[batch, sequence]"
    return info


def library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in ("torch", "transformers", "onnx", "onnxruntime", "onnxscript"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def verify_loads(bundle_dir: str | Path) -> list[str]:
    """Open every ``.onnx`` file of a bundle in ONNX Runtime (CPU); returns the files opened."""
    import onnxruntime as ort

    bundle = load_bundle(bundle_dir)
    opened = []
    for path in sorted(bundle.root.rglob("*.onnx")):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        opened.append(path.relative_to(bundle.root).as_posix())
    return opened


__all__ = [
    "DECODER_FILE",
    "DEFAULT_OPSET",
    "EMBED_FILE",
    "VISION_FILE",
    "decoder_io_names",
    "export_bundle",
    "graph_io",
    "graph_opset",
    "library_versions",
    "model_info",
    "source_hash",
    "verify_loads",
]
