"""Jetson facts as data: the version table (and that docs/jetson.md shows exactly it), nvpmodel.conf parsing and the
mode picked by name, and the board description from captured /etc/nv_tegra_release, device-tree and dpkg text."""

from __future__ import annotations

from pathlib import Path

import pytest

from covspec.bundle import jetson

DOC = Path(__file__).resolve().parents[2] / "docs" / "jetson.md"

# Shaped like the files JetPack 6.2 installs (PARAM blocks trimmed): Orin Nano 8 GB with the Super configuration.
ORIN_NANO_SUPER = """\
< PARAM TYPE=FILE NAME=CPU_ONLINE >
CORE_0 /sys/devices/system/cpu/cpu0/online
< PARAM TYPE=CLOCK NAME=GPU >
FREQ_TABLE /sys/devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu/available_frequencies
MAX_FREQ /sys/devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu/max_freq

< POWER_MODEL ID=0 NAME=15W >
CPU_ONLINE CORE_0 1
GPU MAX_FREQ 612000000
< POWER_MODEL ID=1 NAME=25W >
CPU_ONLINE CORE_0 1
GPU MAX_FREQ 918000000
< POWER_MODEL ID=2 NAME=MAXN_SUPER >
CPU_ONLINE CORE_0 1
GPU MAX_FREQ -1
< POWER_MODEL ID=3 NAME=7W >
CPU_ONLINE CORE_0 1
GPU MAX_FREQ 408000000
< PM_CONFIG DEFAULT=1 >
"""

ORIN_NX_16GB = """\
< POWER_MODEL ID=0 NAME=MAXN >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=10W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=2 NAME=15W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=3 NAME=25W >
CPU_ONLINE CORE_0 1
< PM_CONFIG DEFAULT=2 >
"""

AGX_ORIN_64GB = """\
< POWER_MODEL ID=0 NAME=MAXN >
GPU MAX_FREQ -1
< POWER_MODEL ID=1 NAME=MODE_15W >
GPU MAX_FREQ 420750000
< POWER_MODEL ID=2 NAME=MODE_30W >
GPU MAX_FREQ 624750000
< POWER_MODEL ID=3 NAME=MODE_50W >
GPU MAX_FREQ 828750000
< PM_CONFIG DEFAULT=2 >
"""

NV_TEGRA_RELEASE = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8\n"
MODEL = "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00"
DPKG_STATUS = """\
Package: nvidia-l4t-core
Status: install ok installed
Architecture: arm64
Version: 36.4.3-20250107174145

Package: nvidia-jetpack
Status: install ok installed
Version: 6.2.1+b38

Package: cuda-toolkit-12-6
Status: install ok installed
Version: 12.6.11-1

Package: libnvinfer10
Status: install ok installed
Version: 10.3.0.30-1+cuda12.5

Package: python3-libnvinfer
Status: install ok installed
Version: 10.3.0.30-1+cuda12.5

Package: libnvinfer-samples
Status: deinstall ok config-files
Version: 10.3.0.30-1+cuda12.5
"""


def test_doc_table_is_the_code_table():
    assert jetson.release_table_markdown() in DOC.read_text()


def test_every_release_has_a_source_and_the_corrected_versions():
    assert all(r.source.startswith("https://") for r in jetson.RELEASES)
    by_name = {r.jetpack: r for r in jetson.RELEASES}
    assert (by_name["6.0"].cuda, by_name["6.0"].tensorrt) == ("12.2", "8.6.2")
    assert (by_name["6.1"].cuda, by_name["6.1"].tensorrt) == ("12.6", "10.3")
    assert jetson.jetpack_for_l4t("35.6.1") == "5.1.5"
    assert jetson.jetpack_for_l4t("35.6.0") == "5.1.4"
    assert jetson.jetpack_for_l4t("36.5.0") == "6.2.2"
    assert jetson.jetpack_for_l4t("38.4.0") == "7.1"
    assert jetson.jetpack_for_l4t("39.2.0") == "7.2.x"
    assert jetson.jetpack_for_l4t("36.4.9") is None  # not in the table: not guessed
    assert jetson.jetpack_for_l4t(None) is None


@pytest.mark.parametrize(
    ("text", "ids", "default", "best"),
    [
        (ORIN_NANO_SUPER, [0, 1, 2, 3], 1, jetson.PowerMode(2, "MAXN_SUPER")),
        (ORIN_NX_16GB, [0, 1, 2, 3], 2, jetson.PowerMode(0, "MAXN")),
        (AGX_ORIN_64GB, [0, 1, 2, 3], 2, jetson.PowerMode(0, "MAXN")),
    ],
)
def test_nvpmodel_conf_and_the_mode_chosen_by_name(text, ids, default, best):
    conf = jetson.parse_nvpmodel_conf(text)
    assert [m.id for m in conf.modes] == ids and conf.default == default
    assert jetson.max_performance_mode(conf) == best


def test_mode_zero_is_not_the_maximum_on_orin_nano_super():
    conf = jetson.parse_nvpmodel_conf(ORIN_NANO_SUPER)
    assert conf.by_id(0).name == "15W" and conf.by_id(0).watts == 15
    assert jetson.max_performance_mode(conf).id != 0


def test_without_a_maxn_mode_the_highest_wattage_wins():
    conf = jetson.parse_nvpmodel_conf("< POWER_MODEL ID=0 NAME=10W >\n< POWER_MODEL ID=1 NAME=MODE_20W >\n")
    assert jetson.max_performance_mode(conf) == jetson.PowerMode(1, "MODE_20W")
    assert jetson.max_performance_mode(jetson.parse_nvpmodel_conf("")) is None


def test_describe_jetson_from_captured_files():
    info = jetson.describe_jetson(NV_TEGRA_RELEASE, MODEL, DPKG_STATUS)
    assert info.model == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    assert (info.l4t, info.jetpack) == ("36.4.3", "6.2")
    assert info.jetpack_package == "6.2.1"  # the meta-package moved on; the L4T says what the board runs
    assert (info.cuda, info.tensorrt, info.tensorrt_python) == ("12.6.11", "10.3.0.30", True)
    assert info.expected["cuda"] == "12.6" and info.notes == ()


def test_describe_jetson_falls_back_to_the_l4t_package_and_names_what_is_missing():
    status = "Package: nvidia-l4t-core\nStatus: install ok installed\nVersion: 38.2.1-20250910123945\n"
    info = jetson.describe_jetson(None, None, status)
    assert (info.l4t, info.jetpack, info.tensorrt) == ("38.2.1", "7.0", None)
    assert any("TensorRT is not installed" in note for note in info.notes)
    unknown = jetson.describe_jetson("# R37 (release), REVISION: 1.0", None, None)
    assert unknown.jetpack is None and "not in covspec's table" in unknown.notes[0]


def test_not_a_jetson():
    assert jetson.describe_jetson(None, None, None) is None
    assert jetson.describe_jetson(None, "Raspberry Pi 5 Model B Rev 1.0", "Package: bash\nVersion: 5.2\n") is None
