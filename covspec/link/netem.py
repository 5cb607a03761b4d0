"""The same link presets applied by the kernel: ``tc qdisc ... netem`` on a network interface instead of a relay.

netem shapes what an interface *sends* (its root qdisc is on egress). On ``lo`` every packet leaves through it, so
both directions get the delay (RTT = 2 x one-way, as with the relay) but share one rate limit. On a real interface
only outgoing packets are shaped: apply it on both machines, the device with ``side="device"`` (uplink rate), the
edge with ``side="edge"`` (downlink rate). netem drops packets for real and the kernel's TCP recovers them (fast
retransmit, tail loss probe or timeout), where the relay models every loss as a timeout (covspec.link.emulation).

Needs iproute2's ``tc`` and root (CAP_NET_ADMIN). Building the command lines is separate so they can be checked (and
printed) without touching any interface.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from covspec.errors import ConfigError
from covspec.link.presets import LinkProfile

_IFACE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")  # Linux's IFNAMSIZ is 16 with the NUL


def netem_apply_command(iface: str, profile: LinkProfile, *, side: str = "device") -> list[str]:
    """``tc qdisc replace dev IFACE root netem ...`` for ``profile``.

    The relay's jitter is uniform in [0, jitter) on top of the delay; netem's is +-jitter around its delay, so the
    delay given is one-way + jitter/2 and the jitter jitter/2 (same range, same mean). Rates go in kbit (1000 bit/s).
    """
    _check_iface(iface)
    if side not in ("device", "edge"):
        raise ValueError(f"side is 'device' (shape with the uplink rate) or 'edge' (downlink), got {side!r}")
    if not profile.shaped:
        raise ValueError(f"link {profile.name!r} shapes nothing; there is no netem to apply")
    args = ["tc", "qdisc", "replace", "dev", iface, "root", "netem"]
    if profile.one_way_delay_s or profile.jitter_s:
        args += ["delay", _time(profile.one_way_delay_s + profile.jitter_s / 2)]
        if profile.jitter_s:
            args.append(_time(profile.jitter_s / 2))
    bps = profile.uplink_bps if side == "device" else profile.downlink_bps
    if bps:
        args += ["rate", f"{max(1, round(bps / 1000))}kbit"]
    if profile.loss_pct:
        args += ["loss", f"{profile.loss_pct:g}%"]
    return args


def netem_remove_command(iface: str) -> list[str]:
    """``tc qdisc del dev IFACE root``: back to the interface's default qdisc."""
    _check_iface(iface)
    return ["tc", "qdisc", "del", "dev", iface, "root"]


def apply_netem(iface: str, profile: LinkProfile, *, side: str = "device") -> list[str]:
    """Apply ``profile`` to ``iface`` (replacing its root qdisc); returns the command run."""
    command = netem_apply_command(iface, profile, side=side)
    _run(command)
    return command


def remove_netem(iface: str) -> list[str]:
    command = netem_remove_command(iface)
    _run(command)
    return command


@contextmanager
def netem(iface: str, profile: LinkProfile, *, side: str = "device") -> Iterator[list[str]]:
    """Apply on entry, remove on exit (also on Ctrl-C)."""
    command = apply_netem(iface, profile, side=side)
    try:
        yield command
    finally:
        remove_netem(iface)


def _run(command: list[str]) -> None:
    tc = shutil.which(command[0])
    if tc is None:
        raise ConfigError(
            "`tc` was not found on PATH: --netem needs iproute2's tc (Debian/Ubuntu: apt-get install iproute2) "
            "and root; without them use the relay (drop --netem)"
        )
    done = subprocess.run([tc, *command[1:]], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise ConfigError(
            f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}; "
            "changing an interface's qdisc needs root (CAP_NET_ADMIN) and the sch_netem kernel module"
        )


def _check_iface(iface: str) -> None:
    if not _IFACE.match(iface):
        raise ValueError(f"not an interface name: {iface!r}")


def _time(seconds: float) -> str:
    return f"{round(seconds * 1e6) / 1000:g}ms"
