"""Train the demo pair on synthetic scenes: the target by teacher forcing, then the drafter distilled from it.

1. Target: (image, question) -> answer with teacher forcing; the loss covers the answer tokens and EOS only, beside a
   training-only ``PatchProbe`` loss (what each cell holds, read from the projected visual tokens); the probe is not
   saved, so the checkpoint stays plain LLaVA.
2. Drafter: ``covspec distill`` (``covspec.distill``) from the trained target, on fresh training scenes written to a
   folder: a drafter of ``drafter_size`` shaped from the target's config (its own 144-token tower), trained by online
   logit distillation on the target's own greedy answers.

The target stage reads fresh scenes every step: step ``s`` uses training scenes ``s * batch_size ..`` of
``scenes.dataset``'s training range, so nothing is seen twice and the held-out split stays unseen. A batch is a pure
function of its step, so building batches in worker processes (``TrainConfig.workers``) changes nothing but speed.
The drafter stage reads ``drafter_examples`` scenes from the second half of the range. Deterministic for a (config,
seed) on one machine, device and thread count. Nothing is printed: pass a ``rich.progress.Progress`` to see bars.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
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
    drafter_arch,
    render_prompt,
    save_checkpoint,
)
from covspec.distill import DistillConfig, DistillReport, adamw_with_schedule, distill, load_examples
from covspec.distill.train import training_progress
from covspec.models.loading import quiet_transformers

logger = logging.getLogger(__name__)

PAIR_FORMAT = 3  # bump when scenes, the architecture or the recipe change in a way the config does not show
# (3: the drafter is distilled by covspec.distill on the target's own answers, no probe)
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
    drafter_examples: int = 16000  # (scene, question) examples the drafter is distilled on, one per scene
    drafter_eval: int = 200  # of which held out: the AAL before and after distillation is measured on these
    drafter_answer_tokens: int = 40  # the target's answers distilled on are at most this long (MAX_NEW_TOKENS)
    distill_temperature: float = 1.0
    init_range: float = INIT_RANGE
    label_weight: float = 0.1  # weight of the reference-answer cross-entropy beside the KL to the target
    probe_weight: float = 1.0  # weight of the target's training-only patch probe (see ``PatchProbe``); 0: off
    relation_probe: bool = True  # the target's probe also predicts each object's left and right neighbours
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
            drafter_examples=480,
            drafter_eval=24,
            drafter_answer_tokens=8,
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


def _training_items(config: TrainConfig, seed: int, start: int, n: int) -> list[scenes.QAItem]:
    """Training scenes ``start .. start + n - 1`` with one question each, of the config's tasks and weights."""
    return scenes.dataset(
        "train",
        n,
        seed=seed,
        start=start,
        tasks=config.tasks,
        max_objects=config.max_objects,
        weights=config.task_weights,
    )


def _train_items(step: int, stage: StageConfig, config: TrainConfig, seed: int) -> list[scenes.QAItem]:
    """The batch of step ``step``: fresh training scenes from the first half of the range (the drafter's are in
    the second)."""
    return _training_items(config, seed, step * stage.batch_size, stage.batch_size)


class StepBatches:
    """The batches of one stage indexed by step: for each encoder its model inputs, plus the patch labels. A map-style
    dataset, so a ``DataLoader`` can build them in worker processes, in step order."""

    def __init__(self, encoders: tuple[Encoder, ...], stage: StageConfig, config: TrainConfig, seed: int) -> None:
        self.encoders, self.stage, self.config, self.seed = encoders, stage, config, seed

    def __len__(self) -> int:
        return self.stage.steps

    def __getitem__(self, step: int) -> tuple[list[dict[str, Any]], Any]:
        items = _train_items(step, self.stage, self.config, self.seed)
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

    batches = StepBatches((encoder,), stage, config, seed)
    return _run_stage(model, config.target_size, batches, config, answer_loss, tick)


def _distil_drafter(target: Path, out: Path, config: TrainConfig, seed: int, progress: Any) -> DistillReport:
    """``covspec distill`` of a ``config.drafter_size`` drafter from the trained ``target`` into ``out``, on
    ``config.drafter_examples`` fresh training scenes (one question each) written to a temporary folder."""
    items = _training_items(config, seed, SCENES_PER_STAGE, config.drafter_examples)
    stage = config.drafter
    settings = DistillConfig(
        steps=stage.steps,
        batch_size=stage.batch_size,
        lr=stage.lr,
        warmup=stage.warmup,
        weight_decay=stage.weight_decay,
        temperature=config.distill_temperature,
        label_weight=config.label_weight,
        max_new_tokens=config.drafter_answer_tokens,
        eval_examples=config.drafter_eval,
        seed=seed,
        threads=config.threads,
        device=config.device,
    )
    with tempfile.TemporaryDirectory(prefix="covspec-demo-distill-") as tmp:
        images, prompts = scenes.write_examples(items, Path(tmp))
        arch = drafter_arch(config.drafter_size, config.init_range)
        return distill(target, out, load_examples(images, prompts), arch=arch, config=settings, progress=progress)


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def train_pair(
    out: Path | str,
    config: TrainConfig | None = None,
    seed: int = 0,
    progress: Any = None,
    target_from: Path | None = None,
) -> PairPaths:
    """Train target then drafter and save both (``save_pretrained``) under ``out/target`` and ``out/drafter``, with
    ``out/covspec_demo_pair.json`` recording config, seed, digest, parameter counts, losses, times and the
    distillation report (AAL before and after).

    ``target_from``: a target already trained by this config's target stage (same sizes, steps and seed), used as is
    and recorded; only the drafter is trained. ``progress``: an optional ``rich.progress.Progress`` for the bars.
    """
    import torch

    from covspec.models.tiny import tiny_tokenizer

    config = config or TrainConfig()
    if config.target.steps * config.target.batch_size > SCENES_PER_STAGE:
        raise ValueError(f"the target stage may read at most {SCENES_PER_STAGE} training scenes (steps * batch_size)")
    if config.drafter_examples > SCENES_PER_STAGE:
        raise ValueError(f"the drafter stage may read at most {SCENES_PER_STAGE} training scenes")
    paths = PairPaths(Path(out))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        with quiet_transformers():
            tokenizer = tiny_tokenizer("llava")
            started = time.perf_counter()
            if target_from is None:
                torch.manual_seed(seed * 1_000_003 + 1)
                target, t_processor = build_model(config.target_size, tokenizer, config.init_range)
                target.to(config.device)
                t_ticker = _ticker(progress, "target", config.target.steps)
                t_losses = _train_target(target, Encoder(t_processor), config.target, config, seed, t_ticker)
                save_checkpoint(target.to("cpu"), t_processor, paths.target)
            else:
                shutil.copytree(target_from, paths.target, dirs_exist_ok=True)
                t_losses = []
            t_seconds = time.perf_counter() - started
            report = _distil_drafter(paths.target, paths.drafter, config, seed, progress)
            info = _train_info(config, seed, tokenizer, paths, report, t_seconds, t_losses)
            if target_from is not None:
                info["target_from"] = str(target_from)
            paths.info.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    finally:
        torch.set_num_threads(previous_threads)
    return paths


def _train_info(
    config: TrainConfig,
    seed: int,
    tokenizer: Any,
    paths: PairPaths,
    report: DistillReport,
    target_seconds: float,
    target_losses: list[float],
) -> dict[str, Any]:
    import torch

    from covspec.models.common import tokenizer_hash

    return {
        "format": PAIR_FORMAT,
        "seed": seed,
        "digest": config.digest(seed),
        "config": config.to_dict(),
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "parameters": report.parameters,
        "train_seconds": {"target": round(target_seconds, 2), "drafter": report.seconds},
        "final_loss": {"target": _tail_mean(target_losses), "drafter": report.final_loss},
        "distill": {"before": report.before, "after": report.after, "eval_examples": report.eval_examples},
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
