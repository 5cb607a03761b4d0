"""`covspec profile`: generations on a device bundle, every stage timed, each generation in an energy window.

With an edge, each generation is the device loop itself (``runtime_device.loop.generate``) over one connection kept
across generations, as a deployed device keeps it; the rounds it reports (``GenerationResult.rounds``) give the time
spent drafting and waiting on the edge, with the edge's own verify time split out, and a ``TimedByteCounter`` on the
client gives the bytes and their times for the radio model. Without an edge, the drafter decodes greedily by itself
(device-only stages; its tokens are drafted, not committed). One untimed warm-up generation goes first, then
``runs`` passes over the items. The stage energy windows (:mod:`covspec.profile.stage_energy`) follow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from covspec.link.presets import link_profile
from covspec.link.relay import relayed_url
from covspec.profile.energy import EnergyMeter, EnergyReading, MeterKind, RadioEnergy, make_meter
from covspec.profile.memory import peak_rss_kib, rss_kib
from covspec.profile.stage_energy import (
    StageWindow,
    measure_idle,
    measure_prefill,
    measure_steps,
    window_seconds,
)
from covspec.profile.stages import PrefillRecord, StepRecord, TimedEngine
from covspec.profile.traffic import TimedByteCounter, radio_for_window
from covspec.runtime_device.client import EdgeClient
from covspec.runtime_device.loop import GenerationConfig, generate
from covspec.runtime_device.upload import decode_rgb
from covspec.spec.policy import RoundObservation


@dataclass(frozen=True)
class ProfileItem:
    """One question: an encoded image (PNG, JPEG) and a prompt; ``label`` names it in the report."""

    image: bytes
    prompt: str
    label: str = ""


@dataclass(frozen=True)
class ProfileConfig:
    """What `covspec profile` runs; its flags map one to one onto these fields (and ``generation``'s)."""

    runs: int = 3
    warmup: int = 1  # untimed generations first (a connection's setup, the engine's first allocations)
    radio: str = "wifi"  # the radio model for the bytes (wifi | lte | 5g | none)
    link: str | None = None  # an emulated link preset in front of the edge (`covspec link`)
    stage_window_s: float = 0.5  # the least a stage energy window lasts
    step_buckets: int = 12  # context-length buckets of the step latency
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    def validate(self) -> None:
        if self.runs < 1 or self.warmup < 0:
            raise ValueError(f"need runs >= 1 and warmup >= 0, got {self.runs} and {self.warmup}")
        if self.stage_window_s <= 0:
            raise ValueError(f"stage_window_s must be > 0, got {self.stage_window_s}")
        if self.link is not None:
            link_profile(self.link)  # an unknown preset fails before any work


@dataclass
class GenerationRecord:
    """One measured generation: what it produced and everything timed in it."""

    item: int
    run: int
    tokens: list[int]
    text: str
    wall_s: float
    prefills: list[PrefillRecord]
    steps: list[StepRecord]
    reading: EnergyReading
    rss_before_kib: int | None
    rss_after_kib: int | None
    kv_bytes: int | None
    rounds: list[RoundObservation] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    radio: RadioEnergy | None = None


@dataclass
class ProfileRun:
    """Everything measured, before it is summarised (:mod:`covspec.profile.summary`)."""

    config: ProfileConfig
    items: list[ProfileItem]
    edge: str | None
    meter: EnergyMeter
    records: list[GenerationRecord]
    windows: dict[str, StageWindow]
    rss_after_load_kib: int | None
    peak_rss_kib: int
    engine: str


def profile_meter(kind: str | MeterKind = MeterKind.AUTO, power_profile: str | None = None) -> EnergyMeter:
    """The meter ``kind`` (``make_meter``), with the estimate reading this process's CPU time at nanosecond
    resolution (``time.process_time``, every thread): a generation lasts milliseconds, below ``os.times``'s 10 ms
    tick. ``power_profile`` names the estimate's profile (its default otherwise)."""
    estimate: dict[str, Any] = {"cpu_seconds": time.process_time}
    if power_profile is not None:
        estimate["profile"] = power_profile
    return make_meter(kind, options={MeterKind.ESTIMATE: estimate})


def run_profile(
    engine: Any,
    items: Sequence[ProfileItem],
    meter: EnergyMeter,
    config: ProfileConfig = ProfileConfig(),
    *,
    edge: str | None = None,
    api_key: str | None = None,
    progress: Any = None,
) -> ProfileRun:
    """Profile ``engine`` (any ``DrafterEngine``) on ``items``: ``config.warmup`` untimed generations, then
    ``config.runs`` timed passes over the items (against ``edge`` when given), then the stage energy windows."""
    config.validate()
    if not items:
        raise ValueError("nothing to profile: give at least one item (an image and a prompt)")
    timed = TimedEngine(engine)
    rss_loaded = rss_kib()
    measures = meter.name != "none"
    total = config.warmup + config.runs * len(items) + (3 if measures else 0)
    task = progress.add_task("profile", total=total) if progress is not None else None

    def advance() -> None:
        if task is not None:
            progress.update(task, advance=1)

    records: list[GenerationRecord] = []
    with ExitStack() as stack:
        generate_one = _device_only(timed, config.generation)
        counter = None
        if edge is not None:
            counter = TimedByteCounter()
            link = link_profile(config.link) if config.link is not None else None
            client = EdgeClient(stack.enter_context(relayed_url(edge, link)), api_key=api_key, counter=counter)
            stack.callback(client.close)
            generate_one = _with_edge(timed, client, config.generation)
        for w in range(config.warmup):
            item = items[w % len(items)]
            generate_one(item)
            advance()
        timed.recorder.take()
        for run in range(config.runs):
            for index, item in enumerate(items):
                records.append(_measured(timed, meter, generate_one, item, index, run, counter, config.radio))
                advance()
    windows: dict[str, StageWindow] = {}
    if measures:
        windows = _stage_windows(engine, items[0], meter, config, advance)
    return ProfileRun(config, list(items), edge, meter, records, windows, rss_loaded, peak_rss_kib(), engine.name)


# one generation of an item: (tokens, text, rounds, the loop's stats)
Generate = Callable[[ProfileItem], tuple[list[int], str, list[RoundObservation], dict[str, Any]]]


def _device_only(engine: TimedEngine, config: GenerationConfig) -> Generate:
    """Greedy decoding by the drafter alone: the device's stages without an edge."""
    eos = set(engine.fingerprint.eos_token_ids)

    def run(item: ProfileItem) -> tuple[list[int], str, list[RoundObservation], dict[str, Any]]:
        image = decode_rgb(item.image) if engine.accepts_images else None
        sequence = engine.start(image, item.prompt, config.reduction)
        logits, tokens = sequence.prefill_logits, []
        while len(tokens) < config.max_new_tokens:
            tokens.append(int(np.argmax(logits)))
            if tokens[-1] in eos:
                break
            logits = sequence.extend(tokens[-1:])[-1]
        return tokens, engine.decode(tokens), [], {"generated_tokens": len(tokens)}

    return run


def _with_edge(engine: TimedEngine, client: EdgeClient, config: GenerationConfig) -> Generate:
    def run(item: ProfileItem) -> tuple[list[int], str, list[RoundObservation], dict[str, Any]]:
        result = generate(engine, client, item.image, item.prompt, config)
        return result.tokens, result.text, result.rounds, result.stats

    return run


def _measured(
    engine: TimedEngine,
    meter: EnergyMeter,
    generate_one: Generate,
    item: ProfileItem,
    index: int,
    run: int,
    counter: TimedByteCounter | None,
    radio: str,
) -> GenerationRecord:
    rss_before = rss_kib()
    meter.start()
    started = time.perf_counter()
    try:
        tokens, text, rounds, stats = generate_one(item)
    finally:
        stopped = time.perf_counter()
        reading = meter.stop()
    prefills, steps = engine.recorder.take()
    last = engine.last_sequence
    record = GenerationRecord(
        index, run, tokens, text, stopped - started, prefills, steps, reading, rss_before, rss_kib(),
        last.kv_bytes() if last is not None else None, rounds, stats,
    )  # fmt: skip
    if counter is not None and radio != "none":
        record.radio = radio_for_window(counter, radio, started, stopped)
    return record


def _stage_windows(
    engine: Any, item: ProfileItem, meter: EnergyMeter, config: ProfileConfig, advance: Any
) -> dict[str, StageWindow]:
    seconds = window_seconds(meter, config.stage_window_s)
    image = decode_rgb(item.image) if engine.accepts_images else None
    reduction = config.generation.reduction
    windows = {}
    windows["idle"] = measure_idle(meter, seconds)
    advance()
    windows["prefill"] = measure_prefill(meter, engine, image, item.prompt, reduction, seconds)
    advance()
    steps = config.generation.max_new_tokens
    windows["step"] = measure_steps(meter, engine, image, item.prompt, reduction, seconds, steps)
    advance()
    return windows


__all__ = ["GenerationRecord", "ProfileConfig", "ProfileItem", "ProfileRun", "profile_meter", "run_profile"]
