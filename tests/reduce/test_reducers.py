"""The reducers on constructed features: each keeps exactly its budget, is deterministic, keeps the tokens the prompt
is about, and (the content-aware ones) drops exact duplicates first."""

from __future__ import annotations

import numpy as np
import pytest

from covspec.reduce import REDUCERS, Budget, reducer_named
from covspec.reduce.reducers import SKETCH_DIM, ElasticReducer, importance, pivoted_selection, sketch


def _features(n: int = 48, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("name", list(REDUCERS))
@pytest.mark.parametrize("budget", ["0.25", "0.5", "1", "7", "1000"])
def test_every_reducer_keeps_exactly_its_budget_in_order_and_deterministically(name, budget) -> None:
    features, query = _features(), _features(5, seed=1)
    reducer = reducer_named(name)
    first = reducer.reduce(features, query, Budget.parse(budget))
    again = reducer.reduce(features, query, Budget.parse(budget))
    k = Budget.parse(budget).tokens(48)
    assert k == {"0.25": 12, "0.5": 24, "1": 48, "7": 7, "1000": 48}[budget]
    assert first.kept.shape == (k,) and first.features.shape == (k, 16)
    assert np.all(np.diff(first.kept) > 0) and first.kept.min() >= 0 and first.kept.max() < 48
    assert np.array_equal(first.kept, again.kept) and np.array_equal(first.features, again.features)
    if k == 48:
        assert np.array_equal(first.kept, np.arange(48)) and np.array_equal(first.features, features)


def test_budgets_parse_and_refuse_nonsense() -> None:
    assert Budget.parse("0.25") == Budget(ratio=0.25) and Budget.parse("64") == Budget(count=64)
    assert Budget.parse(1) == Budget(ratio=1.0) and Budget(ratio=1.0).keeps_everything
    assert Budget(ratio=0.01).tokens(10) == 1  # never nothing
    for bad in ("0", "-0.5", "2.5"):
        with pytest.raises(ValueError):
            Budget.parse(bad)
    with pytest.raises(ValueError):
        reducer_named("nope")


def _relevant_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """40 background tokens orthogonal to the prompt's topic and 6 distinct tokens leaning towards it, all of one
    norm."""
    rng = np.random.default_rng(seed)
    d = 32
    topic = rng.normal(size=d)
    topic /= np.linalg.norm(topic)

    def off_topic(n: int) -> np.ndarray:
        x = rng.normal(size=(n, d))
        x -= np.outer(x @ topic, topic)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    background = 4.0 * off_topic(40)
    relevant = 4.0 * (0.8 * topic + 0.6 * off_topic(6))
    features = np.concatenate([background, relevant]).astype(np.float32)
    order = rng.permutation(46)
    features = features[order]
    relevant_at = np.flatnonzero(order >= 40)
    query = (3.0 * topic + 0.1 * rng.normal(size=(4, d))).astype(np.float32)
    return features, query, relevant_at


@pytest.mark.parametrize("name", ["covspec", "merge", "elastic"])
def test_content_aware_reducers_keep_the_tokens_the_prompt_is_about(name) -> None:
    features, query, relevant_at = _relevant_scene()
    kept = reducer_named(name).reduce(features, query, Budget(count=8)).kept
    assert set(relevant_at.tolist()) <= set(kept.tolist()), (kept, relevant_at)


def test_random_and_pool_do_not_look_at_the_prompt() -> None:
    features, query, _ = _relevant_scene()
    for name in ("random", "pool"):
        reducer = reducer_named(name)
        with_query = reducer.reduce(features, query, Budget(count=8))
        without = reducer.reduce(features, None, Budget(count=8))
        assert np.array_equal(with_query.kept, without.kept)


@pytest.mark.parametrize("width", [16, 512])  # 512: read through the Gaussian sketch (SKETCH_DIM)
def test_covspec_drops_exact_duplicates_before_anything_distinct(width: int) -> None:
    rng = np.random.default_rng(3)
    distinct = rng.normal(size=(8, width)).astype(np.float32)
    features = np.repeat(distinct, 4, axis=0)[rng.permutation(32)]  # every token four times, shuffled
    kept = reducer_named("covspec").reduce(features, None, Budget(count=8))
    rows = {tuple(r) for r in features[kept.kept].tolist()}
    assert len(rows) == 8  # one of each: no duplicate kept while a distinct token was left
    # importance alone would keep duplicates of the most active tokens
    by_importance = np.argsort(-importance(features, None), kind="stable")[:8]
    assert len({tuple(r) for r in features[by_importance].tolist()}) < 8


def test_sketch_keeps_narrow_features_and_shrinks_wide_ones_nearly_isometrically() -> None:
    narrow = _features(40, SKETCH_DIM)
    assert sketch(narrow, SKETCH_DIM) is narrow
    wide = _features(40, 1024)
    small = sketch(wide, SKETCH_DIM)
    assert small.shape == (40, SKETCH_DIM) and np.array_equal(small, sketch(wide, SKETCH_DIM))  # fixed, seeded map
    ratio = np.linalg.norm(small, axis=1) / np.linalg.norm(wide.astype(np.float64), axis=1)
    assert np.all(np.abs(ratio - 1.0) < 0.25)  # norms kept within a JL distortion at 128 dimensions


def test_pivoted_selection_past_the_rank_falls_back_to_importance() -> None:
    base = np.eye(4, 8, dtype=np.float64)
    features = np.concatenate([base, base * 2.0])  # rank 4, 8 tokens
    weights = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    kept = pivoted_selection(features, weights, 6)
    assert kept.shape == (6,) and len(set(kept.tolist())) == 6
    assert {4, 5, 6, 7} <= set(kept.tolist())  # one per direction first (the heavier copies), then by weight


def test_merge_averages_each_dropped_token_into_its_nearest_kept_one() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    features = np.stack([a * 3, a * 2.9 + b * 0.1, b * 3, b * 2.8 + a * 0.2]).astype(np.float32)
    out = reducer_named("merge").reduce(features, None, Budget(count=2))
    assert out.kept.tolist() == [0, 2]  # the two most active
    np.testing.assert_allclose(out.features[0], (features[0] + features[1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out.features[1], (features[2] + features[3]) / 2, rtol=1e-6)


def test_pool_keeps_each_groups_middle_with_its_mean() -> None:
    features = np.arange(20, dtype=np.float32).reshape(10, 2)
    out = reducer_named("pool").reduce(features, None, Budget(count=3))
    assert out.kept.tolist() == [1, 5, 8]  # groups 0-3, 4-6, 7-9
    np.testing.assert_allclose(out.features[0], features[0:4].mean(axis=0))


def test_random_depends_on_its_seed_only() -> None:
    from covspec.reduce.reducers import RandomReducer

    features = _features()
    a = RandomReducer(seed=1).reduce(features, None, Budget(count=10)).kept
    assert np.array_equal(a, RandomReducer(seed=1).reduce(features * 2, None, Budget(count=10)).kept)
    assert not np.array_equal(a, RandomReducer(seed=2).reduce(features, None, Budget(count=10)).kept)


def test_elastic_prunes_concentrated_attention_merges_redundancy_and_pools_otherwise() -> None:
    elastic = ElasticReducer()
    features, query, _ = _relevant_scene()
    assert elastic.choose(features, query, 8) == "covspec"
    near_copies = np.repeat(_features(6), 5, axis=0) + 0.01 * _features(30, seed=9)
    assert elastic.choose(near_copies, None, 6) == "merge"
    assert elastic.choose(_features(), None, 12) == "pool"
    assert elastic.choose(_features(), _features(5, seed=1), 12) == "pool"  # a query about nothing in particular
    assert elastic.reduce(near_copies, None, Budget(count=6)).method == "elastic:merge"
