"""Link presets: the figures, their sources, loss in the profile, and overrides in the units people type."""

from __future__ import annotations

import dataclasses

import pytest

from covspec.link.presets import LINK_PRESETS, LinkProfile, custom_profile, link_profile


def test_every_shaped_preset_says_where_its_figures_come_from() -> None:
    for profile in LINK_PRESETS.values():
        assert profile.description
        assert profile.source or not profile.shaped, profile.name


def test_cell_edge_is_a_weak_cellular_link() -> None:
    weak = link_profile("cell-edge")
    assert 0.15 <= weak.rtt_s <= weak.rtt_s + 2 * weak.jitter_s <= 0.2
    assert 1e6 <= weak.uplink_bps <= 2e6 and weak.downlink_bps == 5e6 and weak.loss_pct == 1.0
    assert weak.rto_s == pytest.approx(0.16 + 0.2)  # RTT + Linux's 200 ms floor (4 x 20 ms jitter is less)
    assert "loss 1%" in weak.summary()


def test_existing_presets_keep_their_numbers() -> None:
    assert link_profile("lte").rtt_s == pytest.approx(0.05)
    assert (link_profile("5g").uplink_bps, link_profile("5g").downlink_bps) == (50e6, 200e6)
    assert all(p.loss_pct == 0 for name, p in LINK_PRESETS.items() if name != "cell-edge")
    positional = LinkProfile("old", 0.01, 0.0, 1e6, 2e6, "as before")  # the original field order still works
    assert positional.downlink_bps == 2e6 and positional.description == "as before"


def test_loss_alone_is_shaping_and_values_are_checked() -> None:
    assert LinkProfile("lossy", loss_pct=0.5).shaped
    assert not LinkProfile("plain").shaped
    for bad in ({"loss_pct": 100}, {"loss_pct": -1}, {"one_way_delay_s": -0.1}, {"uplink_bps": 0}):
        with pytest.raises(ValueError):
            LinkProfile("bad", **bad)
    with pytest.raises(ValueError, match="direction"):
        LinkProfile("x").bps("sideways")


def test_rto_follows_linux() -> None:
    assert LinkProfile("x", one_way_delay_s=0.05).rto_s == pytest.approx(0.1 + 0.2)
    assert LinkProfile("x", one_way_delay_s=0.05, jitter_s=0.1).rto_s == pytest.approx(0.1 + 0.4)  # 4 x jitter
    assert LinkProfile("x", min_rto_s=0.05).rto_s == pytest.approx(0.05)


def test_custom_profile_overrides_single_fields() -> None:
    lte = link_profile("lte")
    changed = custom_profile("lte", delay_ms=100, up_mbps=0, loss_pct=2)
    assert changed.name == "lte+custom"
    assert changed.one_way_delay_s == 0.1 and changed.uplink_bps is None and changed.loss_pct == 2
    assert (changed.jitter_s, changed.downlink_bps) == (lte.jitter_s, lte.downlink_bps)
    assert custom_profile("lte") is lte
    fresh = custom_profile(delay_ms=5, jitter_ms=1, up_mbps=2, down_mbps=8, min_rto_ms=50)
    assert dataclasses.astuple(fresh)[:5] == ("custom", 0.005, 0.001, 2e6, 8e6) and fresh.min_rto_s == 0.05
    assert not custom_profile().shaped
    with pytest.raises(ValueError, match="unknown link preset"):
        custom_profile("carrier-pigeon")
