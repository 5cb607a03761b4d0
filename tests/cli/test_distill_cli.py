"""`covspec distill` parses, runs and reports; bad input is a clear error with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from covspec.cli.main import app


def _images(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (24, 20 + i), (60 * i, 100, 30)).save(folder / f"im{i}.png")
    return folder


def test_distill_prints_the_aal_before_and_after(tmp_path: Path, tiny_pair) -> None:
    pair = tiny_pair("llava")
    out = tmp_path / "drafter"
    args = ["distill", "--target", str(pair.target), "--drafter", str(pair.drafter), "--images"]
    args += [str(_images(tmp_path / "im")), "--out", str(out), "--steps", "3", "--batch-size", "2", "--eval", "2"]
    result = CliRunner().invoke(app, [*args, "--max-new-tokens", "4", "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["steps"] == 3 and report["eval_examples"] == 2
    assert {"aal", "acceptance_rate", "identical_to_target"} <= set(report["after"])
    assert (out / "config.json").is_file() and (out / "covspec_distill.json").is_file()


def test_distill_refuses_two_starting_drafters(tmp_path: Path, tiny_pair) -> None:
    pair = tiny_pair("llava")
    args = ["distill", "--target", str(pair.target), "--drafter", str(pair.drafter), "--drafter-arch"]
    args += ["text.num_hidden_layers=1", "--images", str(_images(tmp_path / "im")), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "not both" in result.stderr


def test_distill_names_a_missing_image_folder(tmp_path: Path, tiny_pair) -> None:
    pair = tiny_pair("llava")
    args = ["distill", "--target", str(pair.target), "--drafter-arch", "text.num_hidden_layers=1"]
    result = CliRunner().invoke(app, [*args, "--images", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "not a folder" in result.stderr
