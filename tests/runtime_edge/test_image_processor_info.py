"""``/v1/info`` ``model.image_processor`` (covspec.runtime_edge.service.describe_image_processor): what a device needs
to resize an image as the edge's processor will, recorded from the real processor without touching it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from covspec.runtime_edge.service import describe_image_processor


@pytest.mark.parametrize(
    ("arch", "passed"),
    [("mistral3", {"patch_size": 8}), ("idefics3", {"return_row_col_info": True}), ("llava", {})],
)
def test_the_description_names_what_the_processor_passes_at_call_time(arch, passed, loaded_target) -> None:
    """Pixtral's processor passes its own patch size (patch x spatial merge), Idefics3's asks for row/column info:
    the config alone would not reproduce the edge's resize."""
    model = loaded_target(arch)
    served = model.processor.image_processor
    description = describe_image_processor(model)
    assert model.processor.image_processor is served  # recorded on a copy: the served processor is untouched
    assert description["class"] == type(served).__name__ and description["backend"] == served.backend
    assert description["call_kwargs"] == passed
    assert description["config"]["image_processor_type"] == type(served).__name__
    assert set(description["versions"]) == {"transformers", "Pillow", "torch", "torchvision"}
    assert json.loads(json.dumps(description)) == description  # JSON as it goes on the wire


def test_no_description_without_an_image_processor() -> None:
    assert describe_image_processor(SimpleNamespace()) is None  # a text target
    assert describe_image_processor(SimpleNamespace(processor=SimpleNamespace())) is None  # a tokenizer only
