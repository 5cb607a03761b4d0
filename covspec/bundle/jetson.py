"""Jetson facts as data: which JetPack ships which Jetson Linux (L4T), CUDA and TensorRT, and pure parsers for what a
Jetson says about itself (``/etc/nv_tegra_release``, ``/proc/device-tree/model``, the dpkg status database,
``/etc/nvpmodel.conf``).

Everything here takes text and returns data, so it is tested on captured samples and reads no file itself; the
callers (``covspec.bundle.platform``, ``covspec info``, ``scripts/gpu_check.sh``) read the files. ``RELEASES`` is the
one copy of the version table: ``docs/jetson.md`` shows it (a test checks the two agree), each row with the public
page it was checked against.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class JetPackRelease:
    """One JetPack release: the Jetson Linux releases it ships and its compute stack."""

    jetpack: str
    l4t: tuple[str, ...]  # Jetson Linux releases (or a release prefix such as "39") that are this JetPack
    ubuntu: str
    python: str  # the system Python 3
    cuda: str
    tensorrt: str
    source: str  # the public page the row was checked against


# Oldest first. An L4T entry matches itself and the releases under it ("39" matches "39.2.0"; "35.4" matches "35.4.1");
# the longest matching entry wins (see release_for_l4t).
RELEASES: tuple[JetPackRelease, ...] = (
    JetPackRelease(
        "5.0.2", ("35.1",), "20.04", "3.8", "11.4", "8.4.1", "https://developer.nvidia.com/embedded/jetpack-sdk-502"
    ),
    JetPackRelease(
        "5.1", ("35.2",), "20.04", "3.8", "11.4", "8.5.2", "https://developer.nvidia.com/embedded/jetpack-sdk-51"
    ),
    JetPackRelease(
        "5.1.1", ("35.3",), "20.04", "3.8", "11.4", "8.5.2", "https://developer.nvidia.com/embedded/jetpack-sdk-511"
    ),
    JetPackRelease(
        "5.1.2", ("35.4",), "20.04", "3.8", "11.4", "8.5.2", "https://developer.nvidia.com/embedded/jetpack-sdk-512"
    ),
    JetPackRelease(
        "5.1.3", ("35.5",), "20.04", "3.8", "11.4", "8.5.2", "https://developer.nvidia.com/embedded/jetpack-sdk-513"
    ),
    JetPackRelease(
        "5.1.4", ("35.6.0",), "20.04", "3.8", "11.4", "8.5.2", "https://developer.nvidia.com/embedded/jetpack-sdk-514"
    ),
    JetPackRelease(
        "5.1.5",
        ("35.6.1", "35.6.2"),
        "20.04",
        "3.8",
        "11.4",
        "8.5.2",
        "https://developer.nvidia.com/embedded/jetpack-sdk-515",
    ),
    JetPackRelease(
        "5.1.6", ("35.6.4",), "20.04", "3.8", "11.4", "8.5.2", "https://developer.nvidia.com/embedded/jetpack-sdk-516"
    ),
    JetPackRelease(
        "6.0 DP", ("36.2",), "22.04", "3.10", "12.2", "8.6.2", "https://developer.nvidia.com/embedded/jetpack-sdk-60dp"
    ),
    JetPackRelease(
        "6.0", ("36.3",), "22.04", "3.10", "12.2", "8.6.2", "https://developer.nvidia.com/embedded/jetpack-sdk-60"
    ),
    JetPackRelease(
        "6.1",
        ("36.4.0",),
        "22.04",
        "3.10",
        "12.6",
        "10.3",
        "https://developer.nvidia.com/embedded/jetpack-sdk-61",
    ),
    JetPackRelease(
        "6.2", ("36.4.3",), "22.04", "3.10", "12.6", "10.3", "https://developer.nvidia.com/embedded/jetpack-sdk-62"
    ),
    JetPackRelease(
        "6.2.1", ("36.4.4",), "22.04", "3.10", "12.6", "10.3", "https://developer.nvidia.com/embedded/jetpack-sdk-621"
    ),
    JetPackRelease(
        "6.2.2", ("36.5.0",), "22.04", "3.10", "12.6", "10.3", "https://github.com/anduril/jetpack-nixos/pull/541"
    ),
    JetPackRelease(
        "6.2.3", ("36.5.2",), "22.04", "3.10", "12.6", "10.3", "https://github.com/anduril/jetpack-nixos/pull/541"
    ),
    JetPackRelease(
        "7.0",
        ("38.2",),
        "24.04",
        "3.12",
        "13.0",
        "10.x (SBSA)",
        "https://developer.nvidia.com/embedded/jetpack/downloads/archive-7.0",
    ),
    JetPackRelease(
        "7.1",
        ("38.4",),
        "24.04",
        "3.12",
        "13.0",
        "10.x (SBSA)",
        "https://developer.nvidia.com/embedded/jetpack/downloads/archive-7.1",
    ),
    JetPackRelease(
        "7.2.x",
        ("39",),
        "24.04",
        "3.12",
        "13.x",
        "SBSA builds; 11.4.1 has Orin DLA from 7.2.2",
        "https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/inference-library/work-with-dla.html",
    ),
)


def _matches(l4t: str, prefix: str) -> bool:
    return l4t == prefix or l4t.startswith(prefix + ".")


def release_for_l4t(l4t: str | None) -> JetPackRelease | None:
    """The JetPack release that ships Jetson Linux ``l4t`` (the longest matching entry); None when not in the table."""
    if not l4t:
        return None
    best: tuple[int, JetPackRelease] | None = None
    for release in RELEASES:
        for prefix in release.l4t:
            if _matches(l4t, prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), release)
    return best[1] if best else None


def jetpack_for_l4t(l4t: str | None) -> str | None:
    release = release_for_l4t(l4t)
    return release.jetpack if release else None


def parse_l4t_release(text: str) -> str | None:
    """``# R36 (release), REVISION: 4.3, GCID: ...`` (``/etc/nv_tegra_release``) -> ``"36.4.3"``."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2).rstrip('.')}" if match else None


def release_table_markdown() -> str:
    """``RELEASES`` as the Markdown table ``docs/jetson.md`` shows (a test keeps the two equal)."""
    lines = [
        "| JetPack | Jetson Linux (L4T) | Ubuntu | Python | CUDA | TensorRT | source |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in RELEASES:
        l4t = " / ".join(p if p.count(".") else f"{p}.x" for p in r.l4t)
        cells = (r.jetpack, l4t, r.ubuntu, r.python, r.cuda, r.tensorrt, f"[link]({r.source})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ power modes


@dataclass(frozen=True)
class PowerMode:
    """One ``< POWER_MODEL ID=N NAME=... >`` entry of ``/etc/nvpmodel.conf``."""

    id: int
    name: str

    @property
    def watts(self) -> int | None:
        """The power budget the name states ("15W", "MODE_30W", "7W_AI"), None for MAXN-style names."""
        match = re.search(r"(\d+)W", self.name.upper())
        return int(match.group(1)) if match else None


@dataclass(frozen=True)
class NvpmodelConf:
    modes: tuple[PowerMode, ...]
    default: int | None = None

    def by_id(self, mode_id: int) -> PowerMode | None:
        return next((m for m in self.modes if m.id == mode_id), None)


def parse_nvpmodel_conf(text: str) -> NvpmodelConf:
    """The power modes (``< POWER_MODEL ID=N NAME=... >``) and the default (``< PM_CONFIG DEFAULT=N >``)."""
    modes = [
        PowerMode(int(m.group(1)), m.group(2))
        for m in re.finditer(r"^<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+)\s*>", text, re.MULTILINE)
    ]
    default = re.search(r"^<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>", text, re.MULTILINE)
    return NvpmodelConf(tuple(modes), int(default.group(1)) if default else None)


def max_performance_mode(conf: NvpmodelConf) -> PowerMode | None:
    """The mode to benchmark in, chosen by name, never by number (mode 0 is 15 W on an Orin Nano/NX with the Super
    configuration, MAXN on an AGX Orin): a MAXN mode, the Super one first; else the highest wattage named."""
    maxn = [m for m in conf.modes if "MAXN" in m.name.upper()]
    if maxn:
        return max(maxn, key=lambda m: ("SUPER" in m.name.upper(), -m.id))
    rated = [m for m in conf.modes if m.watts is not None]
    return max(rated, key=lambda m: m.watts or 0) if rated else None


# ------------------------------------------------------------------------------------------------ the board


def parse_dpkg_status(text: str) -> dict[str, str]:
    """Package -> version of the installed packages in dpkg's status database (``/var/lib/dpkg/status``)."""
    versions: dict[str, str] = {}
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
        status = fields.get("Status", "installed")
        installed = "installed" in status and "not-installed" not in status and "deinstall" not in status
        if installed and "Package" in fields and "Version" in fields:
            versions[fields["Package"]] = fields["Version"]
    return versions


def _first(versions: dict[str, str], prefixes: tuple[str, ...]) -> tuple[str, str] | None:
    for prefix in prefixes:
        for name in sorted(versions):
            if re.fullmatch(prefix, name):
                return name, versions[name]
    return None


@dataclass(frozen=True)
class JetsonInfo:
    """What a Jetson says about itself, in the terms of the version table."""

    model: str | None = None  # /proc/device-tree/model, e.g. "NVIDIA Jetson Orin Nano Engineering Reference ..."
    l4t: str | None = None  # the Jetson Linux release the board runs (what engines depend on)
    jetpack: str | None = None  # JetPack of that L4T per RELEASES (the meta-package's own version is separate)
    jetpack_package: str | None = None  # the nvidia-jetpack meta-package version, when installed
    cuda: str | None = None  # installed CUDA toolkit / runtime package version
    tensorrt: str | None = None  # installed TensorRT (libnvinfer) package version
    tensorrt_python: bool = False  # python3-libnvinfer installed (TensorRT's Python bindings from JetPack)
    expected: dict[str, Any] = field(default_factory=dict)  # the RELEASES row for this L4T
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_jetson(
    nv_tegra_release: str | None = None, device_tree_model: str | None = None, dpkg_status: str | None = None
) -> JetsonInfo | None:
    """Describe a Jetson from the text of ``/etc/nv_tegra_release``, ``/proc/device-tree/model`` and dpkg's status
    database (any may be None); None when nothing says this is a Jetson."""
    versions = parse_dpkg_status(dpkg_status) if dpkg_status else {}
    l4t = parse_l4t_release(nv_tegra_release) if nv_tegra_release else None
    core = versions.get("nvidia-l4t-core")
    if l4t is None and core:
        l4t = core.split("-")[0]  # "36.4.3-20250107174145"
    model = device_tree_model.replace("\x00", "").strip() if device_tree_model else None
    if l4t is None and not (model and "jetson" in model.lower()):
        return None
    notes = []
    package = versions.get("nvidia-jetpack")
    release = release_for_l4t(l4t)
    if l4t and release is None:
        notes.append(f"Jetson Linux {l4t} is not in covspec's table (covspec.bundle.jetson.RELEASES)")
    cuda = _first(versions, (r"cuda-toolkit-\d+-\d+", r"cuda-cudart-\d+-\d+", r"cuda-runtime-\d+-\d+"))
    trt = _first(versions, (r"tensorrt", r"libnvinfer\d+", r"libnvinfer-bin"))
    if trt is None:
        notes.append("TensorRT is not installed (sudo apt install nvidia-tensorrt, or python3-libnvinfer)")
    return JetsonInfo(
        model=model,
        l4t=l4t,
        jetpack=release.jetpack if release else None,
        jetpack_package=package.split("+")[0] if package else None,
        cuda=cuda[1].split("-")[0] if cuda else None,
        tensorrt=trt[1].split("-")[0].split("+")[0] if trt else None,
        tensorrt_python="python3-libnvinfer" in versions,
        expected=asdict(release) if release else {},
        notes=tuple(notes),
    )


__all__ = [
    "RELEASES",
    "JetPackRelease",
    "JetsonInfo",
    "NvpmodelConf",
    "PowerMode",
    "describe_jetson",
    "jetpack_for_l4t",
    "max_performance_mode",
    "parse_dpkg_status",
    "parse_l4t_release",
    "parse_nvpmodel_conf",
    "release_for_l4t",
    "release_table_markdown",
]
