"""Setup bytes of a generation before and after the pre-resized upload, on 12 MP phone photos, and what a lossy upload
costs the demo target in accuracy.

  .venv/bin/python benchmarks/upload_bytes.py [--out benchmarks/results/upload] [--photos 3] [--questions 100]

Photos: seeded 4000x3000 pictures that look like a phone's (sky and ground gradients, blurred shapes, textures, sensor
noise), saved as JPEG quality 90 as a phone would. Each is sent through a real uvicorn edge on 127.0.0.1 (``covspec
run``'s loop, greedy, a new device each time so that nothing is held by hash) to three targets: the shipped demo
target (a LLaVA with a 64 px CLIP processor; its drafter drafts) and the tiny Qwen2-VL and Idefics3 targets (their tiny
drafters draft). For each: setup uplink bytes (WebSocket upgrade + open frame with the image) with the original file,
with the pre-resized PNG (lossless: the output must be the same tokens), and with JPEG uploads at lossy qualities.
"at 10 Mbit/s" is the upload time those bytes take on a 10 Mbit/s uplink (computed, not measured).

Accuracy: the demo target on held-out demo scenes (``covspec.demo.scenes``, exact match as ``covspec.demo.evaluate``
scores), each scene "photographed" (8x larger, sensor noise, JPEG q90: the file a phone would hold), in process on the
image the edge would decode: the lossless upload (the processor's 64 px input as PNG, bit-identical on the edge) and
the JPEG upload at each quality. Byte counts are machine-independent; timings are on this machine's shared CPUs.
Writes upload.json and upload.png.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

QUALITIES = (95, 75, 50, 25)
PROMPT = "Describe the picture."
MAX_NEW = 8
UPLINK_BITS_PER_S = 10e6


def phone_photo(seed: int, width: int = 4000, height: int = 3000) -> bytes:
    """A seeded photo-like picture of ``width`` x ``height``, as JPEG quality 90."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    horizon = int(height * rng.uniform(0.35, 0.6))
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    sky_top, sky_bottom, ground_far, ground_near = rng.uniform(40, 230, (4, 3)).astype(np.float32)
    t = np.clip(y * height / horizon, 0, 1)
    g = np.clip((y * height - horizon) / (height - horizon), 0, 1)
    sky, ground = sky_top * (1 - t) + sky_bottom * t, ground_far * (1 - g) + ground_near * g
    base = np.where(y * height < horizon, sky, ground) + 12 * (x - 0.5)  # light falling off across the frame
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(6, 12))):
        cx, cy = rng.uniform(0, width), rng.uniform(horizon * 0.6, height)
        w, h = rng.uniform(0.03, 0.25) * width, rng.uniform(0.03, 0.25) * height
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(
            (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), colour
        )

    def field(cell: int, sigma: float, channels: int) -> np.ndarray:
        """Smooth random variation at the scale of ``cell`` pixels (surfaces, grass, clouds)."""
        coarse = np.clip(rng.normal(128, sigma, (height // cell, width // cell, channels)), 0, 255).astype(np.uint8)
        smooth = Image.fromarray(coarse.squeeze(-1) if channels == 1 else coarse).resize((width, height), Image.BICUBIC)
        return np.asarray(smooth, dtype=np.float32).reshape(height, width, -1) - 128

    texture = field(60, 14, 1) + field(2, 16, 1) + field(60, 5, 3)
    image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + texture, 0, 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(1.5))  # optics: no edge is a perfect step
    noise = rng.normal(0, 4.0, (height, width, 3)).astype(np.float32)  # sensor noise left by the phone's denoiser
    out = io.BytesIO()
    Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)).save(
        out, format="JPEG", quality=90
    )
    return out.getvalue()


def targets(root: Path) -> list[tuple[str, Path, Path]]:
    """(label, target checkpoint, drafter checkpoint): the shipped demo pair and the tiny Qwen2-VL / Idefics3 pairs."""
    from covspec.demo.store import ensure_pair
    from covspec.models.tiny import build_tiny

    demo = ensure_pair()
    out = [("demo (LLaVA, CLIP 64 px)", demo.target, demo.drafter)]
    for arch in ("qwen2_vl", "idefics3"):
        target = build_tiny(arch, "target", root / f"{arch}-target")
        out.append((f"tiny {arch}", target, build_tiny(arch, "drafter", root / f"{arch}-drafter")))
    return out


def measure_bytes(photos: list[bytes], root: Path, console: Console) -> list[dict[str, Any]]:
    from covspec.models import load_model
    from covspec.models.loading import quiet_transformers
    from covspec.runtime_device.client import EdgeClient
    from covspec.runtime_device.engines import load_engine
    from covspec.runtime_device.loop import GenerationConfig, generate
    from covspec.runtime_device.upload import prepare_upload
    from covspec.runtime_edge.server import BackgroundServer
    from covspec.runtime_edge.settings import EdgeSettings

    rows = []
    for label, target_path, drafter_path in targets(root):
        with quiet_transformers():
            target = load_model(str(target_path))
            engine = load_engine("torch", str(drafter_path))
        with BackgroundServer(EdgeSettings(target=str(target_path), port=0), target) as server:
            described = EdgeClient(server.url).info()["model"]["image_processor"]
            for index, photo in enumerate(photos):
                runs: dict[str, Any] = {}
                settings = {"original": {"upload_resize": False}, "lossless": {}}
                settings.update({f"q{q}": {"upload_quality": q} for q in QUALITIES})
                for name, fields in settings.items():
                    client = EdgeClient(server.url)  # a new device: the image goes up, not its hash
                    try:
                        config = GenerationConfig(max_new_tokens=MAX_NEW, **fields)
                        runs[name] = generate(engine, client, photo, PROMPT, config)
                    finally:
                        client.close()
                started = time.perf_counter()
                prepare_upload(photo, described)
                prepare_ms = (time.perf_counter() - started) * 1e3
                before = runs["original"].stats["setup_uplink_bytes"]
                row = {
                    "target": label,
                    "photo": f"photo {index} (4000x3000 JPEG q90)",
                    "original_file_bytes": len(photo),
                    "setup_uplink_bytes_before": before,
                    "device_resize_ms": round(prepare_ms, 1),
                    "identical_tokens_lossless": runs["lossless"].tokens == runs["original"].tokens,
                }
                for name in ["lossless", *(f"q{q}" for q in QUALITIES)]:
                    stats = runs[name].stats
                    row[f"setup_uplink_bytes_{name}"] = stats["setup_uplink_bytes"]
                    row[f"ratio_{name}"] = round(before / stats["setup_uplink_bytes"], 1)
                    row[f"resized_{name}"] = stats["upload_resized"]
                row["uploaded_size"] = list(prepare_upload(photo, described).size or ())
                rows.append(row)
                console.log(f"{label} photo {index}: {before} -> {row['setup_uplink_bytes_lossless']} bytes")
    return rows


def photographed(scene_image: Any, seed: int, scale: int = 8) -> bytes:
    """A demo scene as a phone would send it: ``scale`` times larger (bicubic), with sensor noise, as JPEG q90."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    side = scene_image.width * scale
    large = np.asarray(scene_image.convert("RGB").resize((side, side), Image.BICUBIC), dtype=np.float32)
    noisy = np.clip(large + rng.normal(0, 4.0, large.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(noisy).save(out, format="JPEG", quality=90)
    return out.getvalue()


def measure_accuracy(n_questions: int, console: Console) -> list[dict[str, Any]]:
    from covspec.demo import scenes
    from covspec.demo.store import ensure_pair
    from covspec.models import load_model
    from covspec.models.loading import quiet_transformers
    from covspec.runtime_device.upload import decode_rgb, prepare_upload
    from covspec.runtime_edge.service import describe_image_processor

    with quiet_transformers():
        target = load_model(str(ensure_pair().target))
    described = describe_image_processor(target)
    items = scenes.dataset("heldout", n_questions, seed=0)
    files = [photographed(item.scene.image, seed=index) for index, item in enumerate(items)]
    rows = []
    lossless_answers: list[str] = []
    for quality in (None, *QUALITIES):
        correct, same, sent, jpeg = 0, 0, 0, 0
        for index, (item, original) in enumerate(zip(items, files, strict=True)):
            upload = prepare_upload(original, described, quality=quality)
            answer = target.decode(target.generate(decode_rgb(upload.data), item.question, max_new_tokens=40))
            answer = answer.strip()
            correct += answer == item.answer
            sent += len(upload.data)
            jpeg += upload.quality is not None and upload.resized
            if quality is None:
                lossless_answers.append(answer)
            same += answer == lossless_answers[index]
        n = len(items)
        rows.append(
            {
                "upload": "lossless (PNG)" if quality is None else f"JPEG q{quality} (lossy)",
                "quality": quality,
                "n_questions": n,
                "accuracy": correct / n,
                "same_answer_as_lossless": same / n,
                "mean_image_bytes": sent / n,
                "mean_original_bytes": sum(map(len, files)) / n,
                "resized_jpeg_sent": jpeg,
            }
        )
        console.log(f"accuracy {rows[-1]['upload']}: {correct / n:.3f}")
    pristine = [target.decode(target.generate(item.scene.image, item.question, max_new_tokens=40)) for item in items]
    reference = sum(answer.strip() == item.answer for answer, item in zip(pristine, items, strict=True)) / len(items)
    rows.append(
        {"upload": "reference: the scene itself, unphotographed", "n_questions": len(items), "accuracy": reference}
    )
    return rows


# processor settings of real checkpoints (their preprocessor_config.json), with the keyword arguments their processors
# pass at call time: what their edge would publish
REAL_SETTINGS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "LLaVA-1.5 (CLIP 336)": (
        "CLIPImageProcessor",
        {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}},
        {},
    ),
    "Qwen2-VL-7B-Instruct (max_pixels 12845056)": (
        "Qwen2VLImageProcessor",
        {"size": {"shortest_edge": 56 * 56, "longest_edge": 12845056}},
        {},
    ),
    "Qwen2-VL, transformers' default (max_pixels 1280*28*28)": ("Qwen2VLImageProcessor", {}, {}),
    "Idefics3 (longest edge 1456, tiles 364)": (
        "Idefics3ImageProcessor",
        {"size": {"longest_edge": 1456}, "max_image_size": {"longest_edge": 364}, "do_image_splitting": True},
        {"return_row_col_info": True},
    ),
    "Gemma 3 (896 px)": ("Gemma3ImageProcessor", {"size": {"height": 896, "width": 896}}, {"do_pan_and_scan": False}),
}


def measure_real_settings(photos: list[bytes]) -> list[dict[str, Any]]:
    """The image payload (no framing) at real checkpoints' processor sizes, lossless and JPEG q75."""
    import transformers

    from covspec.runtime_device.upload import prepare_upload

    rows = []
    for label, (name, config, call_kwargs) in REAL_SETTINGS.items():
        instance = getattr(transformers, name)(**config)
        described = {
            "class": name,
            "backend": instance.backend,
            "config": instance.to_dict(),
            "call_kwargs": call_kwargs,
        }
        described = json.loads(json.dumps(described))
        lossless = [prepare_upload(photo, described) for photo in photos]
        lossy = [prepare_upload(photo, described, quality=75) for photo in photos]
        rows.append(
            {
                "processor": label,
                "original_bytes": float(np.mean([len(p) for p in photos])),
                "lossless_bytes": float(np.mean([len(u.data) for u in lossless])),
                "q75_bytes": float(np.mean([len(u.data) for u in lossy])),
                "resized": all(u.resized for u in lossless),
                "size": list(lossless[0].size) if lossless[0].size else None,
                "fallback": lossless[0].fallback,
            }
        )
    return rows


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    by_target: dict[str, list[dict[str, Any]]] = {}
    for row in result["bytes"]:
        by_target.setdefault(row["target"], []).append(row)
    names = ["before", "lossless", *(f"q{q}" for q in QUALITIES)]
    width = 0.8 / len(by_target)
    for i, (label, rows) in enumerate(by_target.items()):
        means = [np.mean([r[f"setup_uplink_bytes_{n}"] for r in rows]) for n in names]
        left.bar(np.arange(len(names)) + i * width, means, width, label=label)
    left.set_xticks(np.arange(len(names)) + width * (len(by_target) - 1) / 2, ["original", *names[1:]])
    left.set_yscale("log")
    left.set_ylabel("setup uplink bytes per generation (mean over photos)")
    left.set_title("12 MP phone photo, real edge on 127.0.0.1")
    left.legend(fontsize=8)
    acc = [r for r in result["accuracy"] if "mean_image_bytes" in r]
    xs = np.arange(len(acc))
    right.bar(xs, [r["accuracy"] for r in acc], color=["tab:green"] + ["tab:orange"] * (len(acc) - 1))
    right.set_xticks(xs, [r["upload"].replace(" (lossy)", "") for r in acc])
    right.set_ylim(0, 1.15)
    right.set_ylabel(f"demo target accuracy ({acc[0]['n_questions']} held-out questions)")
    for x, r in zip(xs, acc, strict=True):
        right.text(x, r["accuracy"] + 0.02, f"{r['accuracy']:.2f}\n{r['mean_image_bytes']:.0f} B", ha="center")
    right.set_title("lossy upload quality vs accuracy (demo target)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/upload"))
    parser.add_argument("--photos", type=int, default=3)
    parser.add_argument("--questions", type=int, default=100)
    args = parser.parse_args(argv)
    console = Console(width=160)
    started = time.perf_counter()
    photos = [phone_photo(seed) for seed in range(args.photos)]
    with tempfile.TemporaryDirectory() as tmp:
        byte_rows = measure_bytes(photos, Path(tmp), console)
    accuracy_rows = measure_accuracy(args.questions, console)
    real_rows = measure_real_settings(photos)
    result = {
        "description": __doc__,
        "uplink_bits_per_s_for_times": UPLINK_BITS_PER_S,
        "bytes": byte_rows,
        "accuracy": accuracy_rows,
        "real_settings": real_rows,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "upload.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "upload.png")

    table = Table(title="setup uplink bytes per generation (12 MP photo)")
    for column in ("photo", "target", "before", "lossless", "ratio", *(f"q{q}" for q in QUALITIES), "10 Mbit/s"):
        table.add_column(column)
    for r in byte_rows:
        seconds = f"{r['setup_uplink_bytes_before'] * 8 / UPLINK_BITS_PER_S:.2f} s -> "
        seconds += f"{r['setup_uplink_bytes_lossless'] * 8 / UPLINK_BITS_PER_S * 1e3:.1f} ms"
        table.add_row(
            r["photo"].split(" (")[0],
            r["target"],
            str(r["setup_uplink_bytes_before"]),
            str(r["setup_uplink_bytes_lossless"]),
            f"{r['ratio_lossless']}x",
            *(str(r[f"setup_uplink_bytes_q{q}"]) for q in QUALITIES),
            seconds,
        )
    console.print(table)
    acc = Table(title="demo target accuracy by upload")
    for column in ("upload", "accuracy", "same answer as lossless", "mean image bytes"):
        acc.add_column(column)
    for r in accuracy_rows:
        same, sent = r.get("same_answer_as_lossless"), r.get("mean_image_bytes")
        acc.add_row(r["upload"], f"{r['accuracy']:.3f}", "" if same is None else f"{same:.3f}", f"{sent or 0:.0f}")
    console.print(acc)
    real = Table(title="image payload at real checkpoints' processor settings (12 MP photo, mean; no edge)")
    for column in ("processor", "original", "lossless", "ratio", "q75", "sent size", "fallback"):
        real.add_column(column)
    for r in real_rows:
        real.add_row(
            r["processor"],
            f"{r['original_bytes']:.0f}",
            f"{r['lossless_bytes']:.0f}",
            f"{r['original_bytes'] / r['lossless_bytes']:.1f}x",
            f"{r['q75_bytes']:.0f}",
            "x".join(map(str, r["size"] or ())),
            r["fallback"] or "",
        )
    console.print(real)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
