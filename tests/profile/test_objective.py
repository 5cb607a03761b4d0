"""The estimate's watts for the cost model's energy objectives: the split of a power profile plus a radio."""

from __future__ import annotations

import pytest

from covspec.errors import ConfigError
from covspec.profile.energy.estimate import PROFILES
from covspec.profile.energy.objective import energy_inputs
from covspec.profile.energy.radio import PROFILES as RADIOS


def test_waiting_is_idle_plus_a_connected_radio_and_drafting_adds_the_busy_cores() -> None:
    orin, lte = PROFILES["orin-nano-15w"], RADIOS["lte"]
    inputs = energy_inputs("orin-nano-15w", "lte", busy_cores=2)
    assert inputs.wait_w == pytest.approx(0.2 * 15 + 1.060)  # idle share of 15 W + LTE's tail power
    assert inputs.draft_w == pytest.approx(inputs.wait_w + 2 * orin.core_w)
    assert inputs.up_joules_per_byte == pytest.approx(lte.alpha_up_mw_per_mbps * 1e-3 * 8e-6)  # mJ/Mbit -> J/byte
    assert inputs.down_joules_per_byte < inputs.up_joules_per_byte  # LTE's uplink costs more per bit
    on_gpu = energy_inputs("orin-nano-15w", "lte", drafter_on_gpu=True)
    assert on_gpu.draft_w == pytest.approx(inputs.wait_w + orin.gpu_w)


def test_a_wired_link_has_no_radio_and_cores_are_capped_at_the_profile() -> None:
    laptop = PROFILES["laptop-cpu-28w"]
    wired = energy_inputs(laptop, None, busy_cores=64)
    assert wired.wait_w == pytest.approx(laptop.idle_w) and wired.up_joules_per_byte == 0.0
    assert wired.draft_w == pytest.approx(laptop.idle_w + laptop.cores * laptop.core_w)


def test_bad_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown power profile"):
        energy_inputs("toaster", None)
    with pytest.raises(ConfigError, match="unknown radio"):
        energy_inputs("phone-soc", "carrier-pigeon")
    with pytest.raises(ConfigError, match="no GPU"):
        energy_inputs("laptop-cpu-28w", None, drafter_on_gpu=True)


def test_measured_watts_get_the_radio_on_top_and_never_draft_below_waiting() -> None:
    from covspec.profile.energy.objective import measured_energy_inputs, radio_terms

    connected, up, down = radio_terms("wifi")
    assert connected == pytest.approx(RADIOS["wifi"].tail_mw / 1000) and up > down > 0
    inputs = measured_energy_inputs(2.0, 3.5, "wifi")
    assert (inputs.wait_w, inputs.draft_w) == pytest.approx((2.0 + connected, 3.5 + connected))
    noisy = measured_energy_inputs(2.0, 1.9, None)  # a meter's noise put drafting under idling: clamp, not refuse
    assert noisy.draft_w == noisy.wait_w == 2.0 and radio_terms(None) == (0.0, 0.0, 0.0)
