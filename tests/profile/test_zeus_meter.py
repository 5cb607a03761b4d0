"""Zeus behind ``--energy nvml|rapl``: real Zeus on this machine (no GPU, no RAPL: it says why and the factory falls
back to our readers' own reasons), Zeus's RAPL reader on a fixture powercap tree, and the GPU path where there is one.

The sysfs system edge: Zeus reads RAPL under the module constant ``zeus.device.cpu.rapl.RAPL_DIR`` and caches
``rapl_is_available()`` and its device object (``zeus.device.cpu._cpus``), so the ``zeus_rapl`` fixture points the
constant at a fixture tree, clears the cache and the device object, and afterwards stops the wrap-around tracker
processes Zeus spawned (it would otherwise stop them only at interpreter exit)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from covspec.errors import EngineUnavailableError
from covspec.profile.energy import factory
from covspec.profile.energy.factory import MeterKind, make_meter, probe_meters
from covspec.profile.energy.rapl import RaplMeter
from covspec.profile.energy.zeus import ZeusMeter
from tests.profile import fixtures as fx

ZEUS_MISSING = "Zeus is the optional zeus extra (pip install 'covspec[zeus]'); it is not installed"
REAL_RAPL = Path("/sys/class/powercap/intel-rapl").exists()


def _nvml_works() -> bool:
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
        return nvml.nvmlDeviceGetCount() > 0
    except Exception:
        return False


def _stop_trackers(cpus: object) -> list[object]:
    """Stop the wrap-around tracker processes Zeus spawned for these RAPL zones; the processes stopped."""
    stopped = []
    for cpu in getattr(cpus, "cpus", []):
        for counter in (cpu.rapl_file, cpu.dram):
            tracker = getattr(counter, "_wraparound_tracker", None)
            if tracker is not None and tracker.process is not None:
                process = tracker.process
                tracker._stop()
                stopped.append(process)
    return stopped


@pytest.fixture
def zeus_rapl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """Zeus's RAPL reader pointed at a fixture tree (package-0 with core and dram subzones, psys)."""
    rapl = pytest.importorskip("zeus.device.cpu.rapl", reason=ZEUS_MISSING)
    cpu = importlib.import_module("zeus.device.cpu")
    for var in ("ZEUSD_SOCK_PATH", "ZEUSD_HOST_PORT", "ZEUSD_TOKEN"):
        monkeypatch.delenv(var, raising=False)  # zeusd would read the real counters
    monkeypatch.setattr(rapl, "RAPL_DIR", str(fx.rapl_sysfs(tmp_path)))
    monkeypatch.setattr(rapl, "CONTAINER_RAPL_DIR", str(tmp_path / "no-container"))
    monkeypatch.setattr(cpu, "_cpus", None)
    rapl.rapl_is_available.cache_clear()
    state: dict = {"root": tmp_path, "rapl": rapl, "cpu": cpu, "stopped": []}
    yield state
    state["stopped"] = _stop_trackers(cpu._cpus)
    assert not any(p.is_alive() for p in state["stopped"])
    rapl.rapl_is_available.cache_clear()


def test_importing_covspec_does_not_import_zeus() -> None:
    code = "import sys, covspec.profile.energy, covspec.profile.system; print('zeus' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"


# (a) this machine, real Zeus


@pytest.mark.skipif(REAL_RAPL, reason="this machine has RAPL: the no-RAPL answers are checked where there is none")
def test_without_rapl_zeus_says_why_and_the_factory_adds_our_readers_reason() -> None:
    pytest.importorskip("zeus", reason=ZEUS_MISSING)
    with pytest.raises(EngineUnavailableError) as zeus_said:
        ZeusMeter(gpu_indices=[])
    assert zeus_said.value.message.startswith("rapl (zeus): RAPL unvailable")  # Zeus's own words, typo included
    assert "Failed to initialize CPU management library" in zeus_said.value.message
    with pytest.raises(EngineUnavailableError) as both:
        make_meter("rapl")
    ours, _, theirs = both.value.message.partition("; rapl (zeus): ")
    assert ours.startswith("rapl: no /sys/class/powercap/intel-rapl:* zone with energy_uj")
    assert "Failed to initialize CPU management library" in theirs
    assert probe_meters()["rapl"] == both.value.message


@pytest.mark.skipif(_nvml_works(), reason="this machine has an NVIDIA GPU: the no-GPU answers are checked elsewhere")
def test_without_a_gpu_zeus_says_why_and_the_factory_adds_our_readers_reason() -> None:
    pytest.importorskip("zeus", reason=ZEUS_MISSING)
    with pytest.raises(EngineUnavailableError, match=r"^nvml \(zeus\): NVML and AMDSMI unavailable"):
        ZeusMeter(cpu_indices=[])
    with pytest.raises(EngineUnavailableError) as both:
        make_meter("nvml")
    ours, _, theirs = both.value.message.partition("; nvml (zeus): ")
    assert ours.startswith("nvml: ") and "no NVIDIA driver" in ours  # nvmlInit failed, or pynvml is missing
    assert theirs.startswith("NVML and AMDSMI unavailable")
    assert probe_meters()["nvml"] == both.value.message


def test_without_zeus_our_reader_measures_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zeus.device", None)  # import fails as if the extra were not installed
    with pytest.raises(EngineUnavailableError, match=r"zeus: not installed .*pip install 'covspec\[zeus\]'"):
        ZeusMeter()
    fx.rapl_tree(tmp_path)
    meter = make_meter("rapl", root=tmp_path, options={MeterKind.RAPL: {"zeus": True}})
    assert meter.name == "rapl" and "Zeus not used: zeus: not installed" in meter.reader
    meter.start()
    fx.set_counter(tmp_path, "intel-rapl:0", 1_500_000)
    reading = meter.stop()
    assert reading.joules == pytest.approx(0.5)
    assert reading.notes[-1].startswith("measured by covspec's own rapl reader; Zeus not used: zeus: not installed")
    assert probe_meters(tmp_path)["rapl"].startswith("ok (rapl): covspec's own rapl reader; Zeus not used: not tried")


# (b) Zeus's RAPL reader on a fixture powercap tree


def test_zeus_reads_package_plus_dram_leaves_psys_out_and_agrees_with_ours(zeus_rapl: dict) -> None:
    root = zeus_rapl["root"]
    zeus = ZeusMeter(gpu_indices=[])
    ours = RaplMeter(root=root)
    assert zeus.name == "rapl (zeus)" and zeus.cpu_indices == [0]  # cpu1 is psys
    zeus.start()
    ours.start()
    fx.set_counter(root, "intel-rapl:0", 3_000_000)  # +2 J package
    fx.set_counter(root, "intel-rapl:0:1", 750_000)  # +0.25 J dram
    fx.set_counter(root, "intel-rapl:1", 19_000_000)  # +10 J psys: the platform, package included
    reading, our_reading = zeus.stop(), ours.stop()
    assert reading.meter == "rapl (zeus)" and not reading.estimated
    assert reading.joules == pytest.approx(2.25) == our_reading.joules
    assert reading.rails_j == {"cpu0": pytest.approx(2.0), "dram0": pytest.approx(0.25)}
    assert reading.duration_s > 0 and reading.samples == 2
    assert reading.notes[0].startswith("measured by Zeus 0.16")
    assert "cpu0=package-0" in reading.notes[0] and "cpu1 = psys" in reading.notes[0]
    trackers = _stop_trackers(zeus_rapl["cpu"]._cpus)
    assert len(trackers) == 2  # Zeus spawned one wrap-around tracker per counter read (package, dram)
    assert not any(p.is_alive() for p in trackers)


def test_the_factory_uses_zeus_for_rapl_when_it_works(zeus_rapl: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(root: Path, **kw: object) -> None:
        raise EngineUnavailableError("disabled in this test")

    monkeypatch.setitem(factory.BUILDERS, MeterKind.JETSON, unavailable)
    monkeypatch.setitem(factory.BUILDERS, MeterKind.NVML, unavailable)
    assert make_meter("rapl").name == "rapl (zeus)"
    assert make_meter("auto").name == "rapl (zeus)"  # auto's order is unchanged; rapl is now read by Zeus
    assert probe_meters()["rapl"].startswith("ok (rapl (zeus)): Zeus 0.16")
    ours = make_meter("rapl", root=zeus_rapl["root"])  # a fixture root: Zeus reads its RAPL_DIR, not the root
    assert ours.name == "rapl" and "Zeus not used: not tried (Zeus reads /sys/class/powercap/intel-rapl" in ours.reader
    assert make_meter("rapl", root=zeus_rapl["root"], options={MeterKind.RAPL: {"zeus": True}}).name == "rapl (zeus)"
    assert make_meter("rapl", root=zeus_rapl["root"], options={MeterKind.RAPL: {"zeus": False}}).name == "rapl"


def test_a_root_only_counter_is_explained_by_both_readers(zeus_rapl: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root reads any file whatever its mode, so the denial is raised where Zeus opens files (its module's ``open``),
    as our reader's is (``read_text``)."""

    def denying_open(path, *args, **kwargs):
        if os.path.basename(path) == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(zeus_rapl["rapl"], "open", denying_open, raising=False)
    with pytest.raises(EngineUnavailableError) as zeus_said:
        ZeusMeter(gpu_indices=[])
    assert "RAPL requires root privileges" in zeus_said.value.message  # Zeus's words
    assert "chmod a+r" in zeus_said.value.message and "zeusd" in zeus_said.value.message  # how to grant access
    options = {MeterKind.RAPL: {"zeus": True, "read_text": fx.denying("energy_uj")}}
    with pytest.raises(EngineUnavailableError) as both:
        make_meter("rapl", root=zeus_rapl["root"], options=options)
    ours, _, theirs = both.value.message.partition("; rapl (zeus): ")
    assert "Permission denied" in ours and "CVE-2020-8694" in ours
    assert "RAPL requires root privileges" in theirs


# (c) the GPU path


@pytest.mark.gpu
@pytest.mark.skipif(not _nvml_works(), reason="needs an NVIDIA GPU with its driver (NVML); none here")
def test_zeus_reads_an_nvidia_gpu() -> None:
    pytest.importorskip("zeus", reason=ZEUS_MISSING)
    meter = ZeusMeter(gpu_indices=[0], cpu_indices=[])
    assert meter.name == "nvml (zeus)"
    meter.start()
    sum(i * i for i in range(3_000_000))  # a few hundred ms; the GPU idles at some watts meanwhile
    reading = meter.stop()
    assert set(reading.rails_j) == {"gpu0"} and reading.joules > 0
    assert make_meter("nvml").name == "nvml (zeus)"
    assert probe_meters()["nvml"].startswith("ok (nvml (zeus)): Zeus")
