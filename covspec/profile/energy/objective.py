"""The device's power for the cost model's energy objectives (:class:`covspec.spec.cost_model.EnergyInputs`), from
the documented estimate: a power profile of :mod:`covspec.profile.energy.estimate` and a radio of
:mod:`covspec.profile.energy.radio`.

While a device runs rounds it waits on the link and the edge most of the time, and rounds come every few tens of
milliseconds, far inside any radio's tail: the radio never returns to idle during a generation. So the waiting draw
is the SoC's idle power plus the radio's connected (tail) power, drafting adds the busy cores (or the GPU), and each
byte adds the radio's throughput-proportional term (alpha of Huang et al.'s model; its time term beta is the
connected power already counted while waiting). A model, labelled as one wherever shown (docs/energy.md).
"""

from __future__ import annotations

from covspec.errors import ConfigError
from covspec.profile.energy.estimate import PowerProfile, power_profile
from covspec.profile.energy.radio import RadioProfile, radio_profile
from covspec.spec.cost_model import EnergyInputs

_MJ_PER_MBIT_TO_J_PER_BYTE = 8 / 1e6 / 1000.0  # alpha mW per Mbps = mJ per Mbit


def radio_terms(radio: str | RadioProfile | None) -> tuple[float, float, float]:
    """(connected watts, joules per byte up, joules per byte down) of ``radio`` (None: a wired link, all zero)."""
    link = radio_profile(radio) if isinstance(radio, str) else radio
    if link is None:
        return 0.0, 0.0, 0.0
    return (
        link.tail_mw / 1000.0,
        link.alpha_up_mw_per_mbps * _MJ_PER_MBIT_TO_J_PER_BYTE,
        link.alpha_down_mw_per_mbps * _MJ_PER_MBIT_TO_J_PER_BYTE,
    )


def measured_energy_inputs(idle_w: float, drafting_w: float, radio: str | RadioProfile | None) -> EnergyInputs:
    """EnergyInputs from a meter's mean watts while the device idled and while it drafted (`covspec pair
    --energy`), plus the radio's model: a SoC meter does not see the modem (a battery meter does; then pass None)."""
    connected_w, up, down = radio_terms(radio)
    wait_w = idle_w + connected_w
    return EnergyInputs(max(drafting_w + connected_w, wait_w), wait_w, up, down)


def energy_inputs(
    power: str | PowerProfile,
    radio: str | RadioProfile | None,
    busy_cores: int = 1,
    *,
    drafter_on_gpu: bool = False,
) -> EnergyInputs:
    """The estimate's watts for a drafter on ``busy_cores`` CPU cores (or the GPU) and the radio's joules per byte
    (``radio`` None: a wired link, no radio energy)."""
    profile = power_profile(power)
    if busy_cores < 1:
        raise ValueError(f"busy_cores must be >= 1, got {busy_cores}")
    if drafter_on_gpu and not profile.has_gpu:
        raise ConfigError(f"power profile {profile.name} has no GPU to draft on")
    compute_w = profile.gpu_w if drafter_on_gpu else min(busy_cores, profile.cores) * profile.core_w
    return measured_energy_inputs(profile.idle_w, profile.idle_w + compute_w, radio)


__all__ = ["energy_inputs", "measured_energy_inputs", "power_profile", "radio_terms"]
