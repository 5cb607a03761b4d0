"""Synthetic scenes: deterministic, splits disjoint, answers consistent with the objects drawn."""

from __future__ import annotations

import numpy as np
import pytest

from covspec.demo import scenes


def test_scene_is_deterministic_from_its_seed() -> None:
    a, b = scenes.make_scene(123), scenes.make_scene(123)
    assert a == b
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert scenes.make_scene(124).objects != a.objects or not np.array_equal(
        np.asarray(scenes.make_scene(124).image), np.asarray(a.image)
    )


def test_dataset_is_deterministic() -> None:
    one = scenes.dataset("heldout", 20, seed=3)
    two = scenes.dataset("heldout", 20, seed=3)
    assert [(i.question, i.answer, i.scene) for i in one] == [(i.question, i.answer, i.scene) for i in two]


def test_splits_draw_from_disjoint_seed_ranges() -> None:
    last_seed, last_index = scenes.MAX_SEED - 1, scenes.SEED_STRIDE - 1
    train = {scenes.scene_seed("train", i, seed) for seed in (0, 1, last_seed) for i in (0, 1, last_index)}
    heldout = {scenes.scene_seed("heldout", i, seed) for seed in (0, 1, last_seed) for i in (0, 1, last_index)}
    assert max(train) < min(heldout)
    assert len(train) == len(heldout) == 9  # no two (seed, index) pairs share a scene
    assert {i.scene.seed for i in scenes.dataset("train", 50)}.isdisjoint(
        {i.scene.seed for i in scenes.dataset("heldout", 50)}
    )
    with pytest.raises(ValueError):
        scenes.scene_seed("train", scenes.SEED_STRIDE)
    with pytest.raises(ValueError):
        scenes.scene_seed("train", 0, seed=scenes.MAX_SEED)
    with pytest.raises(ValueError):
        scenes.scene_seed("test", 0)


def _pixel(scene: scenes.Scene, xy: tuple[int, int]) -> tuple[int, int, int]:
    return scene.image.getpixel(xy)


@pytest.mark.parametrize("seed", range(40))
def test_objects_are_drawn_where_and_as_recorded(seed: int) -> None:
    scene = scenes.make_scene(seed)
    objs = scene.objects
    assert 1 <= len(objs) <= scenes.MAX_OBJECTS
    assert [o.column for o in objs] == sorted({o.column for o in objs})  # one per column, left to right
    assert len({o.name for o in objs}) == len(objs)  # colour + shape names one object
    for obj in objs:
        x, y = obj.centre
        assert obj.column * scenes.CELL <= x - obj.half and x + obj.half < (obj.column + 1) * scenes.CELL
        assert obj.row * scenes.CELL <= y - obj.half and y + obj.half < (obj.row + 1) * scenes.CELL
        r, g, b = _pixel(scene, (x, y + obj.half // 2))  # inside every shape (the triangle points up)
        ref = np.array(scenes.COLOURS[obj.colour])
        nearest = min(scenes.COLOURS, key=lambda c: np.abs(np.array(scenes.COLOURS[c]) - (r, g, b)).sum())
        assert nearest == obj.colour, (obj, (r, g, b), ref)
        corner = _pixel(scene, (x - obj.half, y - obj.half))  # top-left corner: only the square covers it
        background = _pixel(scene, (obj.column * scenes.CELL, obj.row * scenes.CELL))
        assert (corner != background) == (obj.shape == "square"), obj


def test_answers_follow_the_objects() -> None:
    for seed in range(60):
        scene = scenes.make_scene(seed)
        objs = scene.objects
        for item in scenes.qa_items(scene):
            q, a = item.question, item.answer
            if item.task == "colour":
                named = q.removeprefix("What colour is the ").removesuffix("?").split()
                match = [o for o in objs if o.shape == named[-1] and (len(named) == 1 or o.size == named[0])]
                assert len(match) == 1 and match[0].colour == a
            elif item.task == "shape":
                colour = q.split()[4]
                assert [o.shape for o in objs if o.colour == colour] == [a]
            elif item.task == "size":
                colour, shape = q.removeprefix("What size is the ").removesuffix("?").split()
                assert [o.size for o in objs if o.colour == colour and o.shape == shape] == [a]
            elif item.task == "count":
                word = q.split()[2]
                if word == "shapes":
                    n = len(objs)
                elif q.endswith("shapes are there?"):
                    n = sum(o.colour == word for o in objs)
                else:
                    n = sum(o.shape + "s" == word for o in objs)
                assert a == scenes.NUMBERS[n]
            elif item.task in ("left", "right"):
                name = q.removeprefix(f"What is {item.task} of the ").removesuffix("?")
                i = [o.name for o in objs].index(name)
                j = i - 1 if item.task == "left" else i + 1
                assert a == (f"a {objs[j].name}" if 0 <= j < len(objs) else "nothing")
            else:
                assert item.task == "describe"
                assert a == scenes.caption(scene)
                assert a.count(" and ") == (len(objs) > 1) and a.endswith(".")
                for obj in objs:
                    assert obj.phrase in a


def test_caption_lists_objects_left_to_right() -> None:
    scene = next(s for s in map(scenes.make_scene, range(100)) if len(s.objects) == 3)
    a, b, c = (o.phrase for o in scene.objects)
    assert scenes.caption(scene) == f"{a}, {b} and {c}."


def test_every_task_appears_and_majority_baseline_is_low() -> None:
    items = scenes.dataset("heldout", 300)
    assert {i.task for i in items} == set(scenes.TASKS)
    assert 0.2 < scenes.majority_baseline(items) < 0.6


def test_task_weights_set_how_often_each_task_is_asked() -> None:
    """Weights 3 for left and right, 1 for the rest: with most scenes supporting every task, left and right together
    come near 6/11 of the questions (uniform: 2/7); the same weights give the same questions."""
    weights = (1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 1.0)
    weighted = scenes.dataset("train", 1500, weights=weights)
    uniform = scenes.dataset("train", 1500)
    share = sum(i.task in ("left", "right") for i in weighted) / len(weighted)
    assert abs(share - 6 / 11) < 0.05
    assert abs(sum(i.task in ("left", "right") for i in uniform) / len(uniform) - 2 / 7) < 0.05
    assert [i.question for i in weighted[:50]] == [i.question for i in scenes.dataset("train", 50, weights=weights)]
    assert [i.scene.seed for i in weighted] == [i.scene.seed for i in uniform]  # weights pick questions, not scenes


@pytest.mark.parametrize("weights", [(1.0, 2.0), (1.0, 1.0, 1.0, 1.0, 0.0, 3.0, 1.0)])
def test_task_weights_must_be_one_positive_number_per_task(weights: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="one per task"):
        scenes.dataset("train", 1, weights=weights)
