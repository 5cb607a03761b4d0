"""The native TensorRT drafter engine: a bundle's built engines (``covspec export --device ... --tensorrt``) run
directly, with torch CUDA tensors as device buffers and the KV cache kept on the GPU between steps.

It is the ONNX Runtime engine with its graph runs swapped: prompt rendering, image-feature placement, M-RoPE
positions and the sequence bookkeeping (ids, crop bounds) are ``OnnxDrafterEngine``'s, inherited; only embedding,
the vision encoder and the decoder run through TensorRT. The decoder has two engines: the prefill engine for the
prompt over an empty cache, the decode engine for every later call (longer calls are split into steps that fit its
profile). An image whose pixel shape the vision engine was not built for is encoded by ONNX Runtime instead.

``tensorrt`` and ``torch`` are imported when an engine is made, never at import; what is missing is said with how to
install it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from covspec.bundle import Bundle, load_bundle
from covspec.bundle.engines import engine_paths
from covspec.bundle.platform import detect_platform, import_tensorrt
from covspec.errors import BundleError, EngineUnavailableError, LimitError
from covspec.reduce import TokenReduction
from covspec.runtime_device.engines.onnx_engine import OnnxDrafterEngine, OnnxSequence

logger = logging.getLogger(__name__)


def _torch_cuda() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise EngineUnavailableError(
            "the TensorRT engine keeps its buffers in torch CUDA tensors, and torch is not installed: install a CUDA "
            "build of torch (on Jetson, the JetPack wheel from the Jetson AI Lab index; see docs/jetson.md)"
        ) from exc
    if not torch.cuda.is_available():
        raise EngineUnavailableError(
            f"torch {torch.__version__} sees no CUDA GPU: the TensorRT engine needs an NVIDIA GPU and a CUDA build "
            "of torch (see docs/jetson.md)"
        )
    return torch


class TrtRunner:
    """One deserialized engine and its execution context, run over torch CUDA tensors (one optimization profile)."""

    def __init__(self, trt: Any, torch: Any, runtime: Any, path: Path) -> None:
        self.torch = torch
        self.trt = trt
        self.path = path
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BundleError(
                f"TensorRT could not load {path} (built by another TensorRT version or for another GPU?); rebuild "
                "it with `covspec export --device PROFILE --tensorrt`"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: self._torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}
        self.ranges = {n: [tuple(s) for s in self.engine.get_tensor_profile_shape(n, 0)] for n in self.inputs}
        self._placeholder = torch.zeros(1, dtype=torch.float32, device="cuda")  # address for empty tensors

    def _torch_dtype(self, dtype: Any) -> Any:
        trt, torch = self.trt, self.torch
        table = {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.int32: torch.int32,
            trt.int8: torch.int8,
            trt.bool: torch.bool,
        }
        for name, torch_dtype in (("int64", torch.int64), ("bf16", torch.bfloat16), ("uint8", torch.uint8)):
            if hasattr(trt, name):
                table[getattr(trt, name)] = torch_dtype
        return table[dtype]

    def fits(self, shapes: dict[str, tuple[int, ...]]) -> bool:
        """Whether every input shape lies inside the engine's optimization profile."""
        for name, shape in shapes.items():
            low, _, high = self.ranges[name]
            if len(shape) != len(low) or any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high, strict=True)):
                return False
        return True

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Run on ``feeds`` (torch tensors or numpy arrays); returns the outputs as torch CUDA tensors."""
        torch = self.torch
        keep = []
        for name in self.inputs:
            value = feeds[name]
            tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
            tensor = tensor.to(device="cuda", dtype=self.dtypes[name]).contiguous()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            address = tensor.data_ptr() if tensor.numel() else self._placeholder.data_ptr()
            self.context.set_tensor_address(name, address)
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"{self.path.name}: output {name} has an unresolved shape {shape}")
            out = torch.empty(shape, dtype=self.dtypes[name], device="cuda")
            self.context.set_tensor_address(name, out.data_ptr() if out.numel() else self._placeholder.data_ptr())
            outputs[name] = out
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError(f"TensorRT failed to run {self.path.name}")
        return outputs


def check_decoder_inputs(bundle: Bundle) -> None:
    """Refuse a bundle whose decoder takes an input the engines are not fed (rather than draft without it)."""
    decoder_inputs = {i["name"] for i in (bundle.manifest.io or {}).get("decoder", {}).get("inputs", [])}
    if "token_type_ids" in decoder_inputs:
        raise EngineUnavailableError(
            f"{bundle.root}: this decoder takes token_type_ids (Gemma 3: the tokens of an image attend to each other "
            "in prefill), which the native TensorRT engine does not feed yet; run the bundle with ONNX Runtime "
            "(--engine onnxruntime; --ep tensorrt gives TensorRT through it)"
        )


class TensorRTDrafterEngine(OnnxDrafterEngine):
    """A drafter over a bundle's TensorRT engines; implements ``DrafterEngine``."""

    def __init__(self, bundle_dir: str | Path, *, device: int = 0, verify: bool = True) -> None:
        trt = import_tensorrt()
        bundle = load_bundle(bundle_dir, verify=verify)
        check_decoder_inputs(bundle)
        torch = _torch_cuda()
        torch.cuda.set_device(device)
        self.torch = torch
        self.bundle = bundle
        manifest = self.bundle.manifest
        paths = engine_paths(self.bundle, platform=detect_platform(trt, device))
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.runners = {name: TrtRunner(trt, torch, runtime, path) for name, path in paths.items()}
        for needed in ("embed_tokens", "decoder_prefill", "decoder_decode"):
            if needed not in self.runners:
                raise BundleError(f"bundle {self.bundle.root} lacks the TensorRT engine {needed}; rebuild the engines")
        section = manifest.tensorrt or {}
        self.max_context_tokens = int(section.get("max_context_tokens", 0)) or None
        self.max_step_tokens = int(self.runners["decoder_decode"].ranges["inputs_embeds"][2][1])
        self.max_prompt_tokens = int(self.runners["decoder_prefill"].ranges["inputs_embeds"][2][1])

        # the state OnnxDrafterEngine's rendering and sequences read; no ONNX Runtime session is opened
        self.family = manifest.family
        self.ep = "tensorrt-native"
        self.name = f"tensorrt:{self.bundle.root}"
        self.sessions: dict[str, Any] = {}
        self.feed_recorder = None
        self._read_manifest()
        self._device_kv = True
        self._vision_fallback: Any = None
        self._kv_names = [f"past_key_values.{i}.{k}" for i in range(self.num_layers) for k in ("key", "value")]
        self._present_names = [f"present.{i}.{k}" for i in range(self.num_layers) for k in ("key", "value")]
        self._kv_dtype = self.runners["decoder_decode"].dtypes[self._kv_names[0]]
        logger.info("TensorRT drafter %s: engines %s", self.bundle.root, ", ".join(self.runners))

    @property
    def accepts_images(self) -> bool:
        return self.bundle.has_graph("vision_encoder")

    def start(self, image: Any | None, prompt: str, reduction: TokenReduction | None = None) -> TensorRTSequence:
        sequence = super().start(image, prompt, reduction)
        return TensorRTSequence.from_onnx(self, sequence)

    # -- graph runs swapped for TensorRT -------------------------------------------------------------------------

    def embed(self, input_ids: np.ndarray) -> np.ndarray:
        out = self.runners["embed_tokens"]({"input_ids": input_ids.astype(np.int64)})
        return next(iter(out.values())).float().cpu().numpy()

    def image_features(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feeds = self.vision_feeds(batch)
        runner = self.runners.get("vision_encoder")
        if runner is not None and runner.fits({k: tuple(v.shape) for k, v in feeds.items()}):
            return next(iter(runner(feeds).values())).float().cpu().numpy()
        if self._vision_fallback is None:
            import onnxruntime as ort

            logger.warning(
                "image shape %s is outside the vision engine's profile: ONNX Runtime encodes it",
                {k: v.shape for k, v in feeds.items()},
            )
            self._vision_fallback = ort.InferenceSession(
                str(self.bundle.graph_path("vision_encoder")), providers=ort.get_available_providers()
            )
        return np.asarray(self._vision_fallback.run(None, feeds)[0], dtype=np.float32)

    def empty_kv(self) -> list[Any]:
        shape = (1, self.num_kv_heads, 0, self.head_dim)
        return [self.torch.empty(shape, dtype=self._kv_dtype, device="cuda") for _ in self._kv_names]

    def run_decoder(
        self, embeds: np.ndarray, positions: np.ndarray, kv: list[Any], past: int
    ) -> tuple[np.ndarray, list[Any]]:
        """Prefill engine for a prompt over an empty cache, decode engine (in steps of at most its profile's length)
        afterwards; (logits [n, vocab] on the host, KV tensors on the GPU)."""
        n = embeds.shape[1]
        if self.max_context_tokens is not None and past + n > self.max_context_tokens:
            raise LimitError(
                f"{past + n} positions exceed the {self.max_context_tokens}-token context the TensorRT engines were "
                "built for; rebuild them with a profile of a longer max_context_tokens"
            )
        if past == 0:
            if n > self.max_prompt_tokens:
                raise LimitError(f"a {n}-token prompt exceeds the prefill engine's {self.max_prompt_tokens} tokens")
            return self._step("decoder_prefill", embeds, positions, kv, past)
        logits = []
        for start in range(0, n, self.max_step_tokens):
            stop = min(n, start + self.max_step_tokens)
            step_logits, kv = self._step(
                "decoder_decode", embeds[:, start:stop], positions[..., start:stop], kv, past + start
            )
            logits.append(step_logits)
        return np.concatenate(logits, axis=0), kv

    def _step(
        self, engine: str, embeds: np.ndarray, positions: np.ndarray, kv: list[Any], past: int
    ) -> tuple[np.ndarray, list[Any]]:
        torch = self.torch
        n = embeds.shape[1]
        feeds: dict[str, Any] = {
            "inputs_embeds": embeds,
            "attention_mask": torch.ones((1, past + n), dtype=torch.int64, device="cuda"),
            "position_ids": positions,
        }
        feeds.update(zip(self._kv_names, kv, strict=True))
        outputs = self.runners[engine](feeds)
        logits = outputs["logits"][0].float().cpu().numpy()
        return logits, [outputs[name] for name in self._present_names]

    def crop_kv(self, kv: list[Any], length: int) -> list[Any]:
        return [v[:, :, :length].contiguous() for v in kv]


class TensorRTSequence(OnnxSequence):
    """An ``OnnxSequence`` whose KV cache is torch CUDA tensors."""

    @classmethod
    def from_onnx(cls, engine: TensorRTDrafterEngine, sequence: OnnxSequence) -> TensorRTSequence:
        out = cls.__new__(cls)
        out.__dict__.update(sequence.__dict__)
        out._engine = engine
        return out

    def kv_bytes(self) -> int:
        return sum(int(v.numel()) * int(v.element_size()) for v in self._kv)


__all__ = ["TensorRTDrafterEngine", "TensorRTSequence", "TrtRunner"]
