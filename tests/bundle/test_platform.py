"""TensorRT platform detection: the clear error without TensorRT, Jetson release parsing, and the GPU query."""

from __future__ import annotations

import importlib.util

import pytest

from covspec.bundle import platform
from covspec.errors import EngineUnavailableError
from tests.helpers import has_cuda

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here; the missing-module error cannot be shown")
def test_missing_tensorrt_says_how_to_install(monkeypatch):
    with pytest.raises(EngineUnavailableError) as info:
        platform.import_tensorrt()
    message = str(info.value)
    assert "pip install tensorrt-cu12" in message or "python3-libnvinfer" in message
    monkeypatch.setattr(platform, "is_jetson", lambda: True)
    assert "python3-libnvinfer" in platform.install_hint()
    assert "tensorrt-cu13" in platform.install_hint(jetson=False)


@pytest.mark.parametrize(
    ("text", "l4t", "jetpack"),
    [
        (
            "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan 8",
            "36.4.3",
            "6.2",
        ),
        ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64", "35.4.1", "5.1.2"),
        ("# R36 (release), REVISION: 3.0, GCID: 36191598", "36.3.0", "6.0"),
        ("# R35 (release), REVISION: 6.1, GCID: 39258573, BOARD: generic, EABI: aarch64", "35.6.1", "5.1.5"),
        ("# R36 (release), REVISION: 5.0, GCID: 42132812, BOARD: generic, EABI: aarch64", "36.5.0", "6.2.2"),
        ("# R38 (release), REVISION: 2.1, GCID: 41844464, BOARD: generic, EABI: aarch64", "38.2.1", "7.0"),
        ("not a release file", None, None),
    ],
)
def test_jetson_release_parsing(text, l4t, jetpack):
    assert platform.parse_l4t_release(text) == l4t
    assert platform.jetpack_for_l4t(l4t) == jetpack


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU visible to torch")
def test_cuda_device_reports_name_and_capability():
    name, capability = platform.cuda_device()
    major, minor = capability.split(".")
    assert name and int(major) >= 5 and minor.isdigit()
