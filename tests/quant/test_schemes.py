"""The scheme table: suffixes, roles and the static-int8 switch."""

from __future__ import annotations

import pytest

from covspec.bundle import PRECISIONS as MANIFEST_PRECISIONS
from covspec.quant.schemes import SCHEMES, scheme_for


def test_suffixes_follow_the_community_layout():
    assert {name: s.suffix for name, s in SCHEMES.items()} == {
        "int8": "_int8",
        "int8_qdq": "_int8_qdq",
        "int4": "_q4",
        "fp16": "_fp16",
    }
    assert SCHEMES["int4"].file_name("decoder_model_merged.onnx") == "decoder_model_merged_q4.onnx"


def test_every_scheme_is_a_manifest_precision():
    assert set(SCHEMES) <= set(MANIFEST_PRECISIONS)


def test_scheme_for():
    assert scheme_for("int8").name == "int8"
    assert scheme_for("int8", static=True).name == "int8_qdq" == scheme_for("int8_qdq").name
    assert scheme_for("int4").block_size == 32 and scheme_for("int4").symmetric
    with pytest.raises(ValueError, match="int8 only"):
        scheme_for("fp16", static=True)
    with pytest.raises(ValueError, match="unknown precision"):
        scheme_for("int2")


def test_qdq_leaves_embeddings_alone_and_fp16_converts_everything():
    assert "embed_tokens" not in SCHEMES["int8_qdq"].roles
    assert set(SCHEMES["fp16"].roles) == {"vision_encoder", "embed_tokens", "decoder"}
