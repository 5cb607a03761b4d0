"""A bundle's TensorRT engines are refused, saying what differs, when built under another TensorRT version or for
another GPU (the plans' use with a real bundle is in tests/export/test_tensorrt.py)."""

from __future__ import annotations

import pytest

from covspec.bundle.engines import check_compatible
from covspec.bundle.platform import PlatformInfo
from covspec.errors import BundleError

RECORDED = {
    "tensorrt_version": "10.3.0",
    "device_name": "Orin",
    "compute_capability": "8.7",
    "jetpack": "6.1",
    "l4t": "36.4.0",
}


def test_compatible_engines_pass():
    check_compatible(RECORDED, PlatformInfo("10.3.0", "Orin", "8.7", "6.1", "36.4.0"))


@pytest.mark.parametrize(
    ("platform", "needle"),
    [
        (PlatformInfo("10.7.0", "Orin", "8.7", "6.1"), "TensorRT 10.3.0"),
        (PlatformInfo("10.3.0", "NVIDIA H200", "9.0"), "compute capability 8.7"),
        (PlatformInfo("10.3.0", "Orin", "8.7", "6.2", "36.4.3"), "Jetson Linux 36.4.0"),
    ],
)
def test_engines_from_another_version_or_gpu_are_refused(platform, needle):
    with pytest.raises(BundleError) as info:
        check_compatible(RECORDED, platform)
    assert needle in str(info.value) and "rebuild" in str(info.value)


def test_only_the_jetpack_label_moving_on_the_same_l4t_is_accepted():
    # the nvidia-jetpack meta-package says 6.2 while Jetson Linux, TensorRT and the GPU are those the plans were
    # built with: the plans still run
    check_compatible(RECORDED, PlatformInfo("10.3.0", "Orin", "8.7", "6.2", "36.4.0"))
    check_compatible({**RECORDED, "l4t": None}, PlatformInfo("10.3.0", "Orin", "8.7", "6.2", "36.4.3"))
