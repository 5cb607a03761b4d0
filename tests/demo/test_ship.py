"""The pair shipped inside the package (when present): files as recorded, loadable, within the size budget."""

from __future__ import annotations

import json

import pytest

from covspec.demo import ship
from covspec.demo.train import TrainConfig

MAX_BYTES = 20 * 1024 * 1024

shipped = ship.shipped_pair()
needs_shipped = pytest.mark.skipif(shipped is None, reason="this package holds no shipped demo pair")


@needs_shipped
def test_shipped_files_match_their_provenance() -> None:
    provenance = json.loads((shipped.root / ship.PROVENANCE).read_text())
    assert provenance["digest"] == TrainConfig().digest(0) and provenance["seed"] == 0
    assert provenance["commands"] and all(c.startswith("python -m covspec.demo.ship") for c in provenance["commands"])
    assert ship.file_hashes(shipped.root) == provenance["sha256"]
    assert sum(p.stat().st_size for p in shipped.root.rglob("*") if p.is_file()) <= MAX_BYTES


@needs_shipped
def test_shipped_pair_loads_in_float32_and_shares_the_tokenizer() -> None:
    from covspec.models import load_model

    target, drafter = load_model(str(shipped.target)), load_model(str(shipped.drafter))
    assert str(target.dtype) == str(drafter.dtype) == "torch.float32"
    assert target.fingerprint.tokenizer_hash == drafter.fingerprint.tokenizer_hash


@needs_shipped
def test_shipped_quality_bars_as_recorded() -> None:
    """The issue's bars on the recorded evaluation of the stored fp16 weights (300 held-out questions)."""
    scores = json.loads((shipped.root / ship.PROVENANCE).read_text())["evaluation_stored"]
    assert scores["n_questions"] >= 200
    assert scores["target_accuracy"] >= 0.9
    assert scores["drafter_accuracy"] < scores["target_accuracy"] - 0.1
    assert scores["aal"] >= 2.5 and scores["k"] == 4
    assert scores["identical_to_target"] == 1.0


@needs_shipped
def test_shipped_target_answers_a_live_sample() -> None:
    """A spot check of the stored weights themselves (the full evaluation takes minutes; provenance records it)."""
    from covspec.demo.evaluate import evaluate_pair

    n = 24
    recorded = json.loads((shipped.root / ship.PROVENANCE).read_text())["evaluation_stored"]["target_accuracy"]
    scores = evaluate_pair(shipped, n, threads=1)
    # the stored weights are the ones evaluated: a 24-question sample lands within 3 binomial sigmas of the record
    sigma = (recorded * (1 - recorded) / n) ** 0.5
    assert abs(scores["target_accuracy"] - recorded) <= 3 * sigma
    assert scores["target_accuracy"] > scores["majority_baseline"]
    assert scores["identical_to_target"] == 1.0


def test_shipped_target_is_the_default_target_of_the_shipped_drafter_only(tmp_path) -> None:
    assert ship.shipped_target_for(ship.SHIPPED_DIR / "drafter") == ship.SHIPPED_DIR / "target"
    assert ship.shipped_target_for(str(ship.SHIPPED_DIR / "drafter")) == ship.SHIPPED_DIR / "target"
    assert ship.shipped_target_for(tmp_path) is None
    assert ship.shipped_target_for("org/some-hub-id") is None
    assert ship.shipped_target_for(None) is None
