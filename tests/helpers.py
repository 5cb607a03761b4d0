"""Shared test material: tiny checkpoints (built once per test session), images, prompts, running edges."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ARCHS = ("llava", "qwen2_vl", "idefics3")
PROMPTS = [
    "What is in the image?",
    "Describe the picture.",
    "What colour is the shape?",
    "How many circles are there?",
    "What is left of the square?",
    "Is there a red object?",
    "Tell me about the colours.",
    "Where is the triangle?",
]


def image_bytes(seed: int, size: tuple[int, int] = (48, 40), fmt: str = "PNG") -> bytes:
    """A small seeded picture of a few coloured shapes, encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    background = tuple(int(c) for c in rng.integers(0, 256, 3))
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.integers(0, size[0] - 8)), int(rng.integers(0, size[1] - 8))
        box = (x0, y0, x0 + int(rng.integers(6, 20)), y0 + int(rng.integers(6, 20)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def pil(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


@dataclass(frozen=True)
class TinyPair:
    arch: str
    target: Path
    drafter: Path


def build_pair(root: Path, arch: str, seed: int = 0) -> TinyPair:
    from covspec.models import build_tiny

    base = root / f"{arch}-{seed}"
    target, drafter = base / "target", base / "drafter"
    if not (target / "config.json").exists():
        build_tiny(arch, "target", target, seed=seed)
    if not (drafter / "config.json").exists():
        build_tiny(arch, "drafter", drafter, seed=seed)
    return TinyPair(arch, target, drafter)


def derive_drafter(target_dir: Path, out_dir: Path, *, noise: float, seed: int) -> Path:
    """A drafter derived from a target checkpoint: a copy of ``target_dir`` (same tokenizer, processor and config)
    whose every floating-point weight gets seeded Gaussian noise of ``noise`` times that tensor's RMS. ``noise=0``
    gives the target itself; larger noise, a drafter the target accepts less often. Returns ``out_dir``."""
    import shutil

    from safetensors import safe_open
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    shutil.copytree(target_dir, out_dir)  # refuses an existing out_dir: never half a drafter from an earlier run
    rng = np.random.default_rng(seed)
    for path in sorted(out_dir.glob("*.safetensors")):
        with safe_open(path, framework="numpy") as source:
            metadata = source.metadata()
            tensors = {name: source.get_tensor(name) for name in sorted(source.keys())}
        for name, weight in tensors.items():
            if np.issubdtype(weight.dtype, np.floating) and weight.size:
                rms = float(np.sqrt(np.mean(np.square(weight, dtype=np.float64))))
                tensors[name] = (weight + noise * rms * rng.standard_normal(weight.shape)).astype(weight.dtype)
        save_file(tensors, path, metadata=metadata)
    return out_dir


def has_cuda() -> bool:
    """A CUDA GPU visible to torch."""
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def tensorrt_missing() -> str:
    """What this machine lacks for the TensorRT tests ("" when it has everything), for skip reasons."""
    import importlib.util

    needs = (
        ("the tensorrt Python module (see docs/jetson.md)", importlib.util.find_spec("tensorrt") is None),
        ("a CUDA GPU visible to torch", not has_cuda()),
    )
    return " and ".join(what for what, absent in needs if absent)


def photo(width: int, height: int, seed: int, fmt: str = "JPEG") -> bytes:
    """A seeded photo-like picture (gradients, a few discs, sensor noise), encoded as a phone would (JPEG q90)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    corners = rng.uniform(0, 255, (4, 3)).astype(np.float32)
    u, v = (x / max(1, width - 1))[..., None], (y / max(1, height - 1))[..., None]
    sky = (1 - u) * (1 - v) * corners[0] + u * (1 - v) * corners[1] + (1 - u) * v * corners[2] + u * v * corners[3]
    image = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.3) * min(width, height)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (height, width, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, format=fmt, quality=90)
    return out.getvalue()
