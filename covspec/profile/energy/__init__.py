"""Energy meters behind one interface (start/stop -> EnergyReading) and the radio model; docs/energy.md."""

from covspec.profile.energy.base import EnergyMeter, EnergyReading, measuring
from covspec.profile.energy.factory import AUTO_ORDER, MeterKind, make_meter, probe_meters
from covspec.profile.energy.radio import RadioEnergy, count_transfers, radio_energy
from covspec.profile.energy.zeus import ZeusMeter

__all__ = [
    "AUTO_ORDER",
    "EnergyMeter",
    "EnergyReading",
    "MeterKind",
    "RadioEnergy",
    "ZeusMeter",
    "count_transfers",
    "make_meter",
    "measuring",
    "probe_meters",
    "radio_energy",
]
