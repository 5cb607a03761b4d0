"""Device presets: every preset is complete and consistent, unknown names fail clearly."""

from __future__ import annotations

import pytest

from covspec.bundle import PRECISIONS
from covspec.errors import ConfigError
from covspec.export.presets import PRESETS, DevicePreset, get_preset


def test_the_four_presets_exist():
    assert set(PRESETS) == {"jetson-orin", "jetson-xavier", "arm64-cpu", "x86-cpu"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_is_consistent(name):
    preset = get_preset(name)
    assert preset.name == name
    assert preset.precision in PRECISIONS
    assert preset.providers[-1] == "CPUExecutionProvider"  # always a provider that runs every op last
    assert len(preset.reasons) > 80
    assert 0 < preset.max_step_tokens < preset.max_prompt_tokens <= preset.max_context_tokens
    if name.startswith("jetson"):
        assert preset.tensorrt is not None and preset.providers[0] == "TensorrtExecutionProvider"
        assert preset.tensorrt.fp16 and preset.tensorrt.dla_core is None
        assert 0 <= preset.tensorrt.builder_optimization_level <= 5
        assert preset.precision in ("fp16", "int8_qdq")  # what TensorRT can build from
    else:
        assert preset.tensorrt is None and preset.providers == ("CPUExecutionProvider",)
    assert preset.to_dict()["name"] == name


def test_get_preset_unknown_name_lists_choices():
    with pytest.raises(ConfigError) as info:
        get_preset("jetson-nano")
    assert "jetson-orin" in str(info.value) and "x86-cpu" in str(info.value)


def test_get_preset_passes_a_preset_through():
    custom = DevicePreset("mine", "fp32", ("CPUExecutionProvider",), None, 64, 128, 5, 1, "for a test")
    assert get_preset(custom) is custom
