"""The scheduler on a real tiny target (float64): forwards of many jobs in one batch, each job's result equal to
running it alone, failures and cancellations confined to their job, prefills alone between batches."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from covspec.errors import LimitError
from covspec.models.base import PromptStart
from covspec.runtime_edge.scheduler import BatchRecord, Scheduler
from covspec.runtime_edge.settings import BatchSettings
from covspec.runtime_edge.steps import Forward, Start, Steps, run_to_end
from covspec.runtime_edge.target_only import completion_steps
from covspec.spec import SamplingParams
from tests.helpers import PROMPTS, image_bytes, pil

GREEDY = SamplingParams(0.0, 0, 1.0, None)
TOKENS = 12


def _sequences(model, n: int) -> list:
    return [model.start(pil(image_bytes(40 + i)), PROMPTS[i % len(PROMPTS)]) for i in range(n)]


def _completion(sequence) -> Steps[list[int]]:
    return completion_steps(sequence, GREEDY, TOKENS, frozenset(), np.random.default_rng(0))


async def _run_all(scheduler: Scheduler, jobs: list[Steps]) -> list:
    return await asyncio.gather(*(scheduler.run(job, key=str(i)) for i, job in enumerate(jobs)), return_exceptions=True)


def test_jobs_forwards_run_as_one_batch_and_give_what_each_gives_alone(loaded_target) -> None:
    model = loaded_target("qwen2_vl")  # M-RoPE positions per row
    expected = [run_to_end(_completion(s)) for s in _sequences(model, 4)]
    batches: list[BatchRecord] = []
    scheduler = Scheduler(BatchSettings(max_batch=4, window_s=5.0), on_batch=batches.append)
    try:
        got = asyncio.run(_run_all(scheduler, [_completion(s) for s in _sequences(model, 4)]))
    finally:
        scheduler.close()
    assert got == expected
    assert all(len(tokens) == TOKENS for tokens in got)
    # every token after the first is one forward; the four jobs shared each one (a full batch ends the window)
    assert [b.rows for b in batches] == [4] * (TOKENS - 1) and scheduler.forwards == TOKENS - 1


def test_one_at_a_time_with_max_batch_one(loaded_target) -> None:
    model = loaded_target("llava")
    batches: list[BatchRecord] = []
    scheduler = Scheduler(BatchSettings(max_batch=1), on_batch=batches.append)
    try:
        got = asyncio.run(_run_all(scheduler, [_completion(s) for s in _sequences(model, 3)]))
    finally:
        scheduler.close()
    assert got == [run_to_end(_completion(s)) for s in _sequences(model, 3)]
    assert {b.rows for b in batches} == {1} and len(batches) == 3 * (TOKENS - 1)


def _bad_job(sequence, vocab: int) -> Steps[str]:
    yield Forward(sequence, [1])
    yield Forward(sequence, [vocab + 5])  # outside the vocabulary: this job's own error
    return "unreachable"


def test_a_failing_forward_fails_only_its_job(loaded_target) -> None:
    model = loaded_target("llava")
    good, bad = _sequences(model, 2)
    bad_length = bad.length
    scheduler = Scheduler(BatchSettings(max_batch=2, window_s=0.05))
    try:
        got = asyncio.run(_run_all(scheduler, [_completion(good), _bad_job(bad, model.vocab_size)]))
    finally:
        scheduler.close()
    assert got[0] == run_to_end(_completion(_sequences(model, 1)[0]))
    assert isinstance(got[1], ValueError) and "outside the vocabulary" in str(got[1])
    assert bad.length == bad_length + 1  # its first forward stands, the failed one left no trace


def test_a_cancelled_job_gets_no_more_forwards(loaded_target) -> None:
    model = loaded_target("llava")
    sequence = _sequences(model, 1)[0]
    closed = []

    def endless() -> Steps[None]:
        try:
            while True:
                yield Forward(sequence, [3])
        finally:
            closed.append(sequence.length)

    async def main(scheduler: Scheduler) -> int:
        job = asyncio.ensure_future(scheduler.run(endless()))
        while scheduler.forwards < 5:
            await asyncio.sleep(0.01)
        job.cancel()
        await asyncio.sleep(0.2)
        return scheduler.forwards

    scheduler = Scheduler()
    try:
        forwards = asyncio.run(main(scheduler))
        assert closed and closed[0] == sequence.length and scheduler.forwards == forwards  # nothing ran after
    finally:
        scheduler.close()


def test_prefills_run_together_after_each_batch(loaded_target) -> None:
    """Prompts waiting together are prefilled in one forward (LLaVA), after the batch of forwards in progress: a
    job's forward waits for at most that batch and one batch of prefills."""
    model = loaded_target("llava")
    order: list[str] = []
    waited: dict[str, int] = {}
    prefill_batches: list[int] = []

    def prefill(i: int) -> Steps[object]:
        sequence = yield Start(model, PromptStart(pil(image_bytes(80 + i)), PROMPTS[i]))
        order.append("prefill")
        return sequence

    async def main(scheduler: Scheduler) -> list:
        sequence = _sequences(model, 1)[0]

        def job() -> Steps[None]:
            for _ in range(6):
                yield Forward(sequence, [2])
                order.append("forward")

        return await asyncio.gather(
            scheduler.run(job(), on_done=lambda n: waited.__setitem__("job", n)),
            *(scheduler.run(prefill(i), on_done=lambda n: waited.__setitem__("prefill", n)) for i in range(3)),
        )

    scheduler = Scheduler(on_prefills=lambda prompts, seconds: prefill_batches.append(prompts))
    try:
        _, *sequences = asyncio.run(main(scheduler))
    finally:
        scheduler.close()
    assert order.count("prefill") == 3 and order.count("forward") == 6
    assert prefill_batches == [3]  # all three in one start_many
    assert waited["job"] <= 1 and waited["prefill"] <= 1
    for i, sequence in enumerate(sequences):
        alone = model.start(pil(image_bytes(80 + i)), PROMPTS[i])
        assert sequence.token_ids == alone.token_ids
        np.testing.assert_allclose(sequence.prefill_logits, alone.prefill_logits, rtol=0, atol=1e-9)


def test_a_prompt_past_its_limit_fails_only_its_job(loaded_target) -> None:
    model = loaded_target("llava")

    def prefill(limit: int | None) -> Steps[object]:
        return (yield Start(model, PromptStart(pil(image_bytes(90)), PROMPTS[1], max_prompt_tokens=limit)))

    scheduler = Scheduler()
    try:
        got = asyncio.run(_run_all(scheduler, [prefill(None), prefill(4), prefill(None)]))
    finally:
        scheduler.close()
    assert isinstance(got[1], LimitError) and got[1].code == "prompt_too_long"
    assert got[0].token_ids == got[2].token_ids == model.start(pil(image_bytes(90)), PROMPTS[1]).token_ids


def test_a_closed_scheduler_refuses_jobs() -> None:
    async def main() -> None:
        scheduler = Scheduler()
        scheduler.close()
        with pytest.raises(RuntimeError, match="closed"):
            await scheduler.run(_completion(None))

    asyncio.run(main())
