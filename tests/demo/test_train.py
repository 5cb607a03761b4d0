"""Training pieces of the demo pair: the patch probe's labels (with the neighbour relations), the digest's
compatibility rule for fields added later, and a short run with the relation probe on."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from covspec.demo import scenes
from covspec.demo.train import IGNORE, PAIR_FORMAT, TrainConfig, patch_labels


def _item_with(n_objects: int) -> scenes.QAItem:
    for seed in range(1000):
        scene = scenes.make_scene(seed)
        if len(scene.objects) == n_objects:
            return scenes.qa_items(scene)[0]
    raise AssertionError(f"no scene with {n_objects} objects in the first 1000 seeds")


def test_relation_labels_name_each_objects_neighbours() -> None:
    item = _item_with(3)
    objects = item.scene.objects
    plain, related = patch_labels([item]), patch_labels([item], relations=True)
    assert plain.shape == (1, 16, 3) and related.shape == (1, 16, 7)
    assert related[..., :3].equal(plain)  # the cell columns are unchanged
    colours, shapes = list(scenes.COLOURS), list(scenes.SHAPES)
    occupied = set()
    for i, obj in enumerate(objects):
        cell = obj.row * scenes.GRID + obj.column
        occupied.add(cell)
        row = related[0, cell].tolist()
        if i == 0:
            assert row[3:5] == [0, 0]  # nothing on the left
        else:
            left = objects[i - 1]
            assert row[3:5] == [colours.index(left.colour) + 1, shapes.index(left.shape) + 1]
        if i == len(objects) - 1:
            assert row[5:7] == [0, 0]
        else:
            right = objects[i + 1]
            assert row[5:7] == [colours.index(right.colour) + 1, shapes.index(right.shape) + 1]
    for cell in set(range(16)) - occupied:
        assert related[0, cell, 3:].tolist() == [IGNORE] * 4  # empty cells have no neighbours to predict
        assert related[0, cell, :3].tolist() == [0, 0, 0]


def test_relation_labels_agree_with_the_left_right_answers() -> None:
    """The probe teaches what the left/right questions ask: the neighbour named in each answer."""
    colours, shapes = list(scenes.COLOURS), list(scenes.SHAPES)
    items = scenes.dataset("train", 200, tasks=("left", "right"))
    labels = patch_labels(items, relations=True)
    for b, item in enumerate(items):
        name = item.question.removesuffix("?").split(" of the ")[1]
        obj = next(o for o in item.scene.objects if o.name == name)
        start = 3 if item.task == "left" else 5
        colour, shape = labels[b, obj.row * scenes.GRID + obj.column, start : start + 2].tolist()
        expected = "nothing" if colour == 0 else f"a {colours[colour - 1]} {shapes[shape - 1]}"
        assert item.answer == expected


def test_fields_added_later_leave_older_digests_alone() -> None:
    """A pair trained before ``relation_probe`` and ``task_weights`` existed keeps its digest."""
    base = TrainConfig.reduced()
    later = ("relation_probe", "task_weights")
    legacy = {k: v for k, v in base.to_dict().items() if k not in ("threads", "device", "workers", *later)}
    payload = json.dumps({"config": legacy, "seed": 0, "format": PAIR_FORMAT}, sort_keys=True)
    assert base.digest(0) == hashlib.sha256(payload.encode()).hexdigest()
    assert dataclasses.replace(base, relation_probe=True).digest(0) != base.digest(0)
    assert dataclasses.replace(base, task_weights=(1.0, 2.0)).digest(0) != base.digest(0)


def test_task_weights_need_one_entry_per_task() -> None:
    with pytest.raises(ValueError, match="one per task"):
        dataclasses.replace(TrainConfig(), tasks=("colour", "shape"))
    assert dataclasses.replace(TrainConfig(), tasks=("colour", "shape"), task_weights=()).task_weights == ()


def test_probe_with_relations_trains(tmp_path) -> None:
    """A few steps of the reduced pair with the relation probe and task weights: both stages run and record their
    config."""
    from covspec.demo.train import train_pair

    base = TrainConfig.reduced()
    config = dataclasses.replace(
        base,
        target=dataclasses.replace(base.target, steps=20, batch_size=8),
        drafter=dataclasses.replace(base.drafter, steps=3, batch_size=8),
        tasks=("left", "right"),
        task_weights=(1.0, 2.0),
        max_objects=3,
        relation_probe=True,
    )
    paths = train_pair(tmp_path / "pair", config)
    info = json.loads(paths.info.read_text())
    assert info["digest"] == config.digest(0) and info["config"]["relation_probe"] is True
    assert info["config"]["task_weights"] == [1.0, 2.0]
    assert paths.exists()


def test_probe_loss_ignores_empty_cells() -> None:
    import torch

    from covspec.demo.pair import build_model
    from covspec.demo.train import Encoder, PatchProbe

    config = TrainConfig.reduced()
    torch.manual_seed(0)
    model, processor = build_model(config.target_size)
    probe = PatchProbe(model, config.target_size, relations=True)
    assert sum(probe.classes) == 5 + 4 + 3 + 2 * (5 + 4)
    items = scenes.dataset("train", 4, max_objects=2)
    batch = Encoder(processor).batch(items)
    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"])
    labels = patch_labels(items, relations=True)
    loss = probe.loss(labels)
    assert torch.isfinite(loss)
    flipped = labels.clone()
    flipped[..., 3:][flipped[..., 3:] == IGNORE] = 0  # pretend empty cells had "nothing" beside them
    assert probe.loss(flipped).item() != pytest.approx(loss.item())
    probe.remove()
