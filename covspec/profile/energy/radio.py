"""Radio energy from published smartphone measurements: energy per byte and tail energy per transfer.

The model is the linear power model of Huang et al. (MobiSys 2012): while transferring, the radio draws
``P = alpha_up * r_up + alpha_down * r_down + beta`` (mW, throughputs in Mbps), so a transfer of ``b`` bits in one
direction at ``r`` Mbps costs ``alpha * b/1e6 + beta * b/(r*1e6)`` mJ. Each *transfer* (a burst of traffic separated
from the next by more than the tail time) also pays the promotion into the connected state and the tail after it.
Throughputs are the nominal ones of the profile (the medians the paper measured) unless the caller gives its own.
Figures and sources: docs/energy.md. ``verified`` is False for figures we could not check against the paper's table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from covspec.errors import ConfigError


@dataclass(frozen=True)
class RadioProfile:
    name: str
    alpha_up_mw_per_mbps: float
    alpha_down_mw_per_mbps: float
    beta_mw: float
    up_mbps: float  # nominal throughput used for the beta (time) term
    down_mbps: float
    promotion_s: float
    promotion_mw: float
    tail_s: float
    tail_mw: float
    source: str
    verified: bool = True

    def joules_per_byte(self, direction: str, mbps: float | None = None) -> float:
        """Energy of one byte sent (``up``) or received (``down``) at ``mbps`` (default: the nominal rate)."""
        alpha, rate = (
            (self.alpha_up_mw_per_mbps, mbps or self.up_mbps)
            if direction == "up"
            else (self.alpha_down_mw_per_mbps, mbps or self.down_mbps)
        )
        mj_per_mbit = alpha + self.beta_mw / rate
        return mj_per_mbit / 1000.0 * 8 / 1e6

    @property
    def transfer_overhead_j(self) -> float:
        """Promotion plus a full tail: what one isolated transfer pays on top of its bytes."""
        return (self.promotion_s * self.promotion_mw + self.tail_s * self.tail_mw) / 1000.0


PROFILES: dict[str, RadioProfile] = {
    p.name: p
    for p in (
        RadioProfile(
            "wifi",
            283.17,
            137.01,
            132.86,
            6.0,
            13.0,
            0.0791,
            124.4,
            0.2381,
            119.3,
            "Huang et al., MobiSys 2012, Table 3 (WiFi)",
        ),
        RadioProfile(
            "lte",
            438.39,
            51.97,
            1288.04,
            6.0,
            13.0,
            0.2601,
            1210.7,
            11.576,
            1060.0,
            "Huang et al., MobiSys 2012, Table 3 (LTE); medians 6 Mbps up / 13 Mbps down",
        ),
        RadioProfile(
            "5g",
            250.0,
            30.0,
            2000.0,
            30.0,
            200.0,
            0.3,
            1500.0,
            10.0,
            1500.0,
            "order of magnitude after Narayanan et al., SIGCOMM 2021 (NSA 5G keeps LTE's RRC tail) [verify]",
            verified=False,
        ),
    )
}


@dataclass(frozen=True)
class RadioEnergy:
    """Joules split by cause; always a model (``estimated``)."""

    profile: str
    bytes_j: float
    overhead_j: float
    transfers: int
    verified: bool

    @property
    def joules(self) -> float:
        return self.bytes_j + self.overhead_j

    estimated = True

    def to_dict(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "joules": self.joules,
            "bytes_j": self.bytes_j,
            "overhead_j": self.overhead_j,
            "transfers": self.transfers,
            "estimated": True,
            "verified_figures": self.verified,
        }


def radio_profile(name: str) -> RadioProfile:
    if name not in PROFILES:
        raise ConfigError(f"unknown radio {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def radio_energy(profile: str | RadioProfile, up_bytes: int, down_bytes: int, transfers: int) -> RadioEnergy:
    """Energy of ``up_bytes``/``down_bytes`` moved in ``transfers`` separate bursts (see :func:`count_transfers`)."""
    p = radio_profile(profile) if isinstance(profile, str) else profile
    if min(up_bytes, down_bytes, transfers) < 0:
        raise ValueError("bytes and transfers must be >= 0")
    bytes_j = up_bytes * p.joules_per_byte("up") + down_bytes * p.joules_per_byte("down")
    return RadioEnergy(p.name, bytes_j, transfers * p.transfer_overhead_j, transfers, p.verified)


def count_transfers(times_s: Sequence[float], tail_s: float) -> int:
    """Bursts in a sorted list of packet/frame times: a new burst starts after a gap longer than ``tail_s`` (the
    radio fell back to idle and must be promoted again)."""
    if not times_s:
        return 0
    return 1 + sum(1 for a, b in zip(times_s, times_s[1:], strict=False) if b - a > tail_s)
