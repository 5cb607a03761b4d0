"""The sampling transform, the wire/canonical form, sparse rows and the exponential-race sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest

from covspec.spec import (
    SamplingParams,
    SparseProbs,
    canonical_probs,
    dense_from_sparse,
    from_wire_probs,
    logits_to_probs,
    sample_token,
    sparse_from_dense,
    to_wire_probs,
)

NEG_INF = -np.inf


# --------------------------------------------------------------------------------------------------------------------
# slow loop-based reference twin of logits_to_probs (Hugging Face warper semantics, written out by hand)


def reference_logits_to_probs(row: list[float], temperature: float, top_k: int, top_p: float) -> list[float]:
    """One row [V], plain Python floats and loops."""
    vocab_size = len(row)
    if temperature == 0:
        best = 0
        for i in range(vocab_size):
            if row[i] > row[best]:
                best = i
        return [1.0 if i == best else 0.0 for i in range(vocab_size)]
    scores = [x / temperature for x in row]
    if 0 < top_k < vocab_size:
        kth_largest = sorted(scores, reverse=True)[top_k - 1]
        scores = [s if s >= kth_largest else NEG_INF for s in scores]
    if top_p < 1.0:
        # ascending, stable: among equal scores the lower id comes first
        order = sorted(range(vocab_size), key=lambda i: scores[i])
        top = max(scores)
        weights = [math.exp(scores[i] - top) for i in order]
        total = sum(weights)
        cumulative = 0.0
        removed = set()
        for rank, i in enumerate(order):
            cumulative += weights[rank] / total
            if cumulative <= 1.0 - top_p and rank != vocab_size - 1:
                removed.add(i)
        scores = [NEG_INF if i in removed else scores[i] for i in range(vocab_size)]
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    return [w / total for w in weights]


def _random_logits(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Logits with ties (rounded values) and some -inf entries; every row keeps a finite entry."""
    logits = np.round(rng.normal(scale=2.0, size=shape), 1)
    logits[rng.random(shape) < 0.15] = NEG_INF
    logits[..., 0] = np.where(np.isfinite(logits).any(axis=-1), logits[..., 0], 0.0)
    return logits


# --------------------------------------------------------------------------------------------------------------------
# SamplingParams


def test_defaults_are_greedy_and_valid() -> None:
    params = SamplingParams()
    params.validate()
    assert params.is_greedy
    assert not SamplingParams(temperature=0.7).is_greedy


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": float("nan")}, "top_p"),
        ({"seed": "7"}, "seed"),
    ],
)
def test_validate_names_the_bad_field(kwargs: dict, field: str) -> None:
    params = SamplingParams(**kwargs)
    with pytest.raises(ValueError, match=field):
        params.validate()
    with pytest.raises(ValueError, match=field):
        logits_to_probs(np.zeros(3), params)


# --------------------------------------------------------------------------------------------------------------------
# logits_to_probs: hand-built tables


def test_temperature_table() -> None:
    logits = np.log([1.0, 2.0, 4.0])
    np.testing.assert_allclose(
        logits_to_probs(logits, SamplingParams(temperature=1.0)), [1 / 7, 2 / 7, 4 / 7], rtol=1e-14
    )
    np.testing.assert_allclose(
        logits_to_probs(logits, SamplingParams(temperature=0.5)), [1 / 21, 4 / 21, 16 / 21], rtol=1e-14
    )
    root2 = math.sqrt(2.0)
    total = 1 + root2 + 2
    np.testing.assert_allclose(
        logits_to_probs(logits, SamplingParams(temperature=2.0)), [1 / total, root2 / total, 2 / total], rtol=1e-14
    )


def test_top_k_keeps_every_tie_at_the_boundary() -> None:
    logits = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    probs = logits_to_probs(logits, SamplingParams(temperature=1.0, top_k=2))
    np.testing.assert_allclose(probs, [0, 1 / 3, 1 / 3, 0, 1 / 3], rtol=1e-14)
    assert probs[0] == 0.0 and probs[3] == 0.0
    probs = logits_to_probs(logits, SamplingParams(temperature=1.0, top_k=4))
    assert probs[0] == 0.0 and (probs[1:] > 0).all()
    unfiltered = logits_to_probs(logits, SamplingParams(temperature=1.0))
    for top_k in (5, 9):
        np.testing.assert_array_equal(logits_to_probs(logits, SamplingParams(temperature=1.0, top_k=top_k)), unfiltered)
    np.testing.assert_array_equal(
        logits_to_probs(np.array([0.5, 2.0, 1.0]), SamplingParams(temperature=1.0, top_k=1)), [0.0, 1.0, 0.0]
    )


def test_top_p_table() -> None:
    logits = np.log([0.5, 0.3, 0.2])
    np.testing.assert_allclose(
        logits_to_probs(logits, SamplingParams(temperature=1.0, top_p=0.6)), [0.625, 0.375, 0.0], rtol=1e-14
    )
    np.testing.assert_array_equal(logits_to_probs(logits, SamplingParams(temperature=1.0, top_p=0.4)), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(logits_to_probs(logits, SamplingParams(temperature=1.0, top_p=1e-9)), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(
        logits_to_probs(logits, SamplingParams(temperature=1.0, top_p=0.9)), [0.5, 0.3, 0.2], rtol=1e-14
    )


def test_top_p_breaks_boundary_ties_by_id_like_a_stable_ascending_sort() -> None:
    # four equal tokens, top_p = 0.5: the sorted cumulative mass is 0.25, 0.5, 0.75, 1.0 -> the first two
    # (lowest ids) are removed
    probs = logits_to_probs(np.zeros(4), SamplingParams(temperature=1.0, top_p=0.5))
    np.testing.assert_array_equal(probs, [0.0, 0.0, 0.5, 0.5])


def test_top_k_then_top_p_matches_reference_twin() -> None:
    rng = np.random.default_rng(1234)
    for case in range(300):
        vocab_size = int(rng.integers(1, 12))
        logits = _random_logits(rng, (vocab_size,))
        temperature = float(rng.choice([0.0, 0.3, 1.0, 1.7]))
        top_k = int(rng.integers(0, vocab_size + 2))
        top_p = float(rng.choice([1.0, 0.95, 0.6, 0.3, 0.05]))
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
        expected = reference_logits_to_probs(logits.tolist(), temperature, top_k, top_p)
        got = logits_to_probs(logits, params)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0, err_msg=f"case {case}: {params}")
        np.testing.assert_array_equal(got == 0.0, np.asarray(expected) == 0.0, err_msg=f"case {case}: {params}")


def test_batched_rows_equal_row_by_row() -> None:
    rng = np.random.default_rng(7)
    logits = _random_logits(rng, (6, 9))
    for params in (
        SamplingParams(),
        SamplingParams(temperature=0.8, top_k=3),
        SamplingParams(temperature=1.3, top_p=0.7),
        SamplingParams(temperature=1.0, top_k=5, top_p=0.5),
    ):
        batched = logits_to_probs(logits, params)
        assert batched.shape == logits.shape and batched.dtype == np.float64
        for row in range(logits.shape[0]):
            np.testing.assert_array_equal(batched[row], logits_to_probs(logits[row], params))
        np.testing.assert_allclose(batched.sum(axis=-1), 1.0, rtol=1e-14)


def test_greedy_is_one_hot_at_the_first_argmax_and_ignores_seed() -> None:
    logits = np.array([[0.1, 2.0, 2.0, -1.0], [NEG_INF, NEG_INF, -5.0, NEG_INF]])
    expected = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(logits_to_probs(logits, SamplingParams()), expected)
    np.testing.assert_array_equal(logits_to_probs(logits, SamplingParams(seed=99, top_k=1, top_p=0.2)), expected)
    assert logits_to_probs(logits, SamplingParams()).dtype == np.float64


def test_negative_infinity_logits_get_exactly_zero() -> None:
    logits = np.array([NEG_INF, 0.0, NEG_INF, 1.0, -700.0], dtype=np.float32)
    for params in (SamplingParams(temperature=1.0), SamplingParams(temperature=50.0, top_p=0.99)):
        probs = logits_to_probs(logits, params)
        assert probs[0] == 0.0 and probs[2] == 0.0
        assert probs[1] > 0 and probs[3] > 0
    # top-k with k larger than the finite support keeps the -inf entries at zero
    probs = logits_to_probs(logits, SamplingParams(temperature=1.0, top_k=4))
    assert probs[0] == 0.0 and probs[2] == 0.0 and math.isclose(probs.sum(), 1.0, rel_tol=1e-15)


@pytest.mark.parametrize(
    ("logits", "message"),
    [
        (np.array([NEG_INF, NEG_INF]), "entirely -inf"),
        (np.array([0.0, np.nan]), "NaN"),
        (np.array([0.0, np.inf]), r"\+inf"),
        (np.array([1, 2, 3]), "floating"),
        (np.zeros(0), "V >= 1"),
    ],
)
def test_bad_logits_raise(logits: np.ndarray, message: str) -> None:
    for params in (SamplingParams(), SamplingParams(temperature=1.0)):
        with pytest.raises(ValueError, match=message):
            logits_to_probs(logits, params)


# --------------------------------------------------------------------------------------------------------------------
# wire form and canonical form


def test_wire_round_trip_dtypes_and_idempotence() -> None:
    rng = np.random.default_rng(3)
    probs = logits_to_probs(_random_logits(rng, (5, 50)), SamplingParams(temperature=1.0, top_k=20))
    wire = to_wire_probs(probs)
    assert wire.dtype == np.float32 and wire.shape == probs.shape
    canonical = from_wire_probs(wire)
    assert canonical.dtype == np.float64
    np.testing.assert_allclose(canonical, probs, rtol=1e-6)
    np.testing.assert_array_equal(canonical == 0.0, probs == 0.0)
    np.testing.assert_array_equal(canonical, canonical_probs(probs))
    np.testing.assert_allclose(canonical_probs(canonical), canonical, rtol=1e-15, atol=0)
    np.testing.assert_allclose(canonical.sum(axis=-1), 1.0, rtol=1e-15)


def test_same_wire_bytes_give_bit_identical_rows() -> None:
    rng = np.random.default_rng(4)
    wire = to_wire_probs(rng.dirichlet(np.full(1000, 0.1), size=3))
    received = np.frombuffer(wire.tobytes(), dtype=np.float32).reshape(wire.shape)
    first = from_wire_probs(wire)
    assert first.tobytes() == from_wire_probs(wire).tobytes() == from_wire_probs(received).tobytes()


def test_wire_normalisation_is_the_correctly_rounded_sum_and_order_free() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        vocab_size = int(rng.integers(1, 400))
        row = (rng.random(vocab_size) * 10.0 ** rng.integers(-44, 3, size=vocab_size)).astype(np.float32)
        row[rng.random(vocab_size) < 0.3] = 0.0
        row[0] = np.float32(rng.random() + 0.01)
        row[rng.random(vocab_size) < 0.05] = np.float32(1e-45)  # subnormal
        exact_total = math.fsum(row.astype(np.float64).tolist())
        np.testing.assert_array_equal(from_wire_probs(row), row.astype(np.float64) / exact_total)
        permutation = rng.permutation(vocab_size)
        np.testing.assert_array_equal(from_wire_probs(row[permutation]), from_wire_probs(row)[permutation])


def test_negative_zero_on_the_wire_counts_as_zero() -> None:
    with_negative_zero = np.array([0.25, -0.0, 0.5], dtype=np.float32)
    np.testing.assert_array_equal(from_wire_probs(with_negative_zero), [1 / 3, 0.0, 2 / 3])


def test_from_wire_needs_float32_distributions() -> None:
    with pytest.raises(ValueError, match="float32"):
        from_wire_probs(np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="all zero"):
        from_wire_probs(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="negative"):
        from_wire_probs(np.array([1.0, -0.5], dtype=np.float32))
    with pytest.raises(ValueError, match="NaN or inf"):
        to_wire_probs(np.array([1.0, np.nan]))


# --------------------------------------------------------------------------------------------------------------------
# sparse rows


def test_sparse_round_trip_is_bit_identical_to_the_dense_wire_path() -> None:
    rng = np.random.default_rng(6)
    for case in range(40):
        vocab_size = int(rng.integers(1, 300))
        params = SamplingParams(
            temperature=float(rng.choice([0.0, 0.7, 1.0])),
            top_k=int(rng.integers(0, 10)),
            top_p=float(rng.choice([1.0, 0.9, 0.6])),
        )
        probs = logits_to_probs(_random_logits(rng, (vocab_size,)), params)
        sparse = sparse_from_dense(probs)
        wire = to_wire_probs(probs)
        assert sparse.ids.dtype == np.int32 and sparse.probs.dtype == np.float32
        np.testing.assert_array_equal(np.sort(sparse.ids), np.flatnonzero(wire))  # exactly the support
        assert (np.diff(sparse.probs) <= 0).all()  # descending
        np.testing.assert_array_equal(sparse.probs, wire[sparse.ids])
        dense = dense_from_sparse(sparse, vocab_size)
        assert dense.dtype == np.float64
        assert dense.tobytes() == from_wire_probs(wire).tobytes(), f"case {case}"
        # a float32 row is taken as wire values directly
        assert dense_from_sparse(sparse_from_dense(wire), vocab_size).tobytes() == dense.tobytes()


def test_sparse_ties_are_ordered_by_id() -> None:
    sparse = sparse_from_dense(np.array([0.0, 0.25, 0.5, 0.25, 0.0]))
    np.testing.assert_array_equal(sparse.ids, [2, 1, 3])
    assert len(sparse) == 3


def test_sparse_validation() -> None:
    with pytest.raises(ValueError, match="int32"):
        SparseProbs(ids=np.array([0], dtype=np.int64), probs=np.array([1.0], dtype=np.float32))
    with pytest.raises(ValueError, match="float32"):
        SparseProbs(ids=np.array([0], dtype=np.int32), probs=np.array([1.0]))
    with pytest.raises(ValueError, match="descending"):
        SparseProbs(ids=np.array([0, 1], dtype=np.int32), probs=np.array([0.2, 0.8], dtype=np.float32))
    with pytest.raises(ValueError, match="distinct"):
        SparseProbs(ids=np.array([1, 1], dtype=np.int32), probs=np.array([0.5, 0.5], dtype=np.float32))
    with pytest.raises(ValueError, match="> 0"):
        SparseProbs(ids=np.array([1, 0], dtype=np.int32), probs=np.array([1.0, 0.0], dtype=np.float32))
    with pytest.raises(ValueError, match="nonempty"):
        SparseProbs(ids=np.zeros(0, dtype=np.int32), probs=np.zeros(0, dtype=np.float32))
    sparse = SparseProbs(ids=np.array([4], dtype=np.int32), probs=np.array([1.0], dtype=np.float32))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        dense_from_sparse(sparse, 4)


# --------------------------------------------------------------------------------------------------------------------
# sample_token


def test_sample_token_never_picks_zero_probability_ids() -> None:
    probs = np.array([0.0, 1e-300, 0.0, 0.7, 0.0, 0.3, 0.0])
    rng = np.random.default_rng(8)
    drawn = {sample_token(probs, rng) for _ in range(5000)}
    assert drawn <= {1, 3, 5}
    assert {3, 5} <= drawn
    assert all(sample_token(np.array([0.0, 0.0, 2.0]), rng) == 2 for _ in range(200))


def test_sample_token_frequencies_converge_to_probs() -> None:
    probs = np.array([0.05, 0.0, 0.4, 0.15, 0.3, 0.1])
    draws = 40_000
    rng = np.random.default_rng(9)
    counts = np.bincount([sample_token(probs, rng) for _ in range(draws)], minlength=probs.size)
    expected = draws * probs
    sigma = np.sqrt(draws * probs * (1 - probs))
    assert (np.abs(counts - expected) <= 5 * sigma).all(), (counts, expected)
    assert counts[1] == 0
    # Pearson chi-square over the 5 nonzero cells (4 degrees of freedom): P(X > 30) < 5e-6
    support = probs > 0
    chi_square = float((((counts - expected) ** 2)[support] / expected[support]).sum())
    assert chi_square < 30.0, chi_square


def test_sample_token_needs_no_normalisation() -> None:
    probs = np.array([0.1, 0.6, 0.3])
    first, second = np.random.default_rng(10), np.random.default_rng(10)
    for _ in range(500):  # scaling by 2 is exact, so the race is decided identically
        assert sample_token(probs, first) == sample_token(2.0 * probs, second)


def test_sample_token_rejects_bad_rows() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="all zero"):
        sample_token(np.zeros(3), rng)
    with pytest.raises(ValueError, match="negative"):
        sample_token(np.array([0.5, -0.1]), rng)
    with pytest.raises(ValueError, match="one row"):
        sample_token(np.full((2, 2), 0.25), rng)
