"""Quality of a trained demo pair on the held-out split: accuracy of each model alone, and what the pair achieves.

For every held-out question: the target's own greedy ``generate()``, the drafter's own, and the real speculative loop
(``covspec.bench.inprocess.generate_in_process``, greedy, draft length K). Accuracy is exact match of the decoded
answer (EOS dropped, surrounding whitespace stripped) against the reference. AAL and acceptance rate (DESIGN.md §2)
are pooled over all questions: total committed / total rounds, total accepted / total drafted. Prints nothing.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from covspec.demo import scenes
from covspec.demo.train import PairPaths
from covspec.models.loading import quiet_transformers

MAX_NEW_TOKENS = 40  # the longest caption (four objects) is 26 tokens with EOS
BASELINE_SCENES = 3000  # training questions the blind majority baseline takes its answer statistics from


def evaluate_pair(
    paths: PairPaths,
    n_heldout: int = 300,
    k: int = 4,
    *,
    seed: int = 0,
    dtype: str = "float32",
    threads: int = 2,
    max_new_tokens: int = MAX_NEW_TOKENS,
    tasks: tuple[str, ...] = scenes.TASKS,
    max_objects: int = scenes.MAX_OBJECTS,
    progress: Any = None,
) -> dict[str, Any]:
    """Scores of the pair at ``paths`` on the first ``n_heldout`` held-out questions (``scenes.dataset``, drawn from
    ``tasks``, scenes of at most ``max_objects`` objects).

    Returns ``n_questions``, ``target_accuracy``, ``drafter_accuracy``, ``majority_baseline`` (a blind guesser that
    gives each question its most frequent training answer), ``aal`` and
    ``acceptance_rate`` (greedy, draft length ``k``), ``rounds``, ``generated_tokens``, ``identical_to_target``
    (fraction of questions where the speculative output equals the target's own generate), ``parameters`` and
    ``by_task`` (the same numbers per question task).
    """
    import torch

    from covspec.bench.inprocess import generate_in_process
    from covspec.models import load_model
    from covspec.protocol import VerifyMode
    from covspec.runtime_device.engines import load_engine
    from covspec.runtime_device.loop import GenerationConfig
    from covspec.spec import SpecStats

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with quiet_transformers():
            target = load_model(str(paths.target), dtype=dtype)
            drafter = load_model(str(paths.drafter), dtype=dtype)
            engine = load_engine("torch", str(paths.drafter), dtype=dtype)
        config = GenerationConfig(max_new_tokens=max_new_tokens, draft_len=k, verify_mode=VerifyMode.COMPACT)
        items = scenes.dataset("heldout", n_heldout, seed=seed, tasks=tasks, max_objects=max_objects)
        bar = progress.add_task("evaluate", total=len(items), loss=float("nan")) if progress is not None else None

        tallies: dict[str, dict[str, Any]] = defaultdict(lambda: {"n": 0, "target": 0, "drafter": 0, "same": 0})
        stats_by_task: dict[str, SpecStats] = defaultdict(SpecStats)
        for item in items:
            image, question = item.scene.image, item.question
            target_tokens = target.generate(image, question, max_new_tokens=max_new_tokens)
            drafter_tokens = drafter.generate(image, question, max_new_tokens=max_new_tokens)
            spec_tokens, stats, _ = generate_in_process(engine, target, image, question, config)
            for key in ("all", item.task):
                tally = tallies[key]
                tally["n"] += 1
                tally["target"] += target.decode(target_tokens).strip() == item.answer
                tally["drafter"] += drafter.decode(drafter_tokens).strip() == item.answer
                tally["same"] += spec_tokens == target_tokens
                stats_by_task[key].add(stats)
            if bar is not None:
                progress.update(bar, advance=1)
    finally:
        torch.set_num_threads(previous_threads)

    def summary(key: str) -> dict[str, Any]:
        tally, stats = tallies[key], stats_by_task[key]
        n = max(1, tally["n"])
        return {
            "n_questions": tally["n"],
            "target_accuracy": tally["target"] / n,
            "drafter_accuracy": tally["drafter"] / n,
            "aal": stats.aal,
            "acceptance_rate": stats.acceptance_rate,
            "rounds": stats.rounds,
            "generated_tokens": stats.committed,
            "identical_to_target": tally["same"] / n,
        }

    result = summary("all")
    result.update(
        k=k,
        verify_mode="greedy",
        dtype=dtype,
        majority_baseline=scenes.majority_baseline(
            items, scenes.dataset("train", BASELINE_SCENES, seed=seed, tasks=tasks, max_objects=max_objects)
        ),
        parameters={"target": target.num_parameters(), "drafter": drafter.num_parameters()},
        by_task={task: summary(task) for task in scenes.TASKS if task in tallies},
    )
    return result


def teacher_forced_accuracy(
    model: Any, processor: Any, items: list[scenes.QAItem], device: str = "cpu", batch_size: int = 256
) -> dict[str, float]:
    """Greedy exact-match accuracy per task (and ``"all"``) in a few batched forwards: greedy decoding yields the
    reference answer and then EOS exactly when the argmax at every answer position, given the reference prefix, is
    the reference token. A quick check while training; ``evaluate_pair`` decodes for real."""
    import torch

    from covspec.demo.train import Encoder, answer_logits

    encoder = Encoder(processor)
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    model.eval()
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            batch = {k: v.to(device) for k, v in encoder.batch(chunk).items()}
            predicted = answer_logits(model, batch).argmax(-1)
            right = ((predicted == batch["answer_ids"]) | ~batch["answer_mask"]).all(-1)
            for item, ok in zip(chunk, right.tolist(), strict=True):
                for key in ("all", item.task):
                    hits[key][0] += int(ok)
                    hits[key][1] += 1
    return {key: right / total for key, (right, total) in hits.items()}


__all__ = ["MAX_NEW_TOKENS", "evaluate_pair", "teacher_forced_accuracy"]
