"""Train the demo pair on synthetic scenes: the target by teacher forcing, then the drafter distilled from it.

1. Target: (image, question) -> answer with teacher forcing; the loss covers the answer tokens and EOS only.
2. Drafter: online logit distillation. On the same kind of batches, the frozen target scores every answer position and
   the drafter minimises KL(target || drafter) there, plus a small cross-entropy on the reference answer.

Both stages add a training-only ``PatchProbe`` loss (what each cell holds, read from the projected visual tokens);
the probe is not saved, so the checkpoints stay plain LLaVA.

Every batch is fresh: step ``s`` uses training scenes ``s * batch_size ..`` of ``scenes.dataset``'s training range,
so nothing is seen twice and the held-out split stays unseen. A batch is a pure function of its step, so building
batches in worker processes (``TrainConfig.workers``) changes nothing but speed. Deterministic for a (config, seed)
on one machine, device and thread count. Nothing is printed: pass a ``rich.progress.Progress`` to see bars.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covspec.demo import scenes
from covspec.demo.pair import (
    DRAFTER_SIZE,
    INIT_RANGE,
    TARGET_SIZE,
    ModelSize,
    TextSize,
    VisionSize,
    build_model,
    num_parameters,
    render_prompt,
    save_checkpoint,
)
from covspec.distill import adamw_with_schedule, distillation_loss
from covspec.distill.train import training_progress
from covspec.models.loading import quiet_transformers

logger = logging.getLogger(__name__)

PAIR_FORMAT = 2  # bump when scenes, the architecture or the recipe change in a way the config does not show
TRAIN_INFO = "covspec_demo_pair.json"
LOSS_READ_EVERY = 16  # steps between reads of the training loss from the device (progress bars move as often)
IGNORE = -100  # label of a probe slot that has no answer (cross-entropy's ignore_index)
SCENES_PER_STAGE = scenes.SEED_STRIDE // 2  # the target reads the first half of a seed's training scenes, the drafter
# the second
# Settings that change speed, not what is trained: left out of ``TrainConfig.digest``.
_RUNTIME_FIELDS = ("threads", "device", "workers")
# Fields added after PAIR_FORMAT 2 pairs were trained, with the value those pairs had: hashed only when they differ, so
# a pair trained before a field existed keeps its digest.
_LATER_FIELDS: dict[str, Any] = {"relation_probe": False, "task_weights": ()}


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
    target: StageConfig = StageConfig(steps=3200, batch_size=64, lr=1.5e-3, warmup=150)
    drafter: StageConfig = StageConfig(steps=1000, batch_size=64, lr=2e-3, warmup=100)
    distill_temperature: float = 1.0
    init_range: float = INIT_RANGE
    label_weight: float = 0.1  # weight of the reference-answer cross-entropy beside the KL to the target
    probe_weight: float = 1.0  # weight of the training-only patch probe (see ``PatchProbe``); 0 turns it off
    relation_probe: bool = True  # the probe also predicts each object's left and right neighbours
    tasks: tuple[str, ...] = scenes.TASKS  # question tasks trained on
    # how often each of ``tasks`` is asked in training (empty: uniformly); left and right twice as often as the rest
    task_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 1.0)
    max_objects: int = scenes.MAX_OBJECTS  # objects per training scene: 1..max_objects
    # torch threads while training; not part of ``digest`` (it moves last bits, not quality). Measured here: two
    # threads are ~10% faster than one on an idle machine, but several times slower when another process is busy.
    threads: int = 2
    device: str = "cpu"  # torch device to train on ("cuda" for the shipped pair; see ship.py)
    workers: int = 0  # processes building batches beside the training loop (0: in the loop)

    def __post_init__(self) -> None:
        scenes.check_task_weights(self.tasks, self.task_weights)  # fail at configuration, not at the first batch

    @classmethod
    def reduced(cls) -> TrainConfig:
        """A pair that trains in seconds (tests): small models, one-object scenes, colour and shape questions only,
        150 target steps. Its target answers most held-out questions of that kind (it has to look to do so)."""
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
            tasks=("colour", "shape"),
            task_weights=(),
            max_objects=1,
            relation_probe=False,  # one object per scene: no neighbours to learn
            threads=1,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self, seed: int) -> str:
        """sha256 of everything that determines the trained weights (config, seed, format version)."""
        config = {
            k: v
            for k, v in self.to_dict().items()
            if k not in _RUNTIME_FIELDS and not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])
        }
        payload = json.dumps({"config": config, "seed": seed, "format": PAIR_FORMAT}, sort_keys=True)
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
        return (
            self.info.is_file() and (self.target / "config.json").is_file() and (self.drafter / "config.json").is_file()
        )


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


def patch_labels(items: list[scenes.QAItem], relations: bool = False) -> Any:
    """[B, GRID * GRID, 3] per visual token (raster order): colour (0 none, 1..), shape (0 none, 1..), size
    (0 none, 1 small, 2 large) of the object drawn in that cell. With ``relations``, four more columns for cells
    that hold an object: the colour and shape of its nearest neighbour to the left, then to the right (0: none on
    that side; -100, ignored, for empty cells)."""
    import torch

    colours, sizes = list(scenes.COLOURS), list(scenes.SIZES)
    width = 7 if relations else 3
    labels = torch.zeros((len(items), scenes.GRID * scenes.GRID, width), dtype=torch.long)
    if relations:
        labels[..., 3:] = IGNORE
    for b, item in enumerate(items):
        objects = item.scene.objects  # left to right
        for i, obj in enumerate(objects):
            cell = obj.row * scenes.GRID + obj.column
            labels[b, cell, 0] = colours.index(obj.colour) + 1
            labels[b, cell, 1] = scenes.SHAPES.index(obj.shape) + 1
            labels[b, cell, 2] = sizes.index(obj.size) + 1
            if relations:
                left = objects[i - 1] if i > 0 else None
                right = objects[i + 1] if i + 1 < len(objects) else None
                for column, neighbour in ((3, left), (5, right)):
                    labels[b, cell, column] = 0 if neighbour is None else colours.index(neighbour.colour) + 1
                    labels[b, cell, column + 1] = 0 if neighbour is None else scenes.SHAPES.index(neighbour.shape) + 1
    return labels


class PatchProbe:
    """Training-only linear probe on the projected visual tokens (what the language model reads), predicting the
    colour, shape and size drawn in each cell. It gives the vision tower a direct signal from the first step, so the
    language model need not find the picture through its own loss alone (which stalls on CPU-sized budgets at the
    blind, answer-prior solution). The probe is not part of the saved checkpoint.

    ``relations``: each object's cell also predicts its left and right neighbours (``patch_labels``), so the vision
    tower puts "what is beside me" into the token the language model already finds for "the red circle"."""

    def __init__(self, model: Any, size: ModelSize, device: str = "cpu", relations: bool = False) -> None:
        import torch

        grid = size.vision.image // size.vision.patch
        if grid != scenes.GRID:
            raise ValueError(f"the patch probe needs a {scenes.GRID}x{scenes.GRID} patch grid, got {grid}x{grid}")
        cell = (len(scenes.COLOURS) + 1, len(scenes.SHAPES) + 1, len(scenes.SIZES) + 1)
        neighbour = (len(scenes.COLOURS) + 1, len(scenes.SHAPES) + 1)
        self.classes = cell + (neighbour * 2 if relations else ())
        self.head = torch.nn.Linear(size.text.hidden, sum(self.classes), device=device)
        self._features: Any = None
        self._hook = model.model.multi_modal_projector.register_forward_hook(self._capture)

    def parameters(self) -> Any:
        return self.head.parameters()

    def remove(self) -> None:
        self._hook.remove()

    def _capture(self, module: Any, inputs: Any, output: Any) -> None:
        self._features = output

    def loss(self, labels: Any) -> Any:
        import torch.nn.functional as F

        logits = self.head(self._features.reshape(labels.shape[0], labels.shape[1], -1))
        total, start = 0.0, 0
        for i, n in enumerate(self.classes):
            part = logits[..., start : start + n].reshape(-1, n)
            total = total + F.cross_entropy(part, labels[..., i].reshape(-1), ignore_index=IGNORE)
            start += n
        return total


def answer_logits(model: Any, batch: dict[str, Any]) -> Any:
    """[B, A, V] logits at the rows that predict the answer tokens."""
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"]
    )
    rows = batch["answer_rows"]
    index = rows.unsqueeze(-1).expand(-1, -1, out.logits.shape[-1])
    return out.logits.gather(1, index)


def _train_items(step: int, stage: StageConfig, config: TrainConfig, seed: int, salt: int) -> list[scenes.QAItem]:
    """The batch of step ``step``: fresh training scenes (the drafter stage reads a separate stretch, ``salt``)."""
    start = salt * SCENES_PER_STAGE + step * stage.batch_size
    return scenes.dataset(
        "train",
        stage.batch_size,
        seed=seed,
        start=start,
        tasks=config.tasks,
        max_objects=config.max_objects,
        weights=config.task_weights,
    )


class StepBatches:
    """The batches of one stage indexed by step: for each encoder its model inputs, plus the patch labels. A map-style
    dataset, so a ``DataLoader`` can build them in worker processes, in step order."""

    def __init__(
        self, encoders: tuple[Encoder, ...], stage: StageConfig, config: TrainConfig, seed: int, salt: int
    ) -> None:
        self.encoders, self.stage, self.config, self.seed, self.salt = encoders, stage, config, seed, salt

    def __len__(self) -> int:
        return self.stage.steps

    def __getitem__(self, step: int) -> tuple[list[dict[str, Any]], Any]:
        items = _train_items(step, self.stage, self.config, self.seed, self.salt)
        return [encoder.batch(items) for encoder in self.encoders], patch_labels(items, self.config.relation_probe)


def _iterate(batches: StepBatches, config: TrainConfig) -> Any:
    """Yield ``(inputs per encoder, patch labels)`` for every step, on ``config.device``."""
    if config.workers > 0:
        from torch.utils.data import DataLoader

        source: Any = DataLoader(batches, batch_size=None, shuffle=False, num_workers=config.workers, prefetch_factor=4)
    else:
        source = (batches[step] for step in range(len(batches)))
    for inputs, labels in source:
        moved = [{k: v.to(config.device) for k, v in batch.items()} for batch in inputs]
        yield moved, labels.to(config.device)


def _optimizer(model: Any, stage: StageConfig, probe: PatchProbe | None = None) -> tuple[Any, Any]:
    named = list(model.named_parameters()) + (list(probe.head.named_parameters()) if probe is not None else [])
    return adamw_with_schedule(
        named, lr=stage.lr, weight_decay=stage.weight_decay, steps=stage.steps, warmup=stage.warmup
    )


def _run_stage(
    model: Any, size: ModelSize, batches: StepBatches, config: TrainConfig, stage_loss: Any, tick: Any
) -> list[float]:
    """The loop both stages share: AdamW on the stage's schedule with a training-only patch probe beside ``model``;
    each step minimises ``stage_loss(inputs)`` plus the probe's loss, gradients clipped to norm 1. Losses are read
    back from the device every ``LOSS_READ_EVERY`` steps, not every step (a read waits for the device)."""
    import torch

    probe = PatchProbe(model, size, config.device, config.relation_probe) if config.probe_weight > 0 else None
    opt, sched = _optimizer(model, batches.stage, probe)
    params = [p for group in opt.param_groups for p in group["params"]]
    model.train()
    losses: list[float] = []
    pending: list[Any] = []
    for inputs, labels in _iterate(batches, config):
        loss = stage_loss(inputs)
        pending.append(loss.detach())
        if probe is not None:
            loss = loss + config.probe_weight * probe.loss(labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if len(pending) == LOSS_READ_EVERY or len(losses) + len(pending) == len(batches):
            read = torch.stack(pending).tolist()
            losses.extend(read)
            pending.clear()
            tick(advance=len(read), loss=read[-1])
    if probe is not None:
        probe.remove()
    model.eval()
    return losses


def _train_target(
    model: Any, encoder: Encoder, stage: StageConfig, config: TrainConfig, seed: int, tick: Any
) -> list[float]:
    import torch.nn.functional as F

    def answer_loss(inputs: list[dict[str, Any]]) -> Any:
        (batch,) = inputs
        mask = batch["answer_mask"]
        return F.cross_entropy(answer_logits(model, batch)[mask], batch["answer_ids"][mask])

    batches = StepBatches((encoder,), stage, config, seed, salt=0)
    return _run_stage(model, config.target_size, batches, config, answer_loss, tick)


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

    target.eval()

    def distil_loss(inputs: list[dict[str, Any]]) -> Any:
        t_batch, d_batch = inputs
        mask = d_batch["answer_mask"]
        with torch.no_grad():
            teacher = answer_logits(target, t_batch)[mask]
        student = answer_logits(drafter, d_batch)[mask]
        labels = d_batch["answer_ids"][mask]
        return distillation_loss(student, teacher, labels, config.distill_temperature, config.label_weight)

    batches = StepBatches((t_encoder, d_encoder), stage, config, seed, salt=1)
    return _run_stage(drafter, config.drafter_size, batches, config, distil_loss, tick)


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def train_pair(out: Path | str, config: TrainConfig | None = None, seed: int = 0, progress: Any = None) -> PairPaths:
    """Train target then drafter and save both (``save_pretrained``) under ``out/target`` and ``out/drafter``, with
    ``out/covspec_demo_pair.json`` recording config, seed, digest, parameter counts, losses and times.

    ``progress``: an optional ``rich.progress.Progress`` to add one bar per stage to.
    """
    import torch

    from covspec.models.tiny import tiny_tokenizer

    config = config or TrainConfig()
    for stage in (config.target, config.drafter):
        if stage.steps * stage.batch_size > SCENES_PER_STAGE:
            raise ValueError(f"a stage may read at most {SCENES_PER_STAGE} training scenes (steps * batch_size)")
    paths = PairPaths(Path(out))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        with quiet_transformers():
            tokenizer = tiny_tokenizer("llava")
            torch.manual_seed(seed * 1_000_003 + 1)
            target, t_processor = build_model(config.target_size, tokenizer, config.init_range)
            torch.manual_seed(seed * 1_000_003 + 2)
            drafter, d_processor = build_model(config.drafter_size, tokenizer, config.init_range)
            t_encoder, d_encoder = Encoder(t_processor), Encoder(d_processor)
            target.to(config.device)
            drafter.to(config.device)

            started = time.perf_counter()
            t_losses = _train_target(
                target, t_encoder, config.target, config, seed, _ticker(progress, "target", config.target.steps)
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
            target.to("cpu")
            drafter.to("cpu")
            save_checkpoint(target, t_processor, paths.target)
            save_checkpoint(drafter, d_processor, paths.drafter)
            info = _train_info(config, seed, tokenizer, (target, drafter), (t_seconds, d_seconds), (t_losses, d_losses))
            paths.info.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    finally:
        torch.set_num_threads(previous_threads)
    return paths


def _train_info(
    config: TrainConfig, seed: int, tokenizer: Any, models: tuple[Any, Any], seconds: tuple[float, float], losses: Any
) -> dict[str, Any]:
    import torch

    from covspec.models.common import tokenizer_hash

    return {
        "format": PAIR_FORMAT,
        "seed": seed,
        "digest": config.digest(seed),
        "config": config.to_dict(),
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "parameters": {"target": num_parameters(models[0]), "drafter": num_parameters(models[1])},
        "train_seconds": {"target": round(seconds[0], 2), "drafter": round(seconds[1], 2)},
        "final_loss": {"target": _tail_mean(losses[0]), "drafter": _tail_mean(losses[1])},
        "torch": torch.__version__,
        "threads": config.threads,
        "device": config.device,
        "device_name": torch.cuda.get_device_name(config.device) if config.device.startswith("cuda") else "cpu",
        "workers": config.workers,
    }


def _tail_mean(values: list[float], n: int = 20) -> float:
    tail = values[-n:]
    return round(float(np.mean(tail)), 5) if tail else float("nan")


def _ticker(progress: Any, label: str, total: int) -> Any:
    if progress is None:
        return lambda **_: None
    task = progress.add_task(label, total=total, loss=float("nan"))

    def tick(advance: int, loss: float) -> None:
        progress.update(task, advance=advance, loss=loss)

    return tick


__all__ = [
    "Encoder",
    "PairPaths",
    "PatchProbe",
    "StageConfig",
    "TrainConfig",
    "answer_logits",
    "patch_labels",
    "train_pair",
    "training_progress",
]
