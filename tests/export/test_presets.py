"""Device profiles: every profile is complete and consistent, unknown names fail clearly."""

from __future__ import annotations

import pytest

from covspec.bundle import PRECISIONS
from covspec.errors import ConfigError
from covspec.export.profiles import PROFILES, DeviceProfile, get_profile


def test_the_four_profiles_exist():
    assert set(PROFILES) == {"jetson-orin", "jetson-xavier", "arm64-cpu", "x86-cpu"}


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_is_consistent(name):
    profile = get_profile(name)
    assert profile.name == name
    assert profile.precision in PRECISIONS
    assert profile.providers[-1] == "CPUExecutionProvider"  # always a provider that runs every op last
    assert len(profile.reasons) > 80
    assert 0 < profile.max_step_tokens < profile.max_prompt_tokens <= profile.max_context_tokens
    if name.startswith("jetson"):
        assert profile.tensorrt is not None and profile.providers[0] == "TensorrtExecutionProvider"
        assert profile.tensorrt.fp16 and profile.tensorrt.dla_core is None
        assert 0 <= profile.tensorrt.builder_optimization_level <= 5
        assert profile.precision in ("fp16", "int8_qdq")  # what TensorRT can build from
    else:
        assert profile.tensorrt is None and profile.providers == ("CPUExecutionProvider",)
    assert profile.to_dict()["name"] == name


def test_get_profile_unknown_name_lists_choices():
    with pytest.raises(ConfigError) as info:
        get_profile("jetson-nano")
    assert "jetson-orin" in str(info.value) and "x86-cpu" in str(info.value)


def test_get_profile_passes_a_profile_through():
    custom = DeviceProfile("mine", "fp32", ("CPUExecutionProvider",), None, 64, 128, 5, 1, "for a test")
    assert get_profile(custom) is custom
