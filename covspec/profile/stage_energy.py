"""Energy per stage: each device stage repeated in a meter window of its own, and the device's draw while it waits.

A stage of a generation lasts from a fraction of a millisecond (a drafter step) to a few milliseconds (a prefill):
shorter than a sampling meter's interval, and too short for a counter meter's update. So each is measured apart:
``idle`` (the device sleeping, as it does while waiting on the edge), ``prefill`` (``start`` repeated: the four
prefill stages together; one window cannot split them, so they share its joules in proportion to their time) and
``step`` (single-token decoder steps from the prompt up to ``max_steps`` tokens, then back). Each window lasts at
least ``window_s`` and ten of the meter's sampling intervals. The windows work with any meter through its one
interface; with the estimate meter each window's joules come from that stage's CPU time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from covspec.profile.energy import EnergyMeter, EnergyReading
from covspec.reduce import TokenReduction


@dataclass(frozen=True)
class StageWindow:
    """One window: ``calls`` repetitions of a stage in ``reading``."""

    stage: str
    calls: int
    reading: EnergyReading

    @property
    def joules_per_call(self) -> float | None:
        if self.reading.joules is None or self.calls == 0:
            return None
        return self.reading.joules / self.calls

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "calls": self.calls, "joules_per_call": self.joules_per_call,
                "reading": self.reading.to_dict()}  # fmt: skip


def window_seconds(meter: EnergyMeter, window_s: float) -> float:
    """How long a window must last for ``meter``: ``window_s``, or ten of its sampling intervals when longer."""
    interval = getattr(meter, "interval_s", None)
    return max(window_s, 10 * interval) if isinstance(interval, int | float) else window_s


def _repeat(meter: EnergyMeter, seconds: float, call: Any) -> tuple[int, EnergyReading]:
    calls = 0
    meter.start()
    try:
        deadline = time.perf_counter() + seconds
        while calls == 0 or time.perf_counter() < deadline:
            call()
            calls += 1
    finally:
        reading = meter.stop()
    return calls, reading


def measure_idle(meter: EnergyMeter, seconds: float) -> StageWindow:
    """The device's draw while this process sleeps: what waiting on the edge costs per second."""
    meter.start()
    try:
        time.sleep(seconds)
    finally:
        reading = meter.stop()
    return StageWindow("idle", 1, reading)


def measure_prefill(
    meter: EnergyMeter, engine: Any, image: Any, prompt: str, reduction: TokenReduction | None, seconds: float
) -> StageWindow:
    """``engine.start`` repeated for ``seconds``: joules per prefill (all its stages)."""
    calls, reading = _repeat(meter, seconds, lambda: engine.start(image, prompt, reduction))
    return StageWindow("prefill", calls, reading)


def measure_steps(
    meter: EnergyMeter,
    engine: Any,
    image: Any,
    prompt: str,
    reduction: TokenReduction | None,
    seconds: float,
    max_steps: int,
) -> StageWindow:
    """Greedy single-token steps from the prompt up to ``max_steps`` tokens, cropped back and again, for
    ``seconds``: joules per step (the crops, a slice each, ride along)."""
    sequence = engine.start(image, prompt, reduction)
    start, first = sequence.length, int(np.argmax(sequence.prefill_logits))
    state = {"token": first}

    def step() -> None:
        if sequence.length - start >= max(max_steps, 1):
            sequence.crop(start)
            state["token"] = first
        logits = sequence.extend([state["token"]])
        state["token"] = int(np.argmax(logits[-1]))

    calls, reading = _repeat(meter, seconds, step)
    return StageWindow("step", calls, reading)


def split_by_time(joules: float, seconds: dict[str, float]) -> dict[str, float]:
    """``joules`` shared among stages in proportion to their ``seconds`` (one window, several stages)."""
    total = sum(seconds.values())
    if total <= 0:
        return dict.fromkeys(seconds, 0.0)
    return {name: joules * s / total for name, s in seconds.items()}


__all__ = ["StageWindow", "measure_idle", "measure_prefill", "measure_steps", "split_by_time", "window_seconds"]
