"""Decoding untrusted image bytes within the server's limits (no decompression bombs, clear errors)."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image

from covspec.errors import LimitError, ProtocolError
from covspec.runtime_edge.settings import EdgeLimits


def decode_image(data: bytes, limits: EdgeLimits) -> Image.Image:
    """An RGB image from ``data``; ``image_too_large`` past the byte/pixel limits, ``invalid_image`` for non-images."""
    if len(data) > limits.max_image_bytes:
        raise LimitError(
            f"image is {len(data)} bytes; the server accepts at most {limits.max_image_bytes}", code="image_too_large"
        )
    if not data:
        raise ProtocolError("the image is empty", code="invalid_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            check_image_shape(*image.size, limits)
            image.load()
    except (LimitError, ProtocolError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise LimitError(f"image rejected as too large: {exc}", code="image_too_large") from None
    except Exception as exc:  # PIL raises many types for garbage input
        raise ProtocolError(
            f"the bytes are not a decodable image ({type(exc).__name__})", code="invalid_image"
        ) from None
    return image.convert("RGB")


def check_image_shape(width: int, height: int, limits: EdgeLimits) -> None:
    """Refuse shapes no processor should be handed, before any pixel is decoded: too many pixels, a side too long,
    or a long side out of proportion (processors scale the short side up: one pixel wide and a million tall would
    be resized to gigabytes)."""
    shape = f"image is {width}x{height} pixels"
    if width < 1 or height < 1:
        raise ProtocolError(f"{shape}; it must have at least one pixel", code="invalid_image")
    if width * height > limits.max_image_pixels:
        raise LimitError(f"{shape}; the server accepts at most {limits.max_image_pixels}", code="image_too_large")
    if max(width, height) > limits.max_image_side:
        raise LimitError(f"{shape}; no side may pass {limits.max_image_side}", code="image_too_large")
    if max(width, height) / min(width, height) > limits.max_image_aspect:
        raise LimitError(
            f"{shape}; the long side may be at most {limits.max_image_aspect:g} times the short one",
            code="image_too_large",
        )


def decode_data_uri(uri: str, limits: EdgeLimits) -> Image.Image:
    """An image from an OpenAI-style ``data:image/...;base64,...`` URL (remote URLs are not fetched)."""
    if not uri.startswith("data:"):
        raise ProtocolError(
            "only data: URIs are accepted for images (the server fetches nothing)", code="invalid_image"
        )
    header, _, payload = uri.partition(",")
    if ";base64" not in header:
        raise ProtocolError("image data URIs must be base64-encoded", code="invalid_image")
    if len(payload) > limits.max_image_bytes * 4 // 3 + 4:
        raise LimitError("image data URI is larger than the server accepts", code="image_too_large")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("image data URI is not valid base64", code="invalid_image") from None
    return decode_image(raw, limits)
