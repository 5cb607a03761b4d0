"""covspec.quant: int8 (dynamic, static QDQ), int4 weight-only and fp16 bundles, with accuracy and acceptance
reports. ``quantize_bundle`` is the whole of ``covspec quantize``; ``onnx_quant`` holds the per-file quantizers.
Importing this package loads neither onnx nor onnxruntime; using it does."""

from covspec.quant.bundle import quantize_bundle
from covspec.quant.schemes import PRECISIONS, SCHEMES, Scheme, scheme_for

__all__ = ["PRECISIONS", "SCHEMES", "Scheme", "quantize_bundle", "scheme_for"]
