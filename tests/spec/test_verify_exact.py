"""Losslessness by exact enumeration.

For a small vocabulary and K drafted tokens, every draft sequence is enumerated with its draft probability, each
verdict with its exact probability (the math-level twins of the samplers), and every committed prefix is extended to
length K+1 with the target's own conditionals (what later rounds do, by induction). The resulting law over
length-(K+1) sequences must equal the target's own joint law.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pytest

from covspec.spec import (
    SamplingParams,
    canonical_probs,
    dense_from_sparse,
    dssd_verdict_distribution,
    logits_to_probs,
    sparse_from_dense,
    verdict_distribution,
    verify_greedy,
)

Prefix = tuple[int, ...]
RowTable = Callable[[Prefix], np.ndarray]  # prefix -> [V] float64 distribution of the next token
VerdictLaw = Callable[[np.ndarray, np.ndarray, np.ndarray], dict[tuple[int, int], float]]

TOLERANCE = 1e-12


def _prefix_rng(seed: int, salt: int, prefix: Prefix) -> np.random.Generator:
    """A generator that depends only on (seed, table, prefix), so tables are order-free and reproducible."""
    return np.random.default_rng([seed, salt, len(prefix), *prefix])


def _random_row(rng: np.random.Generator, vocab_size: int) -> np.ndarray:
    """A canonical distribution [V], sometimes with zeros (never all zero)."""
    weights = rng.dirichlet(np.full(vocab_size, 0.7))
    if rng.random() < 0.5:
        weights[rng.random(vocab_size) < 0.4] = 0.0
        if not weights.any():
            weights[rng.integers(vocab_size)] = 1.0
    return canonical_probs(weights / weights.sum())


def make_tables(seed: int, vocab_size: int) -> tuple[RowTable, RowTable]:
    """Target and draft conditionals keyed by prefix, mixing the cases that stress verification:
    the draft equal to the target, the draft with zeros where the target has mass, the draft with mass where the
    target has none, and unrelated rows."""
    target_cache: dict[Prefix, np.ndarray] = {}
    draft_cache: dict[Prefix, np.ndarray] = {}

    def target(prefix: Prefix) -> np.ndarray:
        if prefix not in target_cache:
            target_cache[prefix] = _random_row(_prefix_rng(seed, 1, prefix), vocab_size)
        return target_cache[prefix]

    def draft(prefix: Prefix) -> np.ndarray:
        if prefix not in draft_cache:
            rng = _prefix_rng(seed, 2, prefix)
            target_row = target(prefix)
            kind = rng.integers(4)
            if kind == 0:  # the drafter agrees with the target exactly
                row = target_row.copy()
            elif kind == 1:  # zeros where the target has mass
                row = target_row * (rng.random(vocab_size) < 0.5) + 1e-9 * (target_row == target_row.max())
            elif kind == 2:  # mass where the target has none
                row = np.where(target_row == 0, rng.random(vocab_size) + 0.2, 0.3 * target_row)
            else:
                row = _random_row(rng, vocab_size)
            draft_cache[prefix] = canonical_probs(row / row.sum())
        return draft_cache[prefix]

    return target, draft


def extend(prefix: Prefix, length: int, target: RowTable) -> list[tuple[Prefix, float]]:
    """Every continuation of ``prefix`` to ``length`` tokens under the target's conditionals, with its probability."""
    if len(prefix) == length:
        return [(prefix, 1.0)]
    row = target(prefix)
    out = []
    for token in np.flatnonzero(row > 0):
        for sequence, weight in extend(prefix + (int(token),), length, target):
            out.append((sequence, float(row[token]) * weight))
    return out


def target_joint(length: int, target: RowTable) -> dict[Prefix, float]:
    return dict(extend((), length, target))


def speculative_joint(
    num_draft: int, vocab_size: int, target: RowTable, draft: RowTable, law: VerdictLaw
) -> dict[Prefix, float]:
    """Law of the first K+1 tokens when the first round drafts K tokens and verifies them with ``law``."""
    result: dict[Prefix, float] = defaultdict(float)
    for draft_tokens in itertools.product(range(vocab_size), repeat=num_draft):
        draft_prob = 1.0
        for i, token in enumerate(draft_tokens):
            draft_prob *= float(draft(draft_tokens[:i])[token])
        if draft_prob == 0.0:
            continue
        draft_rows = np.zeros((0, vocab_size))
        if num_draft:
            draft_rows = np.stack([draft(draft_tokens[:i]) for i in range(num_draft)])
        target_rows = np.stack([target(draft_tokens[:i]) for i in range(num_draft + 1)])
        verdicts = law(np.array(draft_tokens, dtype=np.int64), draft_rows, target_rows)
        assert abs(sum(verdicts.values()) - 1.0) < TOLERANCE
        for (accepted, token), verdict_prob in verdicts.items():
            committed = draft_tokens[:accepted] + (token,)
            for sequence, continuation_prob in extend(committed, num_draft + 1, target):
                result[sequence] += draft_prob * verdict_prob * continuation_prob
    return dict(result)


def assert_same_law(got: dict[Prefix, float], expected: dict[Prefix, float]) -> None:
    for sequence in set(got) | set(expected):
        assert abs(got.get(sequence, 0.0) - expected.get(sequence, 0.0)) <= TOLERANCE, (
            sequence,
            got.get(sequence, 0.0),
            expected.get(sequence, 0.0),
        )
    assert abs(sum(got.values()) - 1.0) <= TOLERANCE


CASES = [(seed, vocab_size, num_draft) for num_draft in (1, 2, 3) for vocab_size in (3, 4, 5) for seed in range(5)]


@pytest.mark.parametrize(("seed", "vocab_size", "num_draft"), CASES)
def test_stochastic_verification_is_lossless(seed: int, vocab_size: int, num_draft: int) -> None:
    target, draft = make_tables(seed, vocab_size)
    expected = target_joint(num_draft + 1, target)
    assert_same_law(speculative_joint(num_draft, vocab_size, target, draft, verdict_distribution), expected)


@pytest.mark.parametrize(("seed", "vocab_size", "num_draft"), CASES)
def test_dssd_verification_is_lossless(seed: int, vocab_size: int, num_draft: int) -> None:
    target, draft = make_tables(seed + 100, vocab_size)
    expected = target_joint(num_draft + 1, target)
    assert_same_law(speculative_joint(num_draft, vocab_size, target, draft, dssd_verdict_distribution), expected)


def test_tables_exercise_every_case() -> None:
    """The enumeration above is only as strong as its tables: check they contain each hard case."""
    seen = set()
    for seed in range(3):
        for vocab_size in (3, 4, 5):
            target, draft = make_tables(seed, vocab_size)
            for prefix in itertools.chain.from_iterable(
                itertools.product(range(vocab_size), repeat=n) for n in range(3)
            ):
                target_row, draft_row = target(prefix), draft(prefix)
                if np.array_equal(target_row, draft_row):
                    seen.add("draft == target")
                if ((draft_row == 0) & (target_row > 0)).any():
                    seen.add("draft zero, target mass")
                if ((draft_row > 0) & (target_row == 0)).any():
                    seen.add("draft mass, target zero")
                if (target_row == 0).any():
                    seen.add("target zeros")
    assert seen == {"draft == target", "draft zero, target mass", "draft mass, target zero", "target zeros"}


def test_dssd_and_vanilla_give_the_same_verdict_law_block_by_block() -> None:
    for seed in range(5):
        target, draft = make_tables(seed, 4)
        for draft_tokens in itertools.product(range(4), repeat=2):
            draft_rows = np.stack([draft(draft_tokens[:i]) for i in range(2)])
            if draft_rows[0, draft_tokens[0]] == 0 or draft_rows[1, draft_tokens[1]] == 0:
                continue
            target_rows = np.stack([target(draft_tokens[:i]) for i in range(3)])
            vanilla = verdict_distribution(np.array(draft_tokens), draft_rows, target_rows)
            dssd = dssd_verdict_distribution(np.array(draft_tokens), draft_rows, target_rows)
            assert vanilla.keys() == dssd.keys()
            for key in vanilla:
                assert abs(vanilla[key] - dssd[key]) <= 1e-15


# --------------------------------------------------------------------------------------------------------------------
# compact: sparse target rows (the target's own top-k / top-p), dense draft rows


def make_sparse_tables(seed: int, vocab_size: int, target_params: SamplingParams) -> tuple[RowTable, RowTable]:
    target_cache: dict[Prefix, np.ndarray] = {}
    draft_cache: dict[Prefix, np.ndarray] = {}
    draft_params = SamplingParams(temperature=1.3)

    def target(prefix: Prefix) -> np.ndarray:
        if prefix not in target_cache:
            logits = np.round(_prefix_rng(seed, 3, prefix).normal(scale=0.8, size=vocab_size), 1)  # with ties
            sparse = sparse_from_dense(logits_to_probs(logits, target_params))
            assert len(sparse) < vocab_size or target_params.top_k == 0
            target_cache[prefix] = dense_from_sparse(sparse, vocab_size)  # what the device rebuilds
        return target_cache[prefix]

    def draft(prefix: Prefix) -> np.ndarray:
        if prefix not in draft_cache:
            logits = _prefix_rng(seed, 4, prefix).normal(scale=1.5, size=vocab_size)
            draft_cache[prefix] = canonical_probs(logits_to_probs(logits, draft_params))
        return draft_cache[prefix]

    return target, draft


@pytest.mark.parametrize(
    "target_params", [SamplingParams(temperature=0.9, top_k=2), SamplingParams(temperature=1.0, top_p=0.6)]
)
@pytest.mark.parametrize(("seed", "vocab_size", "num_draft"), [(0, 4, 1), (1, 5, 2), (2, 4, 3), (3, 5, 3)])
def test_compact_sparse_target_rows_are_lossless(
    target_params: SamplingParams, seed: int, vocab_size: int, num_draft: int
) -> None:
    target, draft = make_sparse_tables(seed, vocab_size, target_params)
    expected = target_joint(num_draft + 1, target)
    assert any(0 < p < 1 for p in expected.values())  # a real distribution, not a single sequence
    assert_same_law(speculative_joint(num_draft, vocab_size, target, draft, verdict_distribution), expected)


# --------------------------------------------------------------------------------------------------------------------
# greedy


@pytest.mark.parametrize(("seed", "vocab_size", "num_draft"), [(0, 3, 1), (1, 4, 2), (2, 5, 3), (3, 3, 3)])
def test_greedy_commits_the_target_argmax_chain(seed: int, vocab_size: int, num_draft: int) -> None:
    def target_logits(prefix: Prefix) -> np.ndarray:
        return np.round(_prefix_rng(seed, 5, prefix).normal(size=vocab_size), 0)  # coarse rounding: many ties

    def target_argmax(prefix: Prefix) -> int:
        return int(np.argmax(logits_to_probs(target_logits(prefix), SamplingParams())))

    chain: Prefix = ()
    for _ in range(num_draft + 1):
        chain += (target_argmax(chain),)

    for draft_tokens in itertools.product(range(vocab_size), repeat=num_draft):
        argmax_along_draft = np.array([target_argmax(draft_tokens[:i]) for i in range(num_draft + 1)])
        verdict = verify_greedy(np.array(draft_tokens), argmax_along_draft)
        committed = tuple(verdict.committed(draft_tokens))
        assert committed == chain[: len(committed)]
        assert verdict.bonus == (draft_tokens == chain[:num_draft])
        # later rounds extend with the target's argmax: the whole sequence is the target's own greedy output
        while len(committed) < num_draft + 1:
            committed += (target_argmax(committed),)
        assert committed == chain

        # stochastic verification of one-hot rows is the same deterministic verdict
        one_hot_target = np.stack(
            [logits_to_probs(target_logits(draft_tokens[:i]), SamplingParams()) for i in range(num_draft + 1)]
        )
        one_hot_draft = np.eye(vocab_size)[list(draft_tokens)].reshape(num_draft, vocab_size)
        law = verdict_distribution(np.array(draft_tokens), one_hot_draft, one_hot_target)
        assert law == {(verdict.accepted, verdict.token): 1.0}
