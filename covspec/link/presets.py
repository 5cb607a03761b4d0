"""Named link profiles for the emulating relay: one-way delay, jitter, bandwidth per direction and packet loss.

The numbers are representative of each kind of link (typical published figures, sources in docs/links.md), not
measurements of any network; say which preset a result used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

LINUX_MIN_RTO_S = 0.2  # TCP_RTO_MIN = HZ/5 in the Linux kernel (include/net/tcp.h)


@dataclass(frozen=True)
class LinkProfile:
    name: str
    one_way_delay_s: float = 0.0
    jitter_s: float = 0.0  # uniform extra delay in [0, jitter_s) per chunk; order is kept
    uplink_bps: float | None = None  # device -> edge; None = unshaped
    downlink_bps: float | None = None  # edge -> device
    description: str = ""
    loss_pct: float = 0.0  # percent of MSS-sized segments lost, each independently; TCP retransmits them (relay.py)
    min_rto_s: float = LINUX_MIN_RTO_S  # floor of the retransmission timeout a lost segment waits
    source: str = ""  # where the figures come from, in a few words (docs/links.md has the full story)

    def __post_init__(self) -> None:
        if self.one_way_delay_s < 0 or self.jitter_s < 0 or self.min_rto_s < 0:
            raise ValueError(f"link {self.name!r}: delays must be >= 0")
        if not 0 <= self.loss_pct < 100:
            raise ValueError(f"link {self.name!r}: loss_pct must be in [0, 100), got {self.loss_pct}")
        for bps in (self.uplink_bps, self.downlink_bps):
            if bps is not None and bps <= 0:
                raise ValueError(f"link {self.name!r}: a bandwidth is > 0 bit/s or None (unshaped), got {bps}")

    @property
    def shaped(self) -> bool:
        return bool(self.one_way_delay_s or self.jitter_s or self.uplink_bps or self.downlink_bps or self.loss_pct)

    @property
    def rtt_s(self) -> float:
        return 2 * self.one_way_delay_s

    @property
    def rto_s(self) -> float:
        """How long a lost segment waits for its retransmission: Linux's RTO, SRTT + max(rto_min, 4*RTTVAR), with
        the round trip for SRTT and the jitter bound standing in for RTTVAR (docs/links.md, "Loss")."""
        return self.rtt_s + max(self.min_rto_s, 4 * self.jitter_s)

    def bps(self, direction: str) -> float | None:
        """The rate of one direction: "up" (device -> edge) or "down"."""
        if direction not in ("up", "down"):
            raise ValueError(f"direction is 'up' or 'down', got {direction!r}")
        return self.uplink_bps if direction == "up" else self.downlink_bps

    def summary(self) -> str:
        """One line saying what is emulated, for people."""
        if not self.shaped:
            return f"{self.name}: no shaping"
        delay = f"one-way delay {_ms(self.one_way_delay_s)}"
        if self.jitter_s:
            delay += f" (+0-{_ms(self.jitter_s)} jitter)"
        parts = [delay, f"up {_rate(self.uplink_bps)}", f"down {_rate(self.downlink_bps)}"]
        if self.loss_pct:
            parts.append(f"loss {self.loss_pct:g}% (a lost segment waits {_ms(self.rto_s)})")
        return f"{self.name}: " + ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms"


def _rate(bps: float | None) -> str:
    return "unlimited" if bps is None else f"{bps / 1e6:g} Mbit/s"


LINK_PRESETS: dict[str, LinkProfile] = {
    p.name: p
    for p in (
        LinkProfile("loopback", description="no shaping: 127.0.0.1 as it is"),
        LinkProfile(
            "lan",
            one_way_delay_s=0.0005,
            uplink_bps=1e9,
            downlink_bps=1e9,
            description="wired gigabit LAN, 1 ms RTT",
            source="IEEE 802.3ab 1000BASE-T line rate; switched-LAN round trips well under 1 ms",
        ),
        LinkProfile(
            "wifi",
            one_way_delay_s=0.004,
            jitter_s=0.002,
            uplink_bps=100e6,
            downlink_bps=100e6,
            description="good Wi-Fi to an on-premises edge, ~8-12 ms RTT",
            source="802.11ac/ax one-hop figures; Ookla fixed-broadband latency medians as an upper bound",
        ),
        LinkProfile(
            "5g",
            one_way_delay_s=0.010,
            jitter_s=0.003,
            uplink_bps=50e6,
            downlink_bps=200e6,
            description="5G to a MEC edge, ~20-26 ms RTT, 50/200 Mbit/s",
            source="ITU-R M.2410 (4 ms radio latency, 50 Mbit/s experienced uplink); Ookla 5G median download",
        ),
        LinkProfile(
            "lte",
            one_way_delay_s=0.025,
            jitter_s=0.005,
            uplink_bps=10e6,
            downlink_bps=50e6,
            description="LTE to a regional edge, ~50-60 ms RTT, 10/50 Mbit/s",
            source="OpenSignal and Ookla 4G/mobile latency and speed reports (a good cell)",
        ),
        LinkProfile(
            "cell-edge",
            one_way_delay_s=0.080,
            jitter_s=0.020,
            uplink_bps=1e6,
            downlink_bps=5e6,
            loss_pct=1.0,
            description="weak 4G/5G at the cell edge, ~160-200 ms RTT, 1/5 Mbit/s, 1% loss",
            source="Ookla Consistency floor (5 Mbit/s down, 1 Mbit/s up); 3GPP TS 23.203 QCI delay and loss budgets",
        ),
    )
}


def link_profile(name: str) -> LinkProfile:
    try:
        return LINK_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown link preset {name!r}; choose one of {', '.join(LINK_PRESETS)}") from None


def custom_profile(
    preset: str | None = None,
    *,
    delay_ms: float | None = None,
    jitter_ms: float | None = None,
    up_mbps: float | None = None,
    down_mbps: float | None = None,
    loss_pct: float | None = None,
    min_rto_ms: float | None = None,
) -> LinkProfile:
    """A preset (or no shaping) with single fields overridden, in the units people type: ms, Mbit/s, percent.

    A rate of 0 Mbit/s means unshaped. The result is named after the preset, "+custom" when anything was overridden.
    """
    base = link_profile(preset) if preset is not None else LinkProfile("custom")
    changes: dict[str, Any] = {}
    if delay_ms is not None:
        changes["one_way_delay_s"] = delay_ms / 1000
    if jitter_ms is not None:
        changes["jitter_s"] = jitter_ms / 1000
    if up_mbps is not None:
        changes["uplink_bps"] = up_mbps * 1e6 or None
    if down_mbps is not None:
        changes["downlink_bps"] = down_mbps * 1e6 or None
    if loss_pct is not None:
        changes["loss_pct"] = loss_pct
    if min_rto_ms is not None:
        changes["min_rto_s"] = min_rto_ms / 1000
    if not changes:
        return base
    name = f"{preset}+custom" if preset is not None else "custom"
    return dataclasses.replace(base, name=name, description="", source="", **changes)
