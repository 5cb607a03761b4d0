"""Train the demo pair on synthetic scenes: the target by teacher forcing, then the drafter distilled from it.

1. Target: (image, question) -> answer with teacher forcing; the loss covers the answer tokens and EOS only.
2. Drafter: online logit distillation. On the same kind of batches, the frozen target scores every answer position and
   the drafter minimises KL(target || drafter) there, plus a small cross-entropy on the reference answer.

Every batch is fresh: step ``s`` uses training scenes ``s * batch_size ..`` of ``scenes.dataset``'s training range,
so nothing is seen twice and the held-out split stays unseen. Deterministic for a (config, seed) on one machine and
thread count. Nothing is printed: pass a ``rich.progress.Progress`` to see bars.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covspec.demo import scenes
from covspec.demo.pair import (
    DRAFTER_SIZE,
    TARGET_SIZE,
    ModelSize,
    TextSize,
    VisionSize,
    build_model,
    num_parameters,
    render_prompt,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

PAIR_FORMAT = 1  # bump when scenes, the architecture or the recipe change in a way the config does not show
TRAIN_INFO = "covspec_demo_pair.json"


@dataclass(frozen=True)
class StageConfig:
    steps: int
    batch_size: int
    lr: float
    warmup: int = 50
    weight_decay: float = 0.01


@dataclass(frozen=True)
class TrainConfig:
    target_size: ModelSize = TARGET_SIZE
    drafter_size: ModelSize = DRAFTER_SIZE
    target: StageConfig = StageConfig(steps=1500, batch_size=48, lr=2e-3)
    drafter: StageConfig = StageConfig(steps=800, batch_size=48, lr=3e-3)
    distill_temperature: float = 1.0
    label_weight: float = 0.1  # weight of the reference-answer cross-entropy beside the KL to the target
    threads: int = 2

    @classmethod
    def reduced(cls) -> TrainConfig:
        """A pair that trains in seconds (tests): small models, few steps; its target learns the answer formats
        and part of what the picture shows."""
        small_target = ModelSize(
            vision=VisionSize(hidden=48, intermediate=96, layers=1, heads=2, image=64, patch=16),
            text=TextSize(hidden=64, intermediate=128, layers=2, heads=2, kv_heads=1),
        )
        small_drafter = ModelSize(
            vision=VisionSize(hidden=16, intermediate=32, layers=1, heads=1, image=64, patch=16),
            text=TextSize(hidden=32, intermediate=64, layers=1, heads=2, kv_heads=1),
        )
        return cls(
            target_size=small_target,
            drafter_size=small_drafter,
            target=StageConfig(steps=150, batch_size=32, lr=3e-3, warmup=15),
            drafter=StageConfig(steps=30, batch_size=32, lr=3e-3, warmup=5),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self, seed: int) -> str:
        """sha256 of everything that determines the trained weights (config, seed, format version)."""
        payload = json.dumps({"config": self.to_dict(), "seed": seed, "format": PAIR_FORMAT}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class PairPaths:
    root: Path
    target: Path = field(init=False)
    drafter: Path = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", self.root / "target")
        object.__setattr__(self, "drafter", self.root / "drafter")

    @property
    def info(self) -> Path:
        return self.root / TRAIN_INFO

    def exists(self) -> bool:
        return self.info.is_file() and (self.target / "config.json").is_file() and (self.drafter / "config.json").is_file()


# --------------------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------------------


class Encoder:
    """Turns QA items into model inputs for one processor (prompt ids cached per question)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.eos = int(self.tokenizer.eos_token_id)
        self.pad = int(self.tokenizer.pad_token_id)
        self._prompts: dict[str, list[int]] = {}
        self._answers: dict[str, list[int]] = {}
        self._blank = scenes.make_scene(0).image

    def prompt_ids(self, question: str) -> list[int]:
        if question not in self._prompts:
            text = render_prompt(self.processor, question)
            out = self.processor(text=text, images=[self._blank])
            self._prompts[question] = [int(t) for t in out["input_ids"][0]]
        return self._prompts[question]

    def answer_ids(self, answer: str) -> list[int]:
        if answer not in self._answers:
            self._answers[answer] = [int(t) for t in self.tokenizer(answer, add_special_tokens=False)["input_ids"]]
        return self._answers[answer] + [self.eos]

    def batch(self, items: list[scenes.QAItem]) -> dict[str, Any]:
        """input_ids / attention_mask / pixel_values, and (answer_rows, answer_ids, answer_mask): the logits rows
        that predict each answer token, the tokens, and which of the [B, A] slots are real."""
        import torch

        prompts = [self.prompt_ids(it.question) for it in items]
        answers = [self.answer_ids(it.answer) for it in items]
        length = max(len(p) + len(a) for p, a in zip(prompts, answers, strict=True))
        width = max(len(a) for a in answers)
        input_ids = torch.full((len(items), length), self.pad, dtype=torch.long)
        attention = torch.zeros((len(items), length), dtype=torch.long)
        rows = torch.zeros((len(items), width), dtype=torch.long)
        targets = torch.full((len(items), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.bool)
        for b, (p, a) in enumerate(zip(prompts, answers, strict=True)):
            seq = p + a
            input_ids[b, : len(seq)] = torch.tensor(seq)
            attention[b, : len(seq)] = 1
            rows[b, : len(a)] = torch.arange(len(p) - 1, len(p) - 1 + len(a))
            targets[b, : len(a)] = torch.tensor(a)
            mask[b, : len(a)] = True
        pixels = self.processor.image_processor([it.scene.image for it in items], return_tensors="pt")["pixel_values"]
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "pixel_values": pixels,
            "answer_rows": rows,
            "answer_ids": targets,
            "answer_mask": mask,
        }


def answer_logits(model: Any, batch: dict[str, Any]) -> Any:
    """[B, A, V] logits at the rows that predict the answer tokens."""
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"]
    )
    rows = batch["answer_rows"]
    index = rows.unsqueeze(-1).expand(-1, -1, out.logits.shape[-1])
    return out.logits.gather(1, index)


def _train_items(step: int, stage: StageConfig, seed: int, salt: int) -> list[scenes.QAItem]:
    """The batch of step ``step``: fresh training scenes (the drafter stage reads a separate stretch, ``salt``)."""
    start = salt * (1 << 19) + step * stage.batch_size
    return scenes.dataset("train", stage.batch_size, seed=seed, start=start)


def _schedule(stage: StageConfig) -> Any:
    def factor(step: int) -> float:
        if step < stage.warmup:
            return (step + 1) / stage.warmup
        progress = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _optimizer(model: Any, stage: StageConfig) -> tuple[Any, Any]:
    import torch

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": stage.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=stage.lr,
        betas=(0.9, 0.98),
    )
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, _schedule(stage))


def _train_target(model: Any, encoder: Encoder, stage: StageConfig, seed: int, tick: Any) -> list[float]:
    import torch
    import torch.nn.functional as F

    opt, sched = _optimizer(model, stage)
    model.train()
    losses = []
    for step in range(stage.steps):
        batch = encoder.batch(_train_items(step, stage, seed, salt=0))
        logits = answer_logits(model, batch)
        mask = batch["answer_mask"]
        loss = F.cross_entropy(logits[mask], batch["answer_ids"][mask])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss))
        tick(loss=float(loss))
    model.eval()
    return losses


def _distil_drafter(
    drafter: Any,
    target: Any,
    d_encoder: Encoder,
    t_encoder: Encoder,
    stage: StageConfig,
    config: TrainConfig,
    seed: int,
    tick: Any,
) -> list[float]:
    import torch
    import torch.nn.functional as F

    opt, sched = _optimizer(drafter, stage)
    drafter.train()
    target.eval()
    temp = config.distill_temperature
    losses = []
    for step in range(stage.steps):
        items = _train_items(step, stage, seed, salt=1)
        t_batch = t_encoder.batch(items)
        d_batch = d_encoder.batch(items)
        mask = d_batch["answer_mask"]
        with torch.no_grad():
            teacher = F.log_softmax(answer_logits(target, t_batch)[mask] / temp, dim=-1)
        student_logits = answer_logits(drafter, d_batch)[mask]
        student = F.log_softmax(student_logits / temp, dim=-1)
        kl = F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temp**2
        ce = F.cross_entropy(student_logits, d_batch["answer_ids"][mask])
        loss = kl + config.label_weight * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(drafter.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss))
        tick(loss=float(loss))
    drafter.eval()
    return losses


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def train_pair(out: Path | str, config: TrainConfig | None = None, seed: int = 0, progress: Any = None) -> PairPaths:
    """Train target then drafter and save both (``save_pretrained``) under ``out/target`` and ``out/drafter``, with
    ``out/covspec_demo_pair.json`` recording config, seed, digest, parameter counts, losses and times.

    ``progress``: an optional ``rich.progress.Progress`` to add one bar per stage to.
    """
    import torch

    from covspec.models.common import tokenizer_hash
    from covspec.models.tiny import tiny_tokenizer

    config = config or TrainConfig()
    paths = PairPaths(Path(out))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        tokenizer = tiny_tokenizer("llava")
        torch.manual_seed(seed * 1_000_003 + 1)
        target, t_processor = build_model(config.target_size, tokenizer)
        torch.manual_seed(seed * 1_000_003 + 2)
        drafter, d_processor = build_model(config.drafter_size, tokenizer)
        t_encoder, d_encoder = Encoder(t_processor), Encoder(d_processor)

        started = time.perf_counter()
        t_losses = _train_target(
            target, t_encoder, config.target, seed, _ticker(progress, "target", config.target.steps)
        )
        t_seconds = time.perf_counter() - started
        started = time.perf_counter()
        d_losses = _distil_drafter(
            drafter,
            target,
            d_encoder,
            t_encoder,
            config.drafter,
            config,
            seed,
            _ticker(progress, "drafter (distil)", config.drafter.steps),
        )
        d_seconds = time.perf_counter() - started
        save_checkpoint(target, t_processor, paths.target)
        save_checkpoint(drafter, d_processor, paths.drafter)
        info = {
            "format": PAIR_FORMAT,
            "seed": seed,
            "digest": config.digest(seed),
            "config": config.to_dict(),
            "tokenizer_hash": tokenizer_hash(tokenizer),
            "parameters": {"target": num_parameters(target), "drafter": num_parameters(drafter)},
            "train_seconds": {"target": round(t_seconds, 2), "drafter": round(d_seconds, 2)},
            "final_loss": {"target": _tail_mean(t_losses), "drafter": _tail_mean(d_losses)},
            "torch": torch.__version__,
            "threads": config.threads,
        }
        paths.info.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    finally:
        torch.set_num_threads(previous_threads)
    return paths


def _tail_mean(values: list[float], n: int = 20) -> float:
    tail = values[-n:]
    return round(float(np.mean(tail)), 5) if tail else float("nan")


def _ticker(progress: Any, label: str, total: int) -> Any:
    if progress is None:
        return lambda **_: None
    task = progress.add_task(label, total=total, loss=float("nan"))

    def tick(loss: float) -> None:
        progress.update(task, advance=1, loss=loss)

    return tick


__all__ = ["Encoder", "PairPaths", "StageConfig", "TrainConfig", "answer_logits", "train_pair"]
