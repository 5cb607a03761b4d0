"""The ONNX Runtime drafter engine: a device bundle (``covspec export``) run without torch.

Prompts are rendered exactly as the torch adapters render them (the processor's chat template, then the processor on
the text and the image, as numpy). The engine encodes the image with ``vision_encoder.onnx``, embeds the ids with
``embed_tokens.onnx``, writes the image features over the image placeholder embeddings, and runs
``decoder_model_merged.onnx`` with an explicit KV cache that ``crop`` slices. The vision graph's feeds are the
family's (``covspec.models.families``); M-RoPE positions come from ``covspec.models.mrope`` in numpy.

Execution providers: ``cpu``; ``cuda`` (I/O binding keeps the KV cache on the GPU between steps); ``tensorrt``
(TensorRT, then CUDA, then CPU for what TensorRT cannot take; engine cache under the bundle's ``tensorrt/``);
``auto`` (the best this onnxruntime build has).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from covspec.bundle import Bundle, load_bundle
from covspec.cpus import describe
from covspec.errors import EngineUnavailableError
from covspec.models import mrope
from covspec.models.base import ModelFingerprint, StageClock, TokenSequence, check_token_ids
from covspec.models.families import TEXT_LM, family_named
from covspec.models.loading import load_processor
from covspec.models.prompts import text_inputs, vlm_inputs
from covspec.models.vocabulary import PROBE_PROMPT, Vocabulary, vocabulary_of
from covspec.reduce import TokenReduction

logger = logging.getLogger(__name__)

EP_CHOICES = ("cpu", "cuda", "tensorrt", "auto")
_PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_INSTALL_HINT = (
    "install onnxruntime-gpu (pip install onnxruntime-gpu, in place of onnxruntime) on a CUDA machine, "
    "or the onnxruntime-gpu wheel built for JetPack on a Jetson"
)

FeedRecorder = Callable[[str, dict[str, np.ndarray]], None]


def providers_for(ep: str, bundle: Bundle) -> tuple[str, list[Any]]:
    """(resolved ep, the provider list for ``InferenceSession``); ``EngineUnavailableError`` when missing."""
    import onnxruntime as ort

    if ep not in EP_CHOICES:
        raise EngineUnavailableError(f"unknown execution provider {ep!r}; choose one of {', '.join(EP_CHOICES)}")
    available = set(ort.get_available_providers())
    if ep == "auto":
        if _PROVIDER["tensorrt"] in available and bundle.manifest.tensorrt:
            ep = "tensorrt"
        elif _PROVIDER["cuda"] in available:
            ep = "cuda"
        else:
            ep = "cpu"
    needed = [_PROVIDER[ep]] + ([_PROVIDER["cuda"]] if ep == "tensorrt" else [])
    missing = [p for p in needed if p not in available]
    if missing:
        raise EngineUnavailableError(
            f"execution provider {ep!r} needs {', '.join(missing)}, which this onnxruntime {ort.__version__} lacks "
            f"(it has {', '.join(sorted(available))}): {_INSTALL_HINT}"
        )
    if ep == "cpu":
        return ep, ["CPUExecutionProvider"]
    cuda = ("CUDAExecutionProvider", {"device_id": 0})
    if ep == "cuda":
        return ep, [cuda, "CPUExecutionProvider"]
    cache = bundle.root / "tensorrt" / "onnxruntime"  # beside (not among) the native engines of export.tensorrt
    cache.mkdir(parents=True, exist_ok=True)
    trt = {
        "device_id": 0,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        "trt_fp16_enable": bundle.manifest.precision == "fp16",
    }
    return ep, [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]


class OnnxDrafterEngine:
    """A drafter over a device bundle, run by ONNX Runtime; implements ``DrafterEngine``."""

    decoder_token_types = False  # the decoder graph takes token_type_ids (Family.decoder_token_types: Gemma 3)

    def __init__(
        self, bundle_dir: str | Path, *, ep: str = "cpu", threads: int | None = None, verify: bool = True
    ) -> None:
        import onnxruntime as ort

        self.bundle = load_bundle(bundle_dir, verify=verify)
        manifest = self.bundle.manifest
        self.family = manifest.family
        self.ep, providers = providers_for(ep, self.bundle)
        self.name = f"onnxruntime-{self.ep}:{self.bundle.root}"
        options = ort.SessionOptions()
        if threads is not None:  # else ONNX Runtime's default: one thread per core, whatever this process's affinity
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
            logger.info(describe("device", int(threads), pool="onnxruntime"))
        options.log_severity_level = 3
        self.sessions: dict[str, Any] = {}
        for role in ("vision_encoder", "embed_tokens", "decoder"):
            if self.bundle.has_graph(role):
                path = str(self.bundle.graph_path(role))
                self.sessions[role] = ort.InferenceSession(path, sess_options=options, providers=providers)
        active = self.sessions["decoder"].get_providers()
        if _PROVIDER.get(self.ep, "") not in active:
            raise EngineUnavailableError(
                f"onnxruntime could not start {_PROVIDER[self.ep]} (active: {', '.join(active)}); check the CUDA / "
                f"TensorRT libraries it needs: {_INSTALL_HINT}"
            )
        self.feed_recorder: FeedRecorder | None = None
        self._read_manifest()
        self._decoder_inputs = {i.name for i in self.sessions["decoder"].get_inputs()}
        self.decoder_token_types = "token_type_ids" in self._decoder_inputs
        self._device_kv = self.ep in ("cuda", "tensorrt")
        logger.info("onnxruntime drafter %s on %s", self.bundle.root, self.sessions["decoder"].get_providers())

    def _read_manifest(self) -> None:
        """Model shape, fingerprint and processor from the bundle's manifest (shared with the TensorRT engine)."""
        manifest = self.bundle.manifest
        info = manifest.model
        self.num_layers = int(info["num_layers"])
        self.num_kv_heads = int(info["num_kv_heads"])
        self.head_dim = int(info["head_dim"])
        self.vocab_size = int(info["vocab_size"])
        self.image_token_id = info.get("image_token_id")
        self.mrope = info.get("positions") == "mrope"
        fp = manifest.fingerprint
        self._fingerprint = ModelFingerprint(
            name=str(fp.get("name", manifest.source.get("model", ""))),
            family=str(fp.get("family", self.family)),
            vocab_size=int(fp.get("vocab_size", self.vocab_size)),
            tokenizer_hash=str(fp.get("tokenizer_hash", "")),
            special_tokens=dict(fp.get("special_tokens", {})),
            eos_token_ids=tuple(int(t) for t in fp.get("eos_token_ids", info.get("eos_token_ids", ()))),
        )
        self.processor = load_processor(self.bundle.root, self.family)
        self.tokenizer = self.processor if self.family == TEXT_LM.name else self.processor.tokenizer

    # -- DrafterEngine -------------------------------------------------------------------------------------------

    @property
    def fingerprint(self) -> ModelFingerprint:
        return self._fingerprint

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self._fingerprint.eos_token_ids

    @property
    def accepts_images(self) -> bool:
        return "vision_encoder" in self.sessions

    def start(self, image: Any | None, prompt: str, reduction: TokenReduction | None = None) -> OnnxSequence:
        if not self.accepts_images:
            image = None
        clock = StageClock()
        batch = self.render(image, prompt)
        input_ids = np.asarray(batch["input_ids"], dtype=np.int64)
        if input_ids.shape[0] != 1:
            raise ValueError("one prompt per sequence")
        embeds = self.embed(input_ids)
        clock.lap("preprocess")
        keep = np.ones(input_ids.shape[1], dtype=bool)
        image_tokens = 0
        if image is not None:
            features = self.image_features(batch)
            clock.lap("vision")
            where = input_ids[0] == self.image_token_id
            if reduction is not None and reduction.reduces:
                reduced = reduction.select(embeds[0], where, features)
                embeds, keep = reduced.embeds[None].astype(embeds.dtype, copy=False), reduced.keep
                image_tokens = reduced.kept_image_tokens
            else:
                image_tokens = int(where.sum())
                if features.shape[0] != image_tokens:
                    raise ValueError(f"{features.shape[0]} image features for {image_tokens} image placeholder tokens")
                embeds[0, where] = features.astype(embeds.dtype, copy=False)
            clock.lap("reduce")
        positions, delta = self._prompt_positions(input_ids, batch if image is not None else None)
        kv = self.empty_kv()
        embeds, positions = embeds[:, keep], positions[..., keep]
        if self.decoder_token_types:  # the prompt's types: the tokens of one image attend to each other
            types = batch.get("token_type_ids")
            types = np.zeros_like(input_ids) if image is None or types is None else np.asarray(types, np.int64)
            logits, kv = self.run_decoder(embeds, positions, kv, 0, token_types=types[:, keep])
        else:
            logits, kv = self.run_decoder(embeds, positions, kv, 0)
        clock.lap("decoder")
        skipped = int((~keep).sum())
        return OnnxSequence(self, input_ids[0].tolist(), logits[-1], kv, image_tokens, delta, skipped, clock.stages)

    def _prompt_positions(self, input_ids: np.ndarray, image_batch: dict[str, np.ndarray] | None) -> tuple[Any, int]:
        """The full prompt's position ids ([1, L], or [4, 1, L] for M-RoPE) and the M-RoPE delta."""
        if not self.mrope:
            return np.arange(input_ids.shape[1], dtype=np.int64)[None, :], 0
        info = self.bundle.manifest.model
        return mrope.prompt_position_ids(
            input_ids[0],
            image_token_id=int(self.image_token_id),
            video_token_id=info.get("video_token_id"),
            spatial_merge_size=int(info.get("spatial_merge_size", 2)),
            image_grid_thw=image_batch.get("image_grid_thw") if image_batch is not None else None,
        )

    @functools.cached_property
    def vocabulary(self) -> Vocabulary:
        probe = np.asarray(self.render(None, PROBE_PROMPT)["input_ids"]).reshape(-1).tolist()
        return vocabulary_of(self.tokenizer, self.vocab_size, probe)

    def decode(self, tokens: Sequence[int]) -> str:
        eos = set(self.eos_token_ids)
        return self.tokenizer.decode([int(t) for t in tokens if int(t) not in eos], skip_special_tokens=True)

    # -- pieces ----------------------------------------------------------------------------------------------------

    def render(self, image: Any | None, prompt: str) -> dict[str, np.ndarray]:
        """The prompt (and image) as numpy model inputs, exactly as ``covspec.models`` renders them."""
        if self.family == TEXT_LM.name:
            return dict(text_inputs(self.processor, prompt, "np"))
        return dict(vlm_inputs(self.processor, image, prompt, "np"))

    def _run(self, role: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.feed_recorder is not None:
            self.feed_recorder(role, feeds)
        return self.sessions[role].run(None, feeds)

    def embed(self, input_ids: np.ndarray) -> np.ndarray:
        return np.array(self._run("embed_tokens", {"input_ids": input_ids.astype(np.int64)})[0], dtype=np.float32)

    def vision_feeds(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        graph = family_named(self.family).vision
        if graph is None:
            raise EngineUnavailableError(f"family {self.family!r} has no vision graph in this version of covspec")
        return graph.feeds(batch)

    def image_features(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """[n_image_tokens, hidden] embeddings for the image placeholders of a rendered batch."""
        return np.asarray(self._run("vision_encoder", self.vision_feeds(batch))[0], dtype=np.float32)

    def empty_kv(self) -> list[Any]:
        empty = np.zeros((1, self.num_kv_heads, 0, self.head_dim), dtype=np.float32)
        return [empty] * (2 * self.num_layers)

    def run_decoder(
        self,
        embeds: np.ndarray,
        positions: np.ndarray,
        kv: list[Any],
        past: int,
        token_types: np.ndarray | None = None,
    ) -> tuple[np.ndarray, list[Any]]:
        """One decoder run over ``embeds`` [1, n, hidden] after ``past`` cached positions; (logits [n, vocab], kv).

        ``token_types`` [1, past + n] feeds a decoder that takes ``token_type_ids`` (zeros when not given: the new
        tokens are text, whose attention is causal whatever the past's types)."""
        n = embeds.shape[1]
        feeds: dict[str, Any] = {
            "inputs_embeds": np.ascontiguousarray(embeds, dtype=np.float32),
            "attention_mask": np.ones((1, past + n), dtype=np.int64),
            "position_ids": np.ascontiguousarray(positions, dtype=np.int64),
        }
        if self.decoder_token_types:
            types = np.zeros((1, past + n), dtype=np.int64) if token_types is None else token_types
            feeds["token_type_ids"] = np.ascontiguousarray(types, dtype=np.int64)
        names = [f"past_key_values.{i}.{k}" for i in range(self.num_layers) for k in ("key", "value")]
        if self._device_kv:
            return self._run_decoder_bound(feeds, names, kv)
        feeds.update(zip(names, kv, strict=True))
        outputs = self._run("decoder", feeds)
        return np.asarray(outputs[0][0]), list(outputs[1:])

    def _run_decoder_bound(
        self, feeds: dict[str, Any], names: list[str], kv: list[Any]
    ) -> tuple[np.ndarray, list[Any]]:
        """CUDA / TensorRT: the KV cache stays on the GPU as ``OrtValue``s; only the logits come back."""
        session = self.sessions["decoder"]
        if self.feed_recorder is not None:
            self.feed_recorder("decoder", {**feeds, **dict(zip(names, [_to_numpy(v) for v in kv], strict=True))})
        binding = session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for name, value in zip(names, kv, strict=True):
            if isinstance(value, np.ndarray):  # the empty prefill cache, or one just cropped: copied up by the run
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        outputs = [o.name for o in session.get_outputs()]
        binding.bind_output(outputs[0], "cpu")
        for name in outputs[1:]:
            binding.bind_output(name, "cuda", 0)
        session.run_with_iobinding(binding)
        values = binding.get_outputs()
        return values[0].numpy()[0], list(values[1:])

    def crop_kv(self, kv: list[Any], length: int) -> list[Any]:
        # ONNX Runtime cannot slice a GPU OrtValue in place: a crop brings the cache to the host once, and the next
        # run binds it back (rounds crop once each; the steps between keep the cache on the GPU)
        return [np.ascontiguousarray(v[:, :, :length]) for v in kv]


def _to_numpy(value: Any) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else value.numpy()


def _kv_nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    return int(np.prod(value.shape())) * 4


class OnnxSequence(TokenSequence):
    """One generation on the ONNX drafter: the KV cache as numpy arrays (or GPU ``OrtValue``s) and the ids."""

    def __init__(
        self,
        engine: OnnxDrafterEngine,
        prompt_ids: list[int],
        prefill_logits: np.ndarray,
        kv: list[Any],
        image_tokens: int,
        delta: int,
        skipped: int = 0,
        stages: dict[str, float] | None = None,
    ) -> None:
        super().__init__(prompt_ids, np.asarray(prefill_logits, dtype=np.float32), image_tokens)
        self._stages = dict(stages or {})
        self._engine = engine
        self._kv = kv
        self._delta = delta
        self._skipped = skipped  # prompt positions the prefill left out: the cache is that much shorter than the ids

    @property
    def prefill_stages(self) -> dict[str, float]:
        return dict(self._stages)

    def extend(self, tokens: Sequence[int]) -> np.ndarray:
        engine = self._engine
        ids = check_token_ids(tokens, engine.vocab_size)
        if not ids:
            return np.zeros((0, engine.vocab_size), dtype=np.float32)
        start = len(self._ids)
        embeds = engine.embed(np.asarray([ids], dtype=np.int64))
        if engine.mrope:
            positions = mrope.extend_position_ids(start, len(ids), self._delta)
        else:
            positions = np.arange(start, start + len(ids), dtype=np.int64)[None, :]
        logits, self._kv = engine.run_decoder(embeds, positions, self._kv, start - self._skipped)
        self._ids.extend(ids)
        return np.asarray(logits, dtype=np.float32)

    def crop(self, length: int) -> None:
        length = self._checked_crop(length)
        if length < len(self._ids):
            self._kv = self._engine.crop_kv(self._kv, length - self._skipped)
            del self._ids[length:]

    def kv_bytes(self) -> int:
        return sum(_kv_nbytes(v) for v in self._kv)


__all__ = ["EP_CHOICES", "OnnxDrafterEngine", "OnnxSequence", "providers_for"]
