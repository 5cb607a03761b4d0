"""The Pareto bench's pure parts on constructed points: fronts over two and three axes with ties and missing values,
each objective's pick with and without lossy points, the one-factor-at-a-time sweep, and the outputs (a real PNG,
a self-contained HTML page with its sections, the JSON)."""

from __future__ import annotations

import base64
import json
import re

import pytest

from covspec.bench.pareto import (
    AXES,
    BASE,
    PANELS,
    Direction,
    OperatingPoint,
    add_speedups,
    analyse,
    dominates,
    pareto_front,
    pick,
    quick_points,
    report_html,
    sweep_points,
    write_outputs,
)
from covspec.protocol import VerifyMode
from covspec.spec.cost_model import Objective
from covspec.spec.policy import PolicyKind

MAX, MIN = Direction.MAX, Direction.MIN


def _point(name, speed, joules, nbytes=10.0, accuracy=1.0, lossy=False, factor="f"):
    return {
        "name": name,
        "factor": factor,
        "lossy": lossy,
        "link": "loopback",
        "tokens_per_s": speed,
        "joules_per_token": joules,
        "bytes_per_token": nbytes,
        "total_bytes_per_token": nbytes + 100,
        "accuracy": accuracy,
        "speedup": None,
        "bound_tokens_per_s": None,
        "aal": None,
        "identical_to_target": not lossy,
    }


def test_front_of_two_axes_keeps_the_non_dominated_points_and_every_tie() -> None:
    points = [
        _point("fast", 100, 0.5),
        _point("frugal", 40, 0.1),
        _point("middle", 70, 0.3),
        _point("dominated", 60, 0.35),  # slower and costlier than middle
        _point("same speed, costlier", 100, 0.6),  # equal on one axis, worse on the other: dominated
        _point("middle twin", 70, 0.3),  # a tie with middle: neither dominates the other
    ]
    axes = {"tokens_per_s": MAX, "joules_per_token": MIN}
    assert pareto_front(points, axes) == [0, 1, 2, 5]
    assert dominates(points[0], points[4], axes) and not dominates(points[2], points[5], axes)
    # the directions decide: the slowest and costliest point is the front when both axes are flipped
    assert pareto_front(points, {"tokens_per_s": MIN, "joules_per_token": MAX}) == [1, 3, 4]


def test_a_third_axis_brings_back_a_point_two_axes_dominate() -> None:
    points = [
        _point("fast", 100, 0.5, nbytes=400),
        _point("lean", 60, 0.6, nbytes=5),  # dominated on speed and joules, but ships the fewest bytes
        _point("worst", 50, 0.7, nbytes=500),
    ]
    two = {"tokens_per_s": MAX, "joules_per_token": MIN}
    assert pareto_front(points, two) == [0]
    assert pareto_front(points, {**two, "bytes_per_token": MIN}) == [0, 1]
    assert pareto_front(points, AXES) == [0, 1]


def test_points_without_a_value_on_an_axis_are_left_out_of_its_front() -> None:
    points = [_point("scored", 10, 1.0), _point("unscored", 99, 0.1, accuracy=None), _point("nan", float("nan"), 0.1)]
    assert pareto_front(points, {"tokens_per_s": MAX, "accuracy": MAX}) == [0]
    assert pareto_front(points, {"tokens_per_s": MAX, "joules_per_token": MIN}) == [1]
    with pytest.raises(ValueError, match="at least one axis"):
        pareto_front(points, {})


def test_each_objective_picks_its_point_lossless_first() -> None:
    points = [
        _point("fast", 100, 0.50),  # latency: most tokens/s; balanced 200
        _point("frugal", 40, 0.10),  # energy: fewest J/token; balanced 400
        _point("balanced", 80, 0.15),  # balanced: 533
        _point("lossy rocket", 500, 0.05, accuracy=0.2, lossy=True),  # best at everything, but lossy
    ]
    assert pick(points, Objective.LATENCY) == 0
    assert pick(points, Objective.ENERGY) == 1
    assert pick(points, Objective.BALANCED) == 2
    assert all(pick(points, o, lossy_allowed=True) == 3 for o in Objective)
    ties = [_point("first", 10, 1.0), _point("second", 10, 1.0)]
    assert pick(ties, Objective.LATENCY) == 0  # the first of equals
    assert pick([_point("no joules", 10, None)], Objective.ENERGY) is None
    result = analyse(points)
    assert result["picks"] == {
        "lossless": {"latency": "fast", "energy": "frugal", "balanced": "balanced"},
        "lossy_allowed": {"latency": "lossy rocket", "energy": "lossy rocket", "balanced": "lossy rocket"},
    }
    fronts = {(f["x"], f["y"]): f for f in result["fronts"]}
    assert list(fronts) == list(PANELS)
    assert fronts[("joules_per_token", "tokens_per_s")]["lossless"] == ["fast", "frugal", "balanced"]
    assert fronts[("joules_per_token", "tokens_per_s")]["all"] == ["lossy rocket"]
    # accuracy trades against speed only once lossy points are in
    assert fronts[("tokens_per_s", "accuracy")]["all"] == ["fast", "lossy rocket"]
    assert result["front_all_axes"]["lossless"] == ["fast", "frugal", "balanced"]


def test_the_sweep_varies_one_factor_at_a_time_plus_k_by_link() -> None:
    points = sweep_points(["loopback", "wifi", "lte"])
    names = [p.name for p in points]
    assert len(set(names)) == len(names) and names[:2] == ["target-only", "base"]
    base = points[1].settings()
    assert base["link"] == "loopback" and points[0].verify_mode is None
    changed = {p.name: {k for k, v in p.settings().items() if v != base[k]} for p in points[2:]}
    for point in points[2:]:
        diff = changed[point.name]
        if point.factor == "reference":  # target-only at every other link
            assert point.verify_mode is None and point.link != "loopback"
        elif point.factor == "verify mode":
            assert diff == {"verify_mode"}
        elif point.factor == "draft length":
            assert diff == {"draft_len"}
        elif point.factor == "policy":
            assert diff <= {"policy", "draft_len", "objective"} and "policy" in diff
        elif point.factor == "keep ratio / reducer":
            assert diff <= {"reducer", "keep"} and not point.lossy
        elif point.factor == "target reduction (lossy)":
            assert "reduce_target" in diff and point.lossy
        elif point.factor == "drafter precision":
            assert diff == {"precision"}
        elif point.factor == "link":
            assert diff == {"link"}
        else:
            assert point.factor == "draft length x link" and diff == {"draft_len", "link"}
    factors = {p.factor for p in points}
    assert {"verify mode", "draft length", "policy", "keep ratio / reducer", "target reduction (lossy)",
            "drafter precision", "link", "draft length x link"} <= factors  # fmt: skip
    assert {p.precision for p in points} == {"fp32", "int8", "int4"}
    assert {p.objective for p in points if p.policy is PolicyKind.COST} == set(Objective)
    assert {p.draft_len for p in points if p.factor in ("base", "draft length")} == {1, 2, 3, 4, 5, 6}
    assert [p.name for p in points if p.lossy] == [p.name for p in points if p.reduce_target]
    assert [p.link for p in points if p.verify_mode is None] == ["loopback", "wifi", "lte"]
    assert quick_points(["loopback", "lan"])[2].link == "lan" and len(quick_points(["loopback"])) == 3
    with pytest.raises(ValueError, match="at least one link"):
        sweep_points([])


def test_speedup_is_over_target_only_on_the_same_link() -> None:
    rows = [
        {"name": "target-only", "link": "loopback", "verify_mode": "target_only", "tokens_per_s": 200.0},
        {"name": "base", "link": "loopback", "verify_mode": "compact", "tokens_per_s": 220.0},
        {"name": "@lte", "link": "lte", "verify_mode": "compact", "tokens_per_s": 40.0},
        {"name": "target-only @lte", "link": "lte", "verify_mode": "target_only", "tokens_per_s": 80.0},
        {"name": "@wifi", "link": "wifi", "verify_mode": "compact", "tokens_per_s": 100.0},  # no target-only there
    ]
    add_speedups(rows)
    assert [(r["speedup"], r["speedup_over"]) for r in rows] == [
        (1.0, "target-only"), (1.1, "target-only"), (0.5, "target-only @lte"), (1.0, "target-only @lte"),
        (0.5, "target-only"),
    ]  # fmt: skip
    alone = [{"name": "base", "link": "lan", "verify_mode": "compact", "tokens_per_s": 1.0}]
    add_speedups(alone)
    assert alone[0]["speedup"] is None and alone[0]["speedup_over"] is None


def test_an_operating_point_refuses_what_cannot_run() -> None:
    with pytest.raises(ValueError, match="lossy target reduction needs a reducer"):
        OperatingPoint("x", "f", reduce_target=True)
    with pytest.raises(ValueError, match="drafts at least one token"):
        OperatingPoint("x", "f", VerifyMode.COMPACT, draft_len=0)
    lossy = OperatingPoint("y", "f", reducer="pool", keep=0.25, reduce_target=True)
    config = lossy.config(20, None)
    assert config.reduce_target and config.target_reduction == ("pool", 0.25)
    assert BASE.config(20, None).reduction is None  # keep 1.0: the plain prefill


def _result(points):
    return {
        "points": points,
        **analyse(points),
        "design": "one factor at a time",
        "items": 3,
        "warmup_items": 1,
        "max_new_tokens": 40,
        "edge_cpus": [1],
        "device_cpus": [0],
        "energy": {
            "label": "estimated (model)",
            "inputs": {"draft_w": 4.5, "wait_w": 3.0, "up_joules_per_byte": 3e-7, "down_joules_per_byte": 1e-7},
            "formula": "wall x wait + drafting x extra + bytes",
        },
        "bound": "the bound",
        "note": "the note",
        "scenario_lines": ["a constructed scenario"],
    }


def test_outputs_are_a_real_png_a_self_contained_page_and_json(tmp_path) -> None:
    import matplotlib.image

    points = [
        _point("target-only", 50, 0.4, nbytes=120, factor="reference"),
        _point("base", 90, 0.2, nbytes=20, factor="base"),
        _point("vanilla", 60, 0.3, nbytes=9000, factor="verify mode"),
        _point(
            "pool 0.25 +target LOSSY", 110, 0.15, nbytes=20, accuracy=0.5, lossy=True, factor="target reduction (lossy)"
        ),  # fmt: skip
    ]
    result = _result(points)
    paths = write_outputs(result, tmp_path / "out")
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    height, width, _ = matplotlib.image.imread(paths["png"]).shape
    assert width > 1000 and height > 800
    assert json.loads(paths["json"].read_text())["picks"] == result["picks"]
    page = paths["html"].read_text()
    for section in ("scenario", "picks", "fronts", "points", "limits"):
        assert f'<section id="{section}">' in page
    (inline,) = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert base64.b64decode(inline) == png  # the plot itself, inlined: the page needs no other file
    assert "estimated (model)" in page and "a constructed scenario" in page
    assert page.count('<tr class="lossy">') == 1
    for point in points:
        assert f"<td>{point['name']}</td>" in page
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing to fetch from elsewhere
    assert report_html(result, paths["png"]) == page
