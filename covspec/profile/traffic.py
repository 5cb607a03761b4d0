"""The device's traffic as the radio would see it: bytes counted on the socket, with the time each crossed it.

``TimedByteCounter`` is the client's ``ByteCounter`` (an ``EdgeClient`` takes one) that also keeps when bytes moved,
so the radio model (:mod:`covspec.profile.energy.radio`) can count *transfers*: bursts of traffic separated by more
than the radio's tail, each paying the promotion and the tail once. Rounds come every few milliseconds, far inside any
tail, so one generation is usually one transfer. The joules are a model from published figures, never a measurement.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from covspec.profile.energy.radio import RadioEnergy, count_transfers, radio_energy, radio_profile
from covspec.runtime_device.counting import ByteCounter


@dataclass
class TimedByteCounter(ByteCounter):
    """A ``ByteCounter`` that also records (perf_counter seconds, direction, bytes) for every count."""

    events: list[tuple[float, str, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, direction: str, n: int) -> None:
        super().add(direction, n)
        if n > 0:
            with self._lock:
                self.events.append((time.perf_counter(), direction, n))

    def window(self, start: float, stop: float) -> tuple[int, int, list[float]]:
        """(bytes sent, bytes received, event times) between ``start`` and ``stop`` (perf_counter seconds)."""
        with self._lock:
            inside = [e for e in self.events if start <= e[0] <= stop]
        sent = sum(n for _, d, n in inside if d == "sent")
        received = sum(n for _, d, n in inside if d == "received")
        return sent, received, [t for t, _, _ in inside]


def radio_for_window(counter: TimedByteCounter, radio: str, start: float, stop: float) -> RadioEnergy:
    """The radio model applied to what crossed the socket between ``start`` and ``stop`` (setup included)."""
    sent, received, times = counter.window(start, stop)
    transfers = count_transfers(times, radio_profile(radio).tail_s)
    return radio_energy(radio, sent, received, transfers)


__all__ = ["TimedByteCounter", "radio_for_window"]
