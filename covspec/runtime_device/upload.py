"""The image a generation uploads: the picture the target's own image processor would work on, not the camera's file.

A phone photo is megabytes; the target's processor shrinks it to a few hundred pixels a side before anything else. The
edge publishes that processor in ``/v1/info`` (``model.image_processor``: class, backend, config, the keyword
arguments its processor calls it with, library versions). A device with the same class and library versions runs the
processor's own geometric step on the original image (its family's resize rule: shortest edge then centre crop for
CLIP, ``smart_resize`` for the Qwen-VL family, longest edge for Idefics3 and SmolVLM, patch-aligned longest edge for
Pixtral, a fixed size for Gemma 3 and InternVL, ...), stops the processor there, and uploads that uint8 image as PNG.
On the edge the processor finds the image already at the size its rule computes (each rule gives back the size it is
given), and resizing to the same size is the identity in both backends (torchvision returns the tensor, PIL a copy):
every later step reads the same pixels, so the pixel values (and grids, masks, sizes) are bit-identical to those of
the original. ``tests/runtime_device/test_upload.py`` checks that for every family of the registry.

Where it cannot hold, the original bytes go up and :attr:`Upload.fallback` says why: a processor whose later steps
read the original size (LLaVA-NeXT and LLaVA-OneVision anyres tiling: ``image_sizes``), settings that crop the
original before resizing (Gemma 3 pan-and-scan, InternVL crops to several patches, LFM2-VL tiles), another backend or
library version than the edge's, an unknown processor, or a resized file no smaller than the original.

``quality`` (1..100) is LOSSY: the image sent is then a JPEG at that quality, and the target reads other pixels.

Both sides decode the original alike: PIL, converted to RGB, no EXIF rotation (``covspec.runtime_edge.images``).
"""

from __future__ import annotations

import copy
import functools
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PNG = "png"
JPEG = "jpeg"
# an original this small goes up as it is (no lossy quality asked): what resizing could save is less than a
# fraction of a round trip on any link, while decoding, resizing and encoding cost milliseconds on the device
SMALL_ORIGINAL_BYTES = 16 * 1024


@dataclass(frozen=True)
class Upload:
    """What goes up for one generation's image, and what it replaced."""

    data: bytes  # the bytes sent (the original file when nothing smaller was made)
    original_bytes: int
    resized: bool  # True: the processor's own geometric step ran here, the edge's is the identity
    quality: int | None  # JPEG quality of a lossy upload; None: the pixels sent are the original's (or exact)
    fallback: str | None = None  # why the image was not resized, when resizing was asked for
    size: tuple[int, int] | None = None  # (width, height) of the image sent, when re-encoded
    image: Any = field(default=None, compare=False, repr=False)  # the decoded original (PIL, RGB), when decoded

    def stats(self) -> dict[str, Any]:
        """The upload's keys of ``covspec run --json``'s stats."""
        return {
            "upload_original_bytes": self.original_bytes,
            "upload_image_bytes": len(self.data),
            "upload_resized": self.resized,
            "upload_quality": self.quality,
            "upload_fallback": self.fallback,
        }


@dataclass(frozen=True)
class ResizeRule:
    """How one image processor class reaches the image its later steps work on: the first output of the last of
    ``steps`` it calls (each a method of the processor, called per image), and the settings under which its later
    steps read the original image instead (``refuse(settings)`` says why, or None)."""

    steps: tuple[str, ...]
    refuse: Callable[[dict[str, Any]], str | None] = lambda settings: None


def _refuse_if(key: str, reason: str) -> Callable[[dict[str, Any]], str | None]:
    return lambda settings: reason if settings.get(key) else None


def _refuse_anyres(settings: dict[str, Any]) -> str | None:
    return "anyres tiling: its tiles and image_sizes depend on the original size"


def _refuse_internvl_patches(settings: dict[str, Any]) -> str | None:
    if settings.get("crop_to_patches") and int(settings.get("max_patches", 1)) > 1:
        return "crop_to_patches: its patch grid is chosen from the original size"
    return None


def _refuse_lfm2_tiles(settings: dict[str, Any]) -> str | None:
    tiles = (int(settings.get("min_tiles", 1)), int(settings.get("max_tiles", 1)))
    if settings.get("do_image_splitting", True) and tiles != (1, 1):
        return "image splitting: a large original is cut into tiles from its own pixels"
    return None


# Keyed by the class name without the PIL backend's "Pil" suffix (the backend is checked apart). Only classes whose
# bit-identity tests/runtime_device/test_upload.py checks are listed; any other processor falls back.
RESIZE_RULES: dict[str, ResizeRule] = {
    "CLIPImageProcessor": ResizeRule(("resize", "center_crop")),
    "Qwen2VLImageProcessor": ResizeRule(("resize",)),
    "Idefics3ImageProcessor": ResizeRule(("resize",)),
    "SmolVLMImageProcessor": ResizeRule(("resize",)),
    "PixtralImageProcessor": ResizeRule(("resize",)),
    "Gemma3ImageProcessor": ResizeRule(("resize",), _refuse_if("do_pan_and_scan", "pan-and-scan crops the original")),
    "GotOcr2ImageProcessor": ResizeRule(("resize",), _refuse_internvl_patches),
    "Lfm2VlImageProcessor": ResizeRule(("resize_and_split",), _refuse_lfm2_tiles),
    "LlavaNextImageProcessor": ResizeRule((), _refuse_anyres),
    "LlavaOnevisionImageProcessor": ResizeRule((), _refuse_anyres),
}


def prepare_upload(
    image_bytes: bytes,
    processor: dict[str, Any] | None,
    *,
    resize: bool = True,
    quality: int | None = None,
    min_bytes: int = SMALL_ORIGINAL_BYTES,
) -> Upload:
    """The upload of ``image_bytes`` for an edge whose image processor is described by ``processor`` (``/v1/info``
    ``model.image_processor``; None if the edge publishes none): resized by the processor's own rule when ``resize``
    and the result is bit-identical on the edge, as PNG (or JPEG at ``quality``, lossy); the original bytes when
    nothing smaller comes out, or when the original is at most ``min_bytes`` long (no lossy quality asked). Raises
    ``ValueError`` for a quality outside 1..100; never for the image (the edge judges the original bytes as it always
    did)."""
    if quality is not None and not 1 <= quality <= 100:
        raise ValueError(f"upload quality must lie in 1..100, got {quality}")
    original = Upload(image_bytes, len(image_bytes), resized=False, quality=None)
    if quality is None and not (resize and processor):
        return _fallback(original, "the edge publishes no image processor" if resize else None)
    if quality is None and len(image_bytes) <= min_bytes:
        return _fallback(original, f"the original is small ({len(image_bytes)} bytes): resizing it saves little")
    try:
        image = decode_rgb(image_bytes)
    except Exception as exc:  # not an image: send it as it is, the edge answers invalid_image
        return _fallback(original, f"the image does not decode here ({type(exc).__name__})")
    pixels, reason = None, None
    if resize:
        pixels, reason = processor_input(image, processor)
    resized = pixels is not None
    if pixels is None:
        if quality is None:
            return _fallback(original, reason, image)
        pixels = np.asarray(image)
    data = encode(pixels, quality)
    if len(data) >= len(image_bytes):
        why = f"the {'resized ' if resized else ''}{JPEG if quality else PNG} ({len(data)} bytes) is no smaller"
        return _fallback(original, reason or why, image)
    size = (int(pixels.shape[1]), int(pixels.shape[0]))
    return Upload(data, len(image_bytes), resized, quality, reason if resize else None, size, image)


def _fallback(original: Upload, reason: str | None, image: Any = None) -> Upload:
    if reason is not None:
        log.info("uploading the original image (%d bytes): %s", original.original_bytes, reason)
    return Upload(original.data, original.original_bytes, False, None, reason, None, image)


def decode_rgb(data: bytes) -> Any:
    """The image as the edge decodes it (``covspec.runtime_edge.images.decode_image``): PIL, RGB, no EXIF rotation."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def encode(pixels: np.ndarray, quality: int | None = None) -> bytes:
    """uint8 [H, W, 3] pixels as PNG (exact), or as JPEG at ``quality`` (lossy)."""
    out = io.BytesIO()
    picture = _pil(pixels)
    if quality is None:
        picture.save(out, format="PNG")
    else:
        picture.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _pil(pixels: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


def processor_input(image: Any, processor: dict[str, Any] | None) -> tuple[np.ndarray | None, str | None]:
    """(uint8 [H, W, 3], None): the image ``processor``'s later steps would work on, given ``image`` (PIL, RGB); or
    (None, why not) where the edge's processor could not be reproduced bit for bit here."""
    if not processor:
        return None, "the edge publishes no image processor"
    name = str(processor.get("class", ""))
    rule = RESIZE_RULES.get(name.removesuffix("Pil"))
    if rule is None:
        return None, f"no resize rule for {name or 'an unnamed processor'}"
    settings = {**dict(processor.get("config") or {}), **dict(processor.get("call_kwargs") or {})}
    refused = rule.refuse(settings)
    if refused is not None:
        return None, f"{name}: {refused}"
    differs = _version_difference(dict(processor.get("versions") or {}))
    if differs is not None:
        return None, differs
    try:
        instance = _instantiate(name, dict(processor.get("config") or {}))
    except Exception as exc:  # the class or its backend is not installed here, or the config is not its own
        return None, f"{name} cannot be built here ({type(exc).__name__}: {exc})"
    if str(getattr(instance, "backend", "pil")) != processor.get("backend"):
        return None, f"{name} runs on {getattr(instance, 'backend', 'pil')} here, on {processor.get('backend')} there"
    call_kwargs = dict(processor.get("call_kwargs") or {})
    try:
        pixels = _hwc(_capture(instance, rule.steps, image, call_kwargs))
        if pixels is None:
            return None, f"{name} does not resize to one uint8 RGB image"
        # the edge's processor will start from these pixels: its geometric step must give them back unchanged (a
        # size rule that is not idempotent, e.g. Qwen-VL's smart_resize at extreme aspect ratios, would resize again)
        again = _hwc(
            _capture(_instantiate(name, dict(processor.get("config") or {})), rule.steps, _pil(pixels), call_kwargs)
        )
    except Exception as exc:  # the processor refused this image: the edge would refuse it too, on the original
        return None, f"{name} failed here ({type(exc).__name__}: {exc})"
    if again is None or not np.array_equal(again, pixels):
        height, width = pixels.shape[:2]
        return None, f"{name} would resize its own {width}x{height} output again"
    return pixels, None


def _version_difference(versions: dict[str, Any]) -> str | None:
    """Which library computing the pixels differs from the edge's (a resize kernel may change between releases)."""
    from importlib.metadata import PackageNotFoundError, version

    for package, theirs in sorted(versions.items()):
        try:
            ours: str | None = version(package)
        except PackageNotFoundError:
            ours = None
        if ours != theirs:
            return f"the edge runs {package} {theirs}, this device {ours}"
    return None


def _instantiate(name: str, config: dict[str, Any]) -> Any:
    """A fresh instance of the named transformers image processor (only names of ``RESIZE_RULES`` get here): a
    shallow copy of one built once per (class, config), since building one costs milliseconds per image."""
    return copy.copy(_built(name, json.dumps(config, sort_keys=True)))


@functools.lru_cache(maxsize=8)
def _built(name: str, config: str) -> Any:
    import transformers

    return getattr(transformers, name).from_dict(json.loads(config))


class _Captured(Exception):
    """Stops the processor once the image its later steps would read is in hand."""


def _capture(instance: Any, steps: tuple[str, ...], image: Any, call_kwargs: dict[str, Any]) -> Any:
    """The first output of the last of ``steps`` the processor calls on ``image``, called as the edge's processor
    calls it; the processor stops right after the last step, or runs to its end if it skips that one."""
    outputs: dict[str, Any] = {}

    def hook(step: str) -> Callable[..., Any]:
        method = getattr(instance, step)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if step not in outputs:
                outputs[step] = result
                if step == steps[-1]:
                    raise _Captured
            return result

        return recorded

    for step in steps:
        setattr(instance, step, hook(step))  # on this fresh instance only
    try:
        instance(images=[image], **{**call_kwargs, "return_tensors": None})
    except _Captured:
        pass
    done = [step for step in steps if step in outputs]
    return outputs[done[-1]] if done else None


def _hwc(output: Any) -> np.ndarray | None:
    """One uint8 RGB image [H, W, 3] from a step's output (a tensor or array of one channels-first image, [1, 3, H, W]
    or [3, H, W], as both backends hold them, possibly inside the lists or tuples a step returns), or None."""
    while isinstance(output, (list, tuple)) and output:
        output = output[0]
    try:
        array = np.asarray(output)
    except Exception:  # not array-like
        return None
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[0] != 3:
        return None
    return array.transpose(1, 2, 0)


__all__ = ["RESIZE_RULES", "ResizeRule", "Upload", "decode_rgb", "encode", "prepare_upload", "processor_input"]
