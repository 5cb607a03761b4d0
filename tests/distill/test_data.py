"""Distillation examples: a folder of images with prompts from a file or the defaults; held-out images unseen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from covspec.distill import DEFAULT_PROMPTS, load_examples
from covspec.distill.data import split_examples
from covspec.errors import ConfigError


def _images(folder: Path, n: int) -> Path:
    from PIL import Image

    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (8 + i, 8), (i * 20, 0, 0)).save(folder / f"im{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_default_prompts_ask_every_image_each(tmp_path: Path) -> None:
    examples = load_examples(_images(tmp_path / "im", 3))
    assert len(examples) == 3 * len(DEFAULT_PROMPTS)
    assert {e.image.name for e in examples} == {"im0.png", "im1.png", "im2.png"}
    assert examples[0].load_image().mode == "RGB"


def test_prompt_lines_and_named_json_lines(tmp_path: Path) -> None:
    folder = _images(tmp_path / "im", 2)
    lines = tmp_path / "prompts.txt"
    lines.write_text("What is it?\n\nHow big?\n")
    assert [(e.image.name, e.prompt) for e in load_examples(folder, lines)] == [
        ("im0.png", "What is it?"),
        ("im0.png", "How big?"),
        ("im1.png", "What is it?"),
        ("im1.png", "How big?"),
    ]
    named = tmp_path / "prompts.jsonl"
    named.write_text(json.dumps({"image": "im1.png", "prompt": "Colour?"}) + "\n")
    assert [(e.image.name, e.prompt) for e in load_examples(folder, named)] == [("im1.png", "Colour?")]


@pytest.mark.parametrize(
    ("line", "message"),
    [('{"image": "im9.png", "prompt": "x"}', "not in"), ('{"prompt": "x"}', "expected"), ("not json", "expected")],
)
def test_bad_json_lines_are_named_with_their_line(tmp_path: Path, line: str, message: str) -> None:
    folder = _images(tmp_path / "im", 1)
    named = tmp_path / "p.jsonl"
    named.write_text(line + "\n")
    with pytest.raises(ConfigError, match=f"p.jsonl:1: .*{message}"):
        load_examples(folder, named)


def test_missing_or_empty_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        load_examples(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        load_examples(tmp_path / "empty")


def test_held_out_images_are_never_trained_on(tmp_path: Path) -> None:
    examples = load_examples(_images(tmp_path / "im", 6))
    train, held = split_examples(examples, 7, seed=1)
    assert len(held) == 7
    assert not {e.image for e in train} & {e.image for e in held}
    assert len(train) + len({e.image for e in held}) * len(DEFAULT_PROMPTS) == len(examples)
    assert split_examples(examples, 7, seed=1) == (train, held)
