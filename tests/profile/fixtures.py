"""Fixture sysfs trees (realistic layouts from the sources in docs/energy.md) and a reader that raises
PermissionError at the one place a meter opens a file (chmod 000 does not stop root, which runs CI)."""

from __future__ import annotations

from pathlib import Path


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return path


def orin_nx_jp6(root: Path, vdd_in_ma: int = 1000) -> Path:
    """Orin NX / Nano on JetPack 6: one INA3221 at 1-0040 (hwmon), VDD_IN total + two sub-rails, in7 = shunt sum."""
    hw = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1"
    for n, (label, mv, ma) in enumerate(
        [("VDD_IN", 5000, vdd_in_ma), ("VDD_CPU_GPU_CV", 5000, 200), ("VDD_SOC", 5000, 300)], start=1
    ):
        write(root, f"{hw}/in{n}_label", label)
        write(root, f"{hw}/in{n}_input", str(mv))
        write(root, f"{hw}/curr{n}_input", str(ma))
    write(root, f"{hw}/in7_label", "sum of shunt voltages")
    write(root, f"{hw}/in7_input", "120")
    return root / hw


def agx_orin_jp5(root: Path) -> None:
    """AGX Orin on JetPack 5: INA3221 at 1-0040 (three rails) and 1-0041 (one labelled channel, two disabled)."""
    hw0 = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon2"
    for n, (label, mv, ma) in enumerate(
        [("VDD_GPU_SOC", 5000, 1000), ("VDD_CPU_CV", 5000, 600), ("VIN_SYS_5V0", 5000, 1100)], start=1
    ):
        write(root, f"{hw0}/in{n}_label", label)
        write(root, f"{hw0}/in{n}_input", str(mv))
        write(root, f"{hw0}/curr{n}_input", str(ma))
    hw1 = "sys/bus/i2c/drivers/ina3221/1-0041/hwmon/hwmon3"
    write(root, f"{hw1}/in2_label", "VDDQ_VDD2_1V8AO")
    write(root, f"{hw1}/in2_input", "5000")
    write(root, f"{hw1}/curr2_input", "100")


def nano_jp4(root: Path) -> None:
    """Jetson Nano on JetPack 4 (L4T 32): NVIDIA's ina3221x iio driver at 6-0040, power in mW."""
    iio = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for n, (name, mw) in enumerate([("POM_5V_IN", 2000), ("POM_5V_GPU", 40), ("POM_5V_CPU", 560)]):
        write(root, f"{iio}/rail_name_{n}", name)
        write(root, f"{iio}/in_power{n}_input", str(mw))
        write(root, f"{iio}/in_voltage{n}_input", "5000")
        write(root, f"{iio}/in_current{n}_input", str(mw // 5))


def rapl_tree(root: Path, package_uj: int = 1_000_000, dram_uj: int = 500_000, max_uj: int = 262143328850) -> None:
    """One package with core and dram subzones, plus psys (laptops)."""
    base = "sys/class/powercap"
    for rel, name, value in [
        ("intel-rapl:0", "package-0", package_uj),
        ("intel-rapl:0:0", "core", 400_000),
        ("intel-rapl:0:1", "dram", dram_uj),
        ("intel-rapl:1", "psys", 9_000_000),
    ]:
        write(root, f"{base}/{rel}/name", name)
        write(root, f"{base}/{rel}/energy_uj", str(value))
        write(root, f"{base}/{rel}/max_energy_range_uj", str(max_uj))
    write(root, f"{base}/intel-rapl/enabled", "1")  # the control type folder has no counter


def rapl_sysfs(root: Path, package_uj: int = 1_000_000, dram_uj: int = 500_000, max_uj: int = 262143328850) -> Path:
    """The kernel's own powercap layout: zones nested under /sys/devices/virtual/powercap/intel-rapl, with
    /sys/class/powercap/intel-rapl and every intel-rapl:N[:M] as symlinks to them. Zeus reads the nested tree (from
    ``RAPL_DIR``), our reader the class links; the same zones as :func:`rapl_tree`. Returns the ``RAPL_DIR``."""
    devices = root / "sys/devices/virtual/powercap/intel-rapl"
    zones = [
        ("intel-rapl:0", "package-0", package_uj),
        ("intel-rapl:0/intel-rapl:0:0", "core", 400_000),
        ("intel-rapl:0/intel-rapl:0:1", "dram", dram_uj),
        ("intel-rapl:1", "psys", 9_000_000),
    ]
    for rel, name, value in zones:
        write(devices, f"{rel}/name", name)
        write(devices, f"{rel}/energy_uj", str(value))
        write(devices, f"{rel}/max_energy_range_uj", str(max_uj))
    write(devices, "enabled", "1")
    links = root / "sys/class/powercap"
    links.mkdir(parents=True, exist_ok=True)
    (links / "intel-rapl").symlink_to(devices, target_is_directory=True)
    for rel, _, _ in zones:
        (links / Path(rel).name).symlink_to(devices / rel, target_is_directory=True)
    return links / "intel-rapl"


def set_counter(root: Path, zone: str, value: int) -> None:
    write(root, f"sys/class/powercap/{zone}/energy_uj", str(value))


def battery_tree(root: Path, status: str = "Discharging", *, power_uw: int | None = None) -> None:
    """A laptop BAT0 (current x voltage, or power_now) beside the AC adapter (type Mains)."""
    bat = "sys/class/power_supply/BAT0"
    write(root, f"{bat}/type", "Battery")
    write(root, f"{bat}/status", status)
    write(root, f"{bat}/voltage_now", "12000000")  # 12 V
    write(root, f"{bat}/current_now", "-500000")  # 0.5 A, negative while discharging on this vendor
    if power_uw is not None:
        write(root, f"{bat}/power_now", str(power_uw))
    write(root, "sys/class/power_supply/AC/type", "Mains")
    write(root, "sys/class/power_supply/AC/online", "0")


def denying(*names: str):
    """A read_text that raises PermissionError for files with these names, like a root-only sysfs node."""

    def read(path: Path) -> str:
        if path.name in names:
            raise PermissionError(13, "Permission denied", str(path))
        return path.read_text().strip()

    return read
