"""The samplers draw from their exact twins; hand-built tables; greedy; entry checks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from covspec.spec import (
    Verdict,
    accept_prefix,
    acceptance_probability,
    accepted_count_distribution,
    canonical_probs,
    dssd_verdict_distribution,
    residual_distribution,
    sample_residual,
    verdict_distribution,
    verify_dssd,
    verify_greedy,
    verify_stochastic,
)

TRIALS = 20_000


def _rows(*rows: list[float]) -> np.ndarray:
    """Canonical distributions [R, V] from hand-written rows."""
    return canonical_probs(np.array(rows, dtype=np.float64))


# A block with every kind of position: partial acceptance, a draft token the target gives no mass, and a bonus row.
DRAFT_TOKENS = np.array([1, 3, 0])
DRAFT_PROBS = _rows([0.1, 0.6, 0.25, 0.05], [0.25, 0.25, 0.0, 0.5], [0.7, 0.1, 0.1, 0.1])  # [K=3, V=4]
TARGET_PROBS = _rows(  # [K+1=4, V=4]
    [0.3, 0.4, 0.2, 0.1], [0.2, 0.3, 0.1, 0.4], [0.5, 0.0, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]
)


def assert_frequencies_match(counts: Counter, law: dict[tuple[int, int], float], trials: int) -> None:
    """Every outcome within a 5-sigma binomial bound of its exact probability; impossible outcomes never seen."""
    assert set(counts) <= set(law), set(counts) - set(law)
    for outcome, prob in law.items():
        sigma = np.sqrt(trials * prob * (1 - prob))
        observed = counts.get(outcome, 0)
        assert abs(observed - trials * prob) <= 5 * sigma + 1, (outcome, observed, trials * prob)


def test_verify_stochastic_draws_from_verdict_distribution() -> None:
    law = verdict_distribution(DRAFT_TOKENS, DRAFT_PROBS, TARGET_PROBS)
    assert abs(sum(law.values()) - 1.0) < 1e-14
    assert len(law) >= 8  # corrections at several positions and bonus tokens: a real test
    rng = np.random.default_rng(11)
    counts: Counter = Counter()
    for _ in range(TRIALS):
        verdict = verify_stochastic(DRAFT_TOKENS, DRAFT_PROBS, TARGET_PROBS, rng)
        assert verdict.bonus == (verdict.accepted == 3)
        counts[(verdict.accepted, verdict.token)] += 1
    assert_frequencies_match(counts, law, TRIALS)


def test_verify_dssd_draws_from_its_own_distribution() -> None:
    law = dssd_verdict_distribution(DRAFT_TOKENS, DRAFT_PROBS, TARGET_PROBS)
    edge_rng, device_rng = np.random.default_rng(12), np.random.default_rng(13)
    counts: Counter = Counter()
    for _ in range(TRIALS):
        verdict = verify_dssd(DRAFT_TOKENS, DRAFT_PROBS, TARGET_PROBS, edge_rng, device_rng)
        counts[(verdict.accepted, verdict.token)] += 1
    assert_frequencies_match(counts, law, TRIALS)


def test_dssd_with_one_generator_replays_verify_stochastic_exactly() -> None:
    rng = np.random.default_rng(14)
    for trial in range(300):
        vocab_size = int(rng.integers(2, 7))
        num_draft = int(rng.integers(0, 5))
        draft_probs = canonical_probs(rng.dirichlet(np.ones(vocab_size), size=num_draft).reshape(num_draft, vocab_size))
        target_probs = canonical_probs(rng.dirichlet(np.full(vocab_size, 0.5), size=num_draft + 1))
        draft_tokens = np.array([int(np.argmax(row)) for row in draft_probs], dtype=np.int64)
        first, second = np.random.default_rng(trial), np.random.default_rng(trial)
        vanilla = verify_stochastic(draft_tokens, draft_probs, target_probs, first)
        dssd = verify_dssd(draft_tokens, draft_probs, target_probs, second, second)
        assert vanilla == dssd
        assert first.random() == second.random()  # and consumed the same randomness


def test_accepted_count_law_matches_accept_prefix() -> None:
    draft_token_probs = DRAFT_PROBS[np.arange(3), DRAFT_TOKENS]
    acceptance = [acceptance_probability(TARGET_PROBS[i, t], draft_token_probs[i]) for i, t in enumerate(DRAFT_TOKENS)]
    np.testing.assert_allclose(acceptance, [0.4 / 0.6, 0.4 / 0.5, 0.5 / 0.7], rtol=1e-6)
    law = accepted_count_distribution(np.array(acceptance))
    rng = np.random.default_rng(15)
    counts = np.bincount(
        [accept_prefix(DRAFT_TOKENS, draft_token_probs, TARGET_PROBS, rng) for _ in range(TRIALS)], minlength=4
    )
    sigma = np.sqrt(TRIALS * law * (1 - law))
    assert (np.abs(counts - TRIALS * law) <= 5 * sigma + 1).all(), (counts, TRIALS * law)


def test_sample_residual_draws_from_the_residual() -> None:
    target_row, draft_row = TARGET_PROBS[0], DRAFT_PROBS[0]
    residual = residual_distribution(target_row, draft_row)
    np.testing.assert_allclose(residual, [0.8, 0.0, 0.0, 0.2], rtol=1e-6)
    rng = np.random.default_rng(16)
    counts = np.bincount([sample_residual(target_row, draft_row, rng) for _ in range(TRIALS)], minlength=4)
    assert counts[1] == 0 and counts[2] == 0
    assert abs(counts[0] - TRIALS * residual[0]) <= 5 * np.sqrt(TRIALS * residual[0] * residual[3]) + 1


# --------------------------------------------------------------------------------------------------------------------
# hand-built tables


def test_draft_equal_to_target_is_always_fully_accepted() -> None:
    probs = _rows([0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8])
    rng = np.random.default_rng(17)
    for _ in range(2000):
        draft_tokens = np.array([rng.choice(3, p=probs[0]), rng.choice(3, p=probs[1])])
        for verdict in (
            verify_stochastic(draft_tokens, probs[:2], probs, rng),
            verify_dssd(draft_tokens, probs[:2], probs, rng, rng),
        ):
            assert verdict.accepted == 2 and verdict.bonus
    assert verdict_distribution(np.array([0, 2]), probs[:2], probs) == {
        (2, t): pytest.approx(float(probs[2, t]), abs=1e-15) for t in range(3)
    }


def test_token_the_target_rules_out_is_always_rejected() -> None:
    target_probs = _rows([0.5, 0.5, 0.0], [0.2, 0.3, 0.5])
    draft_probs = _rows([0.0, 0.0, 1.0])
    draft_tokens = np.array([2])
    assert acceptance_probability(0.0, 1.0) == 0.0
    rng = np.random.default_rng(18)
    seen = set()
    for _ in range(2000):
        for verdict in (
            verify_stochastic(draft_tokens, draft_probs, target_probs, rng),
            verify_dssd(draft_tokens, draft_probs, target_probs, rng, rng),
        ):
            assert verdict.accepted == 0 and not verdict.bonus
            seen.add(verdict.token)
    assert seen == {0, 1}
    law = verdict_distribution(draft_tokens, draft_probs, target_probs)
    assert law == {(0, 0): pytest.approx(0.5, abs=1e-15), (0, 1): pytest.approx(0.5, abs=1e-15)}


def test_k_zero_samples_the_bonus_from_the_target() -> None:
    target_probs = _rows([0.25, 0.0, 0.75])
    law = verdict_distribution(np.zeros(0, dtype=np.int64), np.zeros((0, 3)), target_probs)
    assert law == {(0, 0): pytest.approx(0.25, abs=1e-15), (0, 2): pytest.approx(0.75, abs=1e-15)}
    rng = np.random.default_rng(19)
    counts: Counter = Counter()
    for _ in range(4000):
        verdict = verify_stochastic(np.zeros(0, dtype=np.int64), np.zeros((0, 3)), target_probs, rng)
        assert verdict.bonus and verdict.accepted == 0
        counts[(0, verdict.token)] += 1
    assert_frequencies_match(counts, law, 4000)
    assert verify_dssd([], np.zeros((0, 3)), target_probs, rng, rng).bonus


def test_residual_falls_back_to_the_target_when_draft_equals_target() -> None:
    row = _rows([0.2, 0.0, 0.8])[0]
    np.testing.assert_array_equal(residual_distribution(row, row), row / row.sum())
    np.testing.assert_allclose(residual_distribution(np.array([0.5, 0.5]), np.array([1.0, 0.0])), [0.0, 1.0])


def test_accepted_count_distribution_table() -> None:
    np.testing.assert_allclose(accepted_count_distribution(np.array([0.5, 1.0, 0.0])), [0.5, 0.0, 0.5, 0.0])
    np.testing.assert_allclose(accepted_count_distribution(np.array([0.5, 0.5])), [0.5, 0.25, 0.25])
    np.testing.assert_array_equal(accepted_count_distribution(np.zeros(0)), [1.0])


# --------------------------------------------------------------------------------------------------------------------
# greedy


@pytest.mark.parametrize(
    ("draft_tokens", "target_argmax", "expected"),
    [
        ([], [7], Verdict(0, 7, True)),
        ([4, 5, 6], [4, 5, 6, 9], Verdict(3, 9, True)),
        ([4, 5, 6], [1, 5, 6, 9], Verdict(0, 1, False)),
        ([4, 5, 6], [4, 2, 6, 9], Verdict(1, 2, False)),
        ([4, 5, 6], [4, 5, 3, 9], Verdict(2, 3, False)),
    ],
)
def test_verify_greedy_table(draft_tokens: list[int], target_argmax: list[int], expected: Verdict) -> None:
    verdict = verify_greedy(np.array(draft_tokens, dtype=np.int64), np.array(target_argmax))
    assert verdict == expected
    assert verdict.committed(draft_tokens) == draft_tokens[: expected.accepted] + [expected.token]


def test_committed_rejects_a_short_block() -> None:
    with pytest.raises(ValueError, match="accepts 2"):
        Verdict(2, 0, True).committed([1])


# --------------------------------------------------------------------------------------------------------------------
# entry checks


def test_zero_draft_probability_raises() -> None:
    with pytest.raises(ValueError, match="> 0"):
        acceptance_probability(0.5, 0.0)
    with pytest.raises(ValueError, match="> 0"):
        acceptance_probability(0.5, -0.1)
    draft_probs = _rows([0.0, 1.0, 0.0])
    target_probs = _rows([0.3, 0.3, 0.4], [0.3, 0.3, 0.4])
    rng = np.random.default_rng(0)
    for call in (
        lambda: verify_stochastic([0], draft_probs, target_probs, rng),
        lambda: verify_dssd([0], draft_probs, target_probs, rng, rng),
        lambda: verdict_distribution([0], draft_probs, target_probs),
        lambda: dssd_verdict_distribution([0], draft_probs, target_probs),
        lambda: accept_prefix([0], np.array([0.0]), target_probs, rng),
    ):
        with pytest.raises(ValueError, match="probability"):
            call()


@pytest.mark.parametrize(
    ("draft_tokens", "draft_probs", "target_probs", "message"),
    [
        ([0], np.full((1, 3), 1 / 3), np.full((1, 3), 1 / 3), "K\\+1"),
        ([0, 1], np.full((1, 3), 1 / 3), np.full((3, 3), 1 / 3), "draft_probs must have shape"),
        ([3], np.full((1, 3), 1 / 3), np.full((2, 3), 1 / 3), "outside the vocabulary"),
        ([-1], np.full((1, 3), 1 / 3), np.full((2, 3), 1 / 3), "negative"),
        ([0], np.full((1, 3), 0.5), np.full((2, 3), 1 / 3), "sum to 1"),
        ([0], np.full((1, 3), 1 / 3), np.array([[1.0, 0.0, 0.0], [np.nan, 0.5, 0.5]]), "finite"),
    ],
)
def test_bad_blocks_raise(draft_tokens, draft_probs, target_probs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        verify_stochastic(np.array(draft_tokens), draft_probs, target_probs, np.random.default_rng(0))


def test_greedy_shape_check() -> None:
    with pytest.raises(ValueError, match="K\\+1"):
        verify_greedy(np.array([1, 2]), np.array([1, 2]))
