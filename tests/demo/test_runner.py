"""`run_demo`: every row, target-only included, is checked against transformers' own generate() of the target; the
edge and the device run on disjoint CPUs and say so; the full runtime's row is lossless."""

from __future__ import annotations

import os

import pytest


@pytest.mark.e2e
def test_every_row_is_checked_against_the_targets_own_generate(tiny_pair, monkeypatch) -> None:
    """The target-only row is not identical by construction: an edge answer that is not transformers' own is reported,
    and it does not spoil the speculative rows, which are checked against generate() too."""
    import covspec.bench.sidebyside as sidebyside
    from covspec.demo.runner import run_demo
    from covspec.demo.train import PairPaths

    served = sidebyside.generate_target_only

    def first_token_lost(*args, **kwargs):
        result = served(*args, **kwargs)
        result.tokens = result.tokens[1:]
        return result

    monkeypatch.setattr(sidebyside, "generate_target_only", first_token_lost)
    affinity = os.sched_getaffinity(0)
    pair = PairPaths(tiny_pair("llava").target.parent)  # root/target and root/drafter, as a trained pair
    result = run_demo(pair, n_scenes=2, max_new_tokens=8)
    rows = {row["mode"]: row for row in result["rows"]}
    assert list(rows) == ["target-only", "vanilla", "covspec"]
    assert rows["target-only"]["identical_to_target"] is False
    assert rows["vanilla"]["identical_to_target"] is True and rows["covspec"]["identical_to_target"] is True
    assert rows["covspec"]["policy"] == "cost" and rows["vanilla"]["persistent"] is False
    assert os.sched_getaffinity(0) == affinity  # the device's pinning is undone on return
    if len(affinity) >= 2:
        assert not set(result["edge_cpus"]) & set(result["device_cpus"]) and not result["cpus_shared"]
        assert result["edge_threads"] == len(result["edge_cpus"])
