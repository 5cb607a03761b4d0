"""`covspec tiny` writes a checkpoint the real transformers classes load."""

from __future__ import annotations

from typer.testing import CliRunner

from covspec.cli.main import app


def test_tiny_writes_a_loadable_checkpoint(tmp_path) -> None:
    from transformers import AutoConfig, AutoProcessor

    out = tmp_path / "d"
    result = CliRunner().invoke(
        app, ["tiny", "--arch", "idefics3", "--size", "drafter", "--out", str(out), "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert AutoConfig.from_pretrained(out).model_type == "idefics3"
    processor = AutoProcessor.from_pretrained(out)
    assert processor.chat_template


def test_tiny_refuses_an_unknown_arch(tmp_path) -> None:
    result = CliRunner().invoke(app, ["tiny", "--arch", "gpt2", "--size", "target", "--out", str(tmp_path)])
    assert result.exit_code != 0
