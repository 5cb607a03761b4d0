"""The shipped demo pair: the default ``TrainConfig`` at seed 0, stored in the package as fp16 safetensors.

Why shipped rather than trained on first use: the recipe (a 2.3M-parameter target, 3200 steps of 64 questions, then
1000 distillation steps) takes about 90 minutes on two CPU cores, far over the 10-minute first-use budget. Stored as
fp16 it is about 5 MB. Its ``config.json`` says ``float32``, so ``from_pretrained`` (dtype "auto") and
``covspec.models.load_model`` compute in float32; only storage is halved.

Rebuild (the exact commands that produced the shipped files; ``provenance.json`` beside them records them with the
seed, config digest, training device, sha256 of every file and the evaluation of the stored weights)::

    python -m covspec.demo.ship --train-only --trained DIR --seed 0 --device cpu --threads 1 --workers 0
    python -m covspec.demo.ship --from-trained DIR --seed 0 --threads 1     # evaluate, store, record

(``python -m covspec.demo.ship`` alone does both; ``--device cuda --workers 14`` trains on a GPU.)
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

from covspec.demo.train import PairPaths, TrainConfig, train_pair
from covspec.models.loading import quiet_transformers

SHIPPED_DIR = Path(__file__).resolve().parent / "weights" / "demo-pair-v4"
PROVENANCE = "provenance.json"


def shipped_pair() -> PairPaths | None:
    """The pair inside the package, if present and built from the current default config at seed 0."""
    paths = PairPaths(SHIPPED_DIR)
    if not paths.exists():
        return None
    info = json.loads(paths.info.read_text())
    return paths if info.get("digest") == TrainConfig().digest(0) else None


def shipped_target_for(drafter: str | Path | None) -> Path | None:
    """The shipped demo target when ``drafter`` (a checkpoint folder, e.g. a bundle's ``source.model``) is the shipped
    demo drafter, else None: the pair whose AAL a quantized demo drafter is judged by, and so the default ``--target``
    of ``covspec quantize`` and ``covspec export``."""
    if not drafter:
        return None
    try:
        if Path(drafter).resolve() == (SHIPPED_DIR / "drafter").resolve():
            return SHIPPED_DIR / "target"
    except OSError:
        return None
    return None


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


def train(
    trained: Path,
    seed: int = 0,
    threads: int = 1,
    device: str = "cpu",
    workers: int = 0,
    target_from: Path | None = None,
) -> PairPaths:
    """Train the default pair (fp32) into ``trained``, with progress bars on stderr; ``target_from``: a target the
    default recipe already trained (the drafter alone is trained)."""
    import dataclasses

    from covspec.demo.train import training_progress

    config = dataclasses.replace(TrainConfig(), threads=threads, device=device, workers=workers)
    with training_progress(transient=False) as progress:
        return train_pair(trained, config, seed=seed, progress=progress, target_from=target_from)


def build(
    out: Path = SHIPPED_DIR,
    seed: int = 0,
    threads: int = 1,
    n_heldout: int = 300,
    device: str = "cpu",
    workers: int = 0,
) -> dict[str, Any]:
    """Train the default pair, evaluate it, store it as fp16 in ``out``, evaluate the stored copy, write provenance."""
    with tempfile.TemporaryDirectory(prefix="covspec-ship-") as tmp:
        trained = train(Path(tmp) / "pair", seed, threads, device, workers)
        commands = [_command(["--seed", seed, "--threads", threads, "--device", device, "--workers", workers])]
        return finish(trained, out, seed, threads, n_heldout, commands)


def finish(
    trained: PairPaths, out: Path, seed: int, threads: int, n_heldout: int, commands: list[str]
) -> dict[str, Any]:
    """The steps of ``build`` after training: evaluate, store as fp16, evaluate the stored copy, write provenance
    (``commands``: the commands that produced the files, in order)."""
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
        "commands": commands,
        "seed": seed,
        "digest": info["digest"],
        "train_info": info,
        "evaluation_fp32": fp32_scores,
        "evaluation_stored": fp16_scores,
        "sha256": file_hashes(out),
    }
    (out / PROVENANCE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return provenance


def _command(args: list[Any]) -> str:
    return " ".join(["python -m covspec.demo.ship", *(str(a) for a in args)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR, help="where the fp16 pair and provenance go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (training on CPU, evaluation)")
    parser.add_argument("--n-heldout", type=int, default=300)
    parser.add_argument("--device", default="cpu", help="torch device to train on")
    parser.add_argument("--workers", type=int, default=0, help="processes building training batches")
    parser.add_argument("--trained", type=Path, help="with --train-only: where the fp32 pair goes")
    parser.add_argument("--train-only", action="store_true", help="train the fp32 pair into --trained and stop")
    parser.add_argument("--from-trained", type=Path, help="skip training: evaluate, store and record this fp32 pair")
    parser.add_argument("--target-from", type=Path, help="with --train-only: reuse this target, train the drafter")
    args = parser.parse_args(argv)
    if args.train_only:
        if args.trained is None:
            parser.error("--train-only needs --trained DIR")
        paths = train(args.trained, args.seed, args.threads, args.device, args.workers, args.target_from)
        print(json.dumps({"trained": str(paths.root), "digest": TrainConfig().digest(args.seed)}))
        return 0
    if args.from_trained is not None:
        trained = PairPaths(args.from_trained)
        info = json.loads(trained.info.read_text())
        train_args = ["--train-only", "--trained", "DIR", "--seed", args.seed, "--device", info.get("device", "cpu")]
        train_args += ["--threads", info.get("threads", 1)]  # on a CPU the thread count moves last bits
        if info.get("target_from"):
            train_args += ["--target-from", info["target_from"]]
        commands = [
            _command([*train_args, "--workers", info.get("workers", 0)]),
            _command(["--from-trained", "DIR", "--seed", args.seed, "--threads", args.threads]),
        ]
        provenance = finish(trained, args.out, args.seed, args.threads, args.n_heldout, commands)
    else:
        provenance = build(args.out, args.seed, args.threads, args.n_heldout, args.device, args.workers)
    summary = {k: provenance["evaluation_stored"][k] for k in ("target_accuracy", "drafter_accuracy", "aal")}
    print(json.dumps({"out": str(args.out), "digest": provenance["digest"], **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = [
    "SHIPPED_DIR",
    "build",
    "file_hashes",
    "finish",
    "shipped_pair",
    "shipped_target_for",
    "store_fp16",
    "train",
]
