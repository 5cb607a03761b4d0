"""A bundle's TensorRT engines are refused, saying what differs, when built under another TensorRT version or for
another GPU (the plans' use with a real bundle is in tests/export/test_tensorrt.py)."""

from __future__ import annotations

import pytest

from covspec.bundle.engines import check_compatible
from covspec.bundle.platform import PlatformInfo
from covspec.errors import BundleError

RECORDED = {"tensorrt_version": "10.3.0", "device_name": "Orin", "compute_capability": "8.7", "jetpack": "6.1"}


def test_compatible_engines_pass():
    check_compatible(RECORDED, PlatformInfo("10.3.0", "Orin", "8.7", "6.1", "36.4.0"))


@pytest.mark.parametrize(
    ("platform", "needle"),
    [
        (PlatformInfo("10.7.0", "Orin", "8.7", "6.1"), "TensorRT 10.3.0"),
        (PlatformInfo("10.3.0", "NVIDIA H200", "9.0"), "compute capability 8.7"),
        (PlatformInfo("10.3.0", "Orin", "8.7", "6.2"), "JetPack 6.1"),
    ],
)
def test_engines_from_another_version_or_gpu_are_refused(platform, needle):
    with pytest.raises(BundleError) as info:
        check_compatible(RECORDED, platform)
    assert needle in str(info.value) and "rebuild" in str(info.value)
