"""The distillation run: teacher answers, the training loop with checkpoints and resume, and AAL before and after.

Every step reads a batch drawn by ``(seed, step)`` from the training examples: a batch is a pure function of its
step, so a resumed run draws the batches it would have drawn. The target's greedy answers are generated once and kept
in ``teacher_answers.jsonl`` beside the checkpoint, so a resumed run does not generate them again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covspec.bench.inprocess import generate_in_process
from covspec.distill.arch import build_drafter, parse_arch
from covspec.distill.batches import answer_logits
from covspec.distill.data import Example, split_examples
from covspec.distill.loss import distillation_loss
from covspec.distill.optim import adamw_with_schedule
from covspec.errors import ConfigError, IncompatiblePairError
from covspec.models import load_model
from covspec.models.base import LoadedModel
from covspec.models.loading import quiet_transformers
from covspec.models.vocabulary import first_difference
from covspec.protocol import VerifyMode
from covspec.runtime_device.engines import load_engine
from covspec.runtime_device.loop import GenerationConfig
from covspec.spec import PolicyKind, SpecStats

logger = logging.getLogger(__name__)

ANSWERS = "teacher_answers.jsonl"
CHECKPOINT = "checkpoint"  # checkpoint-STEP: the drafter mid-run (save_pretrained) and its optimizer
INITIAL = "initial"  # a --drafter-arch drafter as initialised: what "before" is measured on
STATE = "distill_state.json"
REPORT = "covspec_distill.json"
LOSS_READ_EVERY = 8  # steps between reads of the loss (progress bar, log); a read waits for the device
# settings that change speed or bookkeeping, not the weights: left out of the run's digest (a resume may change them)
_RUNTIME_FIELDS = ("threads", "device", "checkpoint_every")


@dataclass(frozen=True)
class DistillConfig:
    """`covspec distill` flags map one to one onto these fields."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.01
    temperature: float = 1.0
    label_weight: float = 0.1  # weight of the cross-entropy on the target's own answer beside the KL
    max_new_tokens: int = 32  # length of the target's answers trained on (and of the AAL measurement)
    eval_examples: int = 32  # held-out examples (images never trained on) the AAL is measured on
    draft_len: int = 4  # K of the AAL measurement (greedy, fixed K)
    seed: int = 0
    checkpoint_every: int = 200
    threads: int | None = None  # torch threads (None: torch's own choice)
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_new_tokens", "draft_len", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.lr <= 0 or self.temperature <= 0:
            raise ConfigError("lr and temperature must be positive")

    def digest(self, **identity: Any) -> str:
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in _RUNTIME_FIELDS}
        payload = json.dumps({"config": fields, **identity}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class DistillReport:
    """What ``distill`` wrote and measured; ``before`` / ``after``: AAL, acceptance rate and how often the greedy
    speculative output equalled the target's own, on the held-out examples."""

    out: Path
    before: dict[str, Any]
    after: dict[str, Any]
    steps: int
    train_examples: int
    eval_examples: int
    seconds: float
    final_loss: float
    parameters: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "out": str(self.out)}


def distill(
    target: Path | str,
    out: Path | str,
    examples: list[Example],
    *,
    drafter: Path | str | None = None,
    arch: str | None = None,
    config: DistillConfig | None = None,
    progress: Any = None,
) -> DistillReport:
    """Distil a drafter for ``target`` into ``out`` (a ``from_pretrained`` checkpoint, processor included).

    The drafter starts from ``drafter`` (a checkpoint) or, with ``arch``, from the target's config overridden by it
    (``parse_arch``). A run stopped midway resumes from ``out``'s checkpoint when called again with the same settings.
    ``progress``: an optional ``rich.progress.Progress`` (``training_progress``) to add bars to.
    """
    import torch

    config = config or DistillConfig()
    if (drafter is None) == (arch is None):
        raise ConfigError("give the drafter to start from (--drafter) or its shape (--drafter-arch), not both")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    try:
        with quiet_transformers():  # transformers' own bars (loading, saving shards) would interleave with ours
            return _distill(target, out, examples, drafter, arch, config, progress, started)
    finally:
        torch.set_num_threads(previous_threads)


def _distill(
    target: Path | str,
    out: Path,
    examples: list[Example],
    drafter: Path | str | None,
    arch: str | None,
    config: DistillConfig,
    progress: Any,
    started: float,
) -> DistillReport:
    teacher = load_model(str(target), dtype="float32", device=config.device)
    if not teacher.accepts_images:
        raise ConfigError(f"{target}: distillation needs a vision-language target")
    train, held_out = split_examples(examples, config.eval_examples, config.seed)
    answers = teacher_answers(teacher, train + held_out, config.max_new_tokens, out / ANSWERS, progress)
    train_answers, held_answers = answers[: len(train)], answers[len(train) :]
    train, train_answers = _without_placeholders(train, train_answers, teacher.image_token_id)
    identity = {"target": str(target), "drafter": str(drafter), "arch": arch, "examples": len(examples)}
    state = _run_state(out, config.digest(**identity))
    start = _starting_checkpoint(out, state, target, drafter, arch, config.seed)
    student = load_model(str(start), dtype="float32", device=config.device)
    _check_same_vocabulary(student, teacher)
    if "before" not in state:
        state["before"] = measure_agreement(teacher, start, held_out, held_answers, config, progress, "AAL before")
        _write_state(out, state)
    losses = _train(teacher, student, train, train_answers, config, out, state, progress)
    student.hf_model.save_pretrained(out)
    student.processor.save_pretrained(out)
    after = measure_agreement(teacher, out, held_out, held_answers, config, progress, "AAL after")
    report = DistillReport(
        out=out,
        before=state["before"],
        after=after,
        steps=config.steps,
        train_examples=len(train),
        eval_examples=len(held_out),
        seconds=round(time.perf_counter() - started, 2),
        final_loss=round(float(np.mean(losses[-20:])), 5) if losses else float("nan"),
        parameters={"target": teacher.num_parameters(), "drafter": student.num_parameters()},
    )
    record = {**report.to_dict(), "config": dataclasses.asdict(config), **identity, "losses": losses}
    (out / REPORT).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    _remove_checkpoints(out)  # what served a resume goes: the folder is a plain checkpoint plus the report
    shutil.rmtree(out / INITIAL, ignore_errors=True)
    (out / ANSWERS).unlink(missing_ok=True)
    (out / STATE).unlink(missing_ok=True)
    return report


def teacher_answers(
    target: LoadedModel, examples: list[Example], max_new_tokens: int, cache: Path, progress: Any = None
) -> list[list[int]]:
    """The target's greedy answer to each example (EOS included when reached), kept in ``cache`` (JSON lines)
    so that a resumed run reuses what was generated."""
    header = {"target": target.fingerprint.tokenizer_hash, "name": target.name, "max_new_tokens": max_new_tokens}
    known: dict[tuple[str, str], list[int]] = {}
    if cache.is_file():
        lines = cache.read_text(encoding="utf-8").splitlines()
        if lines and json.loads(lines[0]) == header:
            for line in lines[1:]:
                row = json.loads(line)
                known[(row["image"], row["prompt"])] = row["tokens"]
    bar = progress.add_task("teacher answers", total=len(examples), loss=float("nan")) if progress else None
    with cache.open("w", encoding="utf-8") as sink:
        sink.write(json.dumps(header) + "\n")
        answers = []
        for example in examples:
            key = (str(example.image), example.prompt)
            if key not in known:
                image = example.load_image()
                known[key] = target.generate(image, example.prompt, max_new_tokens=max_new_tokens)
            answers.append(known[key])
            sink.write(json.dumps({"image": key[0], "prompt": key[1], "tokens": known[key]}) + "\n")
            if bar is not None:
                progress.update(bar, advance=1)
    return answers


def _without_placeholders(
    examples: list[Example], answers: list[list[int]], image_token: int | None
) -> tuple[list[Example], list[list[int]]]:
    """The examples whose answer holds no image placeholder token: fed back as input, a placeholder would ask the
    model for image features it has no image for (an untrained target may emit one; a trained one does not)."""
    kept = [(e, a) for e, a in zip(examples, answers, strict=True) if image_token not in a]
    if len(kept) < len(examples):
        dropped = len(examples) - len(kept)
        logger.warning("%d of %d teacher answers hold the image token; not trained on", dropped, len(examples))
    if not kept:
        raise ConfigError("every teacher answer holds the image placeholder token: nothing to train on")
    return [e for e, _ in kept], [a for _, a in kept]


def measure_agreement(
    target: LoadedModel,
    drafter_dir: Path,
    examples: list[Example],
    answers: list[list[int]],
    config: DistillConfig,
    progress: Any = None,
    label: str = "AAL",
) -> dict[str, Any]:
    """Greedy speculative decoding of ``examples`` at a fixed K against ``target``, in process: AAL, acceptance
    rate, and the share of outputs equal to the target's own (``answers``)."""
    with quiet_transformers():
        engine = load_engine("torch", drafter_dir, dtype="float32")
    settings = GenerationConfig(
        max_new_tokens=config.max_new_tokens,
        draft_len=config.draft_len,
        verify_mode=VerifyMode.COMPACT,
        policy=PolicyKind.FIXED,
    )
    pooled, same = SpecStats(), 0
    bar = progress.add_task(label, total=len(examples), loss=float("nan")) if progress else None
    for example, answer in zip(examples, answers, strict=True):
        tokens, stats, _ = generate_in_process(engine, target, example.load_image(), example.prompt, settings)
        pooled.add(stats)
        same += tokens == answer
        if bar is not None:
            progress.update(bar, advance=1)
    return {
        "aal": pooled.aal,
        "acceptance_rate": pooled.acceptance_rate,
        "rounds": pooled.rounds,
        "identical_to_target": same / max(1, len(examples)),
        "examples": len(examples),
        "k": config.draft_len,
    }


def _run_state(out: Path, digest: str) -> dict[str, Any]:
    """The state of a run in ``out``: resumed when its digest matches, refused when another run is there."""
    path = out / STATE
    if not path.is_file():
        return {"digest": digest, "step": 0, "losses": []}
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("digest") != digest:
        raise ConfigError(
            f"{out} holds a stopped distillation with other settings; resume it with those, or choose another --out"
        )
    logger.info("resuming the distillation in %s at step %d", out, state["step"])
    return state


def _write_state(out: Path, state: dict[str, Any]) -> None:
    temporary = out / (STATE + ".tmp")
    temporary.write_text(json.dumps(state) + "\n")
    temporary.replace(out / STATE)


def _starting_checkpoint(
    out: Path, state: dict[str, Any], target: Path | str, drafter: Path | str | None, arch: str | None, seed: int
) -> Path:
    """Where the drafter loads from: the run's last checkpoint when resuming, else the given drafter, else a fresh
    one built from ``arch`` (saved under ``out/initial``)."""
    if state["step"] > 0:
        return out / state["checkpoint"]
    if drafter is not None:
        return Path(drafter)
    assert arch is not None
    model, processor = build_drafter(target, parse_arch(arch), seed)
    initial = out / INITIAL
    model.save_pretrained(initial)
    processor.save_pretrained(initial)
    return initial


def _check_same_vocabulary(drafter: LoadedModel, target: LoadedModel) -> None:
    difference = first_difference(drafter.vocabulary, target.vocabulary)
    if difference is not None:
        raise IncompatiblePairError(f"the drafter cannot be distilled from this target: {difference}")


def _train(
    target: LoadedModel,
    student: LoadedModel,
    examples: list[Example],
    answers: list[list[int]],
    config: DistillConfig,
    out: Path,
    state: dict[str, Any],
    progress: Any,
) -> list[float]:
    import torch

    model = student.hf_model
    optimizer, schedule = adamw_with_schedule(
        model.named_parameters(),
        lr=config.lr,
        weight_decay=config.weight_decay,
        steps=config.steps,
        warmup=config.warmup,
    )
    if state["step"] > 0:
        saved = torch.load(out / state["checkpoint"] / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
    params = [p for group in optimizer.param_groups for p in group["params"]]
    losses: list[float] = list(state["losses"])
    bar = None
    if progress is not None:
        bar = progress.add_task("distil", total=config.steps, completed=state["step"], loss=float("nan"))
    pending: list[Any] = []
    model.train()
    target.hf_model.eval()
    for step in range(state["step"], config.steps):
        picked = np.random.default_rng([config.seed, step]).choice(
            len(examples), size=min(config.batch_size, len(examples)), replace=False
        )
        loss = _batch_loss(target, student, [examples[i] for i in picked], [answers[i] for i in picked], config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        pending.append(loss.detach())
        done = step + 1
        checkpoint = done % config.checkpoint_every == 0 and done < config.steps
        if len(pending) == LOSS_READ_EVERY or done == config.steps or checkpoint:
            read = torch.stack(pending).tolist()
            losses.extend(read)
            pending.clear()
            if bar is not None:
                progress.update(bar, completed=done, loss=read[-1])
        if checkpoint:
            state.update(step=done, losses=losses, checkpoint=_checkpoint(student, optimizer, schedule, out, done))
            _write_state(out, state)
            _remove_checkpoints(out, keep=state["checkpoint"])
    model.eval()
    return losses


def _batch_loss(
    target: LoadedModel, student: LoadedModel, examples: list[Example], answers: list[list[int]], config: DistillConfig
) -> Any:
    """The distillation loss of one batch: both models read each (image, prompt) through their own processor and
    the target's answer after it; the target's logits at the answer positions teach the drafter's."""
    import torch

    images = [e.load_image() for e in examples]
    with torch.no_grad():
        rendered = [target.render(image, e.prompt) for image, e in zip(images, examples, strict=True)]
        teacher = answer_logits(target.hf_model, rendered, answers, target.pad_token_id)
    rendered = [student.render(image, e.prompt) for image, e in zip(images, examples, strict=True)]
    logits = answer_logits(student.hf_model, rendered, answers, student.pad_token_id)
    labels = torch.tensor([t for row in answers for t in row], device=logits.device)
    return distillation_loss(logits, teacher, labels, config.temperature, config.label_weight)


def _checkpoint(student: LoadedModel, optimizer: Any, schedule: Any, out: Path, step: int) -> str:
    """The drafter and its optimizer after ``step`` in a folder of their own (its name returned); older checkpoint
    folders go once the state names this one, so a stop at any moment leaves a state that names a whole folder."""
    import torch

    name = f"{CHECKPOINT}-{step}"
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    student.hf_model.save_pretrained(folder)
    student.processor.save_pretrained(folder)
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, folder / "optimizer.pt")
    return name


def _remove_checkpoints(out: Path, keep: str | None = None) -> None:
    for folder in out.glob(f"{CHECKPOINT}-*"):
        if folder.name != keep:
            shutil.rmtree(folder, ignore_errors=True)


def training_progress(**kwargs: Any) -> Any:
    """A ``rich`` progress display with a loss column (every bar of ``distill`` and of the demo's training)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        **kwargs,
    )


__all__ = ["DistillConfig", "DistillReport", "distill", "measure_agreement", "teacher_answers", "training_progress"]
