"""The shipped demo pair: the default ``TrainConfig`` at seed 0, stored in the package as fp16 safetensors.

Why shipped rather than trained on first use: the full pair takes about 21-25 minutes on two CPU cores (see
``covspec/demo/README.md``), over the 10-minute budget for a first run. Stored as fp16 it is about 3 MB. Its
``config.json`` says ``float32``, so ``from_pretrained`` (dtype "auto") and ``covspec.models.load_model`` compute in
float32; only storage is halved.

Rebuild (the exact command that produced the shipped files; ``provenance.json`` beside them records it with the seed,
config digest, sha256 of every file and the evaluation of the stored weights)::

    python -m covspec.demo.ship --threads 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from covspec.demo.train import PairPaths, TrainConfig, quiet_transformers, train_pair

SHIPPED_DIR = Path(__file__).resolve().parent / "weights" / "demo-pair-v1"
PROVENANCE = "provenance.json"
COMMAND = "python -m covspec.demo.ship --threads 1"


def shipped_pair() -> PairPaths | None:
    """The pair inside the package, if present and built from the current default config at seed 0."""
    paths = PairPaths(SHIPPED_DIR)
    if not paths.exists():
        return None
    info = json.loads(paths.info.read_text())
    return paths if info.get("digest") == TrainConfig().digest(0) else None


def store_fp16(source: PairPaths, out: Path) -> PairPaths:
    """Copy a trained pair to ``out`` with fp16 weights (config kept at float32, so loading computes in float32)."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    dest = PairPaths(out)
    with quiet_transformers():
        for src, dst in ((source.target, dest.target), (source.drafter, dest.drafter)):
            model = LlavaForConditionalGeneration.from_pretrained(src, dtype=torch.float32)
            model.to(torch.float16).save_pretrained(dst)
            config_file = dst / "config.json"
            config = json.loads(config_file.read_text())
            _set_dtype(config, "float32")
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            AutoProcessor.from_pretrained(src).save_pretrained(dst)
    shutil.copy2(source.info, dest.info)
    return dest


def _set_dtype(config: dict[str, Any], dtype: str) -> None:
    for key, value in config.items():
        if key in ("dtype", "torch_dtype"):
            config[key] = dtype
        elif isinstance(value, dict):
            _set_dtype(value, dtype)


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative paths, sorted), the provenance file excluded."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != PROVENANCE
    }


def build(out: Path = SHIPPED_DIR, seed: int = 0, threads: int = 1, n_heldout: int = 300) -> dict[str, Any]:
    """Train the default pair, evaluate it, store it as fp16 in ``out``, evaluate the stored copy, write provenance."""
    import dataclasses

    config = dataclasses.replace(TrainConfig(), threads=threads)
    with tempfile.TemporaryDirectory(prefix="covspec-ship-") as tmp:
        trained = train_pair(Path(tmp) / "pair", config, seed=seed)
        return finish(trained, out, seed, threads, n_heldout)


def finish(trained: PairPaths, out: Path, seed: int, threads: int, n_heldout: int) -> dict[str, Any]:
    """The steps of ``build`` after training: evaluate, store as fp16, evaluate the stored copy, write provenance."""
    from covspec.demo.evaluate import evaluate_pair

    info = json.loads(trained.info.read_text())
    if info["digest"] != TrainConfig().digest(seed):
        raise ValueError(f"{trained.root} was not trained from the default config at seed {seed}")
    fp32_scores = evaluate_pair(trained, n_heldout, threads=threads)
    if out.exists():
        shutil.rmtree(out)
    stored = store_fp16(trained, out)
    fp16_scores = evaluate_pair(stored, n_heldout, threads=threads)
    provenance = {
        "command": COMMAND if (seed, threads, n_heldout) == (0, 1, 300) else _command(seed, threads, n_heldout),
        "seed": seed,
        "digest": info["digest"],
        "train_info": info,
        "evaluation_fp32": fp32_scores,
        "evaluation_stored": fp16_scores,
        "sha256": file_hashes(out),
    }
    (out / PROVENANCE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return provenance


def _command(seed: int, threads: int, n_heldout: int) -> str:
    return f"python -m covspec.demo.ship --seed {seed} --threads {threads} --n-heldout {n_heldout}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-heldout", type=int, default=300)
    args = parser.parse_args(argv)
    provenance = build(args.out, args.seed, args.threads, args.n_heldout)
    summary = {k: provenance["evaluation_stored"][k] for k in ("target_accuracy", "drafter_accuracy", "aal")}
    print(json.dumps({"out": str(args.out), "digest": provenance["digest"], **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["SHIPPED_DIR", "build", "file_hashes", "finish", "shipped_pair", "store_fp16"]
