"""A tiny exported LLaVA drafter bundle for the quantization and TensorRT tests (random weights, built once)."""

from __future__ import annotations

from pathlib import Path


def tiny_llava_bundle(root: Path, drafter: Path | None = None) -> Path:
    """Export the tiny LLaVA drafter (``build_tiny("llava", "drafter")``, or ``drafter``) to ``root/fp32``."""
    from covspec.export.onnx_export import export_bundle
    from covspec.models.tiny import build_tiny

    out = root / "fp32"
    if not (out / "manifest.json").exists():
        source = drafter if drafter is not None else build_tiny("llava", "drafter", root / "drafter")
        export_bundle(source, out, validate=False, overwrite=True)
    return out


def calibration_folder(root: Path, n: int = 3) -> Path:
    """``n`` synthetic scene images as PNG files plus a prompts.txt, as a user's --calibration-images folder."""
    from covspec.demo import scenes

    folder = root / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    items = scenes.dataset("train", n, seed=1)
    for i, item in enumerate(items):
        item.scene.image.save(folder / f"img_{i:02d}.png")
    (folder / "prompts.txt").write_text("\n".join(item.question for item in items) + "\n")
    return folder


def shared_fp32_bundle(tmp_path_factory) -> Path:
    """The tiny fp32 bundle, exported once per test session (about 20 s) and shared by the modules that need it;
    never modify it in place (copy it first)."""
    root = tmp_path_factory.getbasetemp() / "covspec-tiny-llava-bundle"
    root.mkdir(exist_ok=True)
    return tiny_llava_bundle(root)
