"""netem: the tc command lines built from a profile, and the runner's errors. Nothing here touches a real
interface: the runner only ever meets a fake ``tc`` (PATH is a temporary folder) or none at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from covspec.errors import ConfigError
from covspec.link.netem import apply_netem, netem, netem_apply_command, netem_remove_command
from covspec.link.presets import LinkProfile, link_profile

IFACE = "cvstest0"  # exists nowhere


def test_commands_from_presets() -> None:
    assert netem_apply_command("eth0", link_profile("lte")) == [
        "tc", "qdisc", "replace", "dev", "eth0", "root", "netem",
        "delay", "27.5ms", "2.5ms", "rate", "10000kbit",
    ]  # fmt: skip
    assert netem_apply_command("eth0", link_profile("lte"), side="edge")[-1] == "50000kbit"
    assert netem_apply_command("wlan0", link_profile("cell-edge"))[7:] == [
        "delay", "90ms", "10ms", "rate", "1000kbit", "loss", "1%",
    ]  # fmt: skip
    assert netem_apply_command("lo", link_profile("lan"))[7:] == ["delay", "0.5ms", "rate", "1000000kbit"]
    assert netem_apply_command("lo", LinkProfile("l", loss_pct=0.25))[7:] == ["loss", "0.25%"]
    assert netem_remove_command("eth0") == ["tc", "qdisc", "del", "dev", "eth0", "root"]


def test_commands_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="shapes nothing"):
        netem_apply_command("lo", link_profile("loopback"))
    with pytest.raises(ValueError, match="interface"):
        netem_apply_command("eth0; reboot", link_profile("lte"))
    with pytest.raises(ValueError, match="side"):
        netem_apply_command("eth0", link_profile("lte"), side="middle")


def test_missing_tc_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no tc
    with pytest.raises(ConfigError, match=r"`tc` was not found.*iproute2"):
        apply_netem(IFACE, link_profile("lte"))


def _fake_tc(folder: Path, rc: int) -> Path:
    log = folder / "calls"
    script = folder / "tc"
    refusal = "RTNETLINK answers: Operation not permitted"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\necho "{refusal}" >&2\nexit {rc}\n')
    script.chmod(0o755)
    return log


def test_apply_then_remove_through_tc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _fake_tc(tmp_path, 0)
    monkeypatch.setenv("PATH", str(tmp_path))
    with netem(IFACE, link_profile("cell-edge")) as command:
        assert command[:7] == ["tc", "qdisc", "replace", "dev", IFACE, "root", "netem"]
    calls = log.read_text().splitlines()
    assert calls == [
        f"qdisc replace dev {IFACE} root netem delay 90ms 10ms rate 1000kbit loss 1%",
        f"qdisc del dev {IFACE} root",
    ]


def test_tc_failure_names_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tc(tmp_path, 2)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="Operation not permitted.*root"):
        apply_netem(IFACE, link_profile("lte"))
    assert os.environ["PATH"] == str(tmp_path)
