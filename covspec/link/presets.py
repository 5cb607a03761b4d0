"""Named link profiles for the emulating relay: one-way delay, jitter and bandwidth per direction.

The numbers are representative of each kind of link (typical published figures), not measurements of any network;
say which preset a result used.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinkProfile:
    name: str
    one_way_delay_s: float = 0.0
    jitter_s: float = 0.0  # uniform extra delay in [0, jitter_s) per chunk; order is kept
    uplink_bps: float | None = None  # device -> edge; None = unshaped
    downlink_bps: float | None = None  # edge -> device
    description: str = ""

    @property
    def shaped(self) -> bool:
        return bool(self.one_way_delay_s or self.jitter_s or self.uplink_bps or self.downlink_bps)

    @property
    def rtt_s(self) -> float:
        return 2 * self.one_way_delay_s


LINK_PRESETS: dict[str, LinkProfile] = {
    p.name: p
    for p in (
        LinkProfile("loopback", description="no shaping: 127.0.0.1 as it is"),
        LinkProfile("lan", 0.0005, 0.0, 1e9, 1e9, "wired gigabit LAN, 1 ms RTT"),
        LinkProfile("wifi", 0.004, 0.002, 100e6, 100e6, "good Wi-Fi to an on-premises edge, ~8-12 ms RTT"),
        LinkProfile("5g", 0.010, 0.003, 50e6, 200e6, "5G to a MEC edge, ~20-26 ms RTT, 50/200 Mbit/s"),
        LinkProfile("lte", 0.025, 0.005, 10e6, 50e6, "LTE to a regional edge, ~50-60 ms RTT, 10/50 Mbit/s"),
    )
}


def link_profile(name: str) -> LinkProfile:
    try:
        return LINK_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown link preset {name!r}; choose one of {', '.join(LINK_PRESETS)}") from None
