"""`covspec pair`'s measurements and its recommendation: the link (round trip, each direction's throughput), the
drafter's step by context length, the edge's verify line v(K) = base + slope*K and the per-position acceptance from
real calibration rounds, then the draft length the cost model rates best on each link condition
(:func:`covspec.spec.cost_model.best_plan`) with its expected speedup over the target alone through that link.
With an energy meter, also the device's watts while it idles and while it drafts (the cost model's
:class:`~covspec.spec.cost_model.EnergyInputs`, for `covspec run --objective energy|balanced`).

The fitting functions are pure (rounds in, numbers out) so tests check them on constructed rounds; ``measure_link``,
``drafter_steps`` and ``calibrate`` do the real work against an engine and an edge.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from covspec.errors import EdgeError
from covspec.link.presets import LINK_PRESETS, LinkProfile
from covspec.profile.energy import EnergyMeter
from covspec.profile.energy.objective import measured_energy_inputs, radio_terms
from covspec.profile.run import profile_meter
from covspec.profile.stage_energy import measure_idle, measure_steps, window_seconds
from covspec.protocol import VerifyMode
from covspec.protocol.modes import resolve_verify_mode
from covspec.runtime_device.client import EdgeClient, LinkProbe
from covspec.runtime_device.engines.base import DrafterEngine
from covspec.runtime_device.loop import GenerationConfig, GenerationResult, generate
from covspec.runtime_device.pairing import check_pair_fully
from covspec.runtime_device.pairing_file import MEASURED, Identity, LinkChoice, Pairing
from covspec.runtime_device.upload import decode_rgb
from covspec.spec.cost_model import CostInputs, EnergyInputs, Linear, best_plan
from covspec.spec.estimators import PositionAcceptance
from covspec.spec.policy import CostConfig, PolicyKind, RoundObservation, WarmStart


@dataclass(frozen=True)
class PairConfig:
    """What `covspec pair` runs; its flags read their defaults here."""

    calibration: int = 12  # calibration generations (after one untimed warm-up)
    draft_lens: tuple[int, ...] = (2, 4, 8)  # K of the fixed policy, in turn: several K fit the verify line
    max_new_tokens: int = 32
    pings: int = 15  # round trips timed for the link's median
    probe_start_bytes: int = 64 << 10  # first throughput probe; grown 4x until a transfer takes probe_min_s
    probe_min_s: float = 0.2
    probe_repeats: int = 3  # transfers timed at the chosen size (median)
    drafter_steps: int = 48  # single-token drafter steps timed after a prefill
    context_buckets: int = 4  # the drafter's step time is reported in this many context-length bands
    energy: str | None = None  # a meter kind (covspec.profile.energy.MeterKind): measure the device's watts
    power_profile: str | None = None  # the estimate meter's power profile (its default when None)
    radio: str | None = None  # the device's radio, added by its model (a SoC meter does not see the modem)
    energy_window_s: float = 1.0  # the least each energy window (idle, drafting) lasts


# ---- the link ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkMeasurement:
    rtt_s: float  # median of the timed round trips
    rtt_p10_s: float
    rtt_p90_s: float
    uplink_bytes_per_s: float
    downlink_bytes_per_s: float
    uplink_probe_bytes: int  # the transfer size the throughput was timed at
    downlink_probe_bytes: int
    through: str  # MEASURED (direct) or the emulated preset it ran through

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def throughput(n_bytes: int, seconds: Sequence[float], rtt_s: float) -> float:
    """Bytes per second of a transfer of ``n_bytes`` timed ``seconds`` (median) on a warm connection whose request and
    response cost ``rtt_s``: the transfer's own time is what exceeds the round trip (at least a tenth of it, so a
    transfer lost in the noise reads as very fast, not as infinite)."""
    elapsed = statistics.median(seconds)
    return n_bytes / max(elapsed - rtt_s, 0.1 * max(elapsed, 1e-9))


def measure_link(client: EdgeClient, config: PairConfig, limit: int, through: str = MEASURED) -> LinkMeasurement:
    """Round trips on ``/healthz``, then uploads and downloads of random bytes on one kept-alive connection, each
    grown until one takes ``probe_min_s`` beyond the round trip (or reaches ``limit``, the edge's cap)."""
    with client.link_probe() as probe:
        probe.round_trip()  # the connection's first request warms it; not counted
        rtts = sorted(probe.round_trip() for _ in range(config.pings))
        rtt = statistics.median(rtts)
        upload = _grow(lambda n: probe.upload(os.urandom(n)), config, limit, rtt)
        download = _grow(probe.download, config, limit, rtt)
    quantiles = np.quantile(rtts, [0.1, 0.9])
    return LinkMeasurement(
        rtt_s=rtt,
        rtt_p10_s=float(quantiles[0]),
        rtt_p90_s=float(quantiles[1]),
        uplink_bytes_per_s=throughput(upload[0], upload[1], rtt),
        downlink_bytes_per_s=throughput(download[0], download[1], rtt),
        uplink_probe_bytes=upload[0],
        downlink_probe_bytes=download[0],
        through=through,
    )


def _grow(transfer: Callable[[int], float], config: PairConfig, limit: int, rtt: float) -> tuple[int, list[float]]:
    size = min(config.probe_start_bytes, limit)
    while True:
        first = transfer(size)
        if first - rtt >= config.probe_min_s or size >= limit:
            break
        size = min(size * 4, limit)
    return size, [first] + [transfer(size) for _ in range(config.probe_repeats - 1)]


# ---- the drafter ---------------------------------------------------------------------------------------------------


def drafter_steps(engine: DrafterEngine, image: Any, prompt: str, config: PairConfig) -> dict[str, Any]:
    """The drafter's single-token step after a prefill of ``image`` and ``prompt``, timed ``drafter_steps`` times and
    reported in ``context_buckets`` bands of context length (median seconds of each)."""
    sequence = engine.start(image if engine.accepts_images else None, prompt)
    token = int(np.argmax(sequence.prefill_logits))
    sequence.extend([token])  # the first step after a prefill warms the engine's buffers; not counted
    timed: list[tuple[int, float]] = []
    for _ in range(config.drafter_steps):
        context = sequence.length
        started = time.perf_counter()
        logits = sequence.extend([token])
        timed.append((context, time.perf_counter() - started))
        token = int(np.argmax(logits[-1]))
    bands = np.array_split(np.arange(len(timed)), max(1, min(config.context_buckets, len(timed))))
    by_context = [
        {
            "context_from": timed[int(band[0])][0],
            "context_to": timed[int(band[-1])][0],
            "step_s": statistics.median(timed[int(i)][1] for i in band),
        }
        for band in bands
        if band.size
    ]
    return {
        "prompt_length": sequence.prompt_length,
        "step_s": statistics.median(s for _, s in timed),
        "by_context": by_context,
    }


def measure_watts(
    meter: EnergyMeter, engine: DrafterEngine, image: Any, prompt: str, config: PairConfig
) -> tuple[EnergyInputs, dict[str, Any]]:
    """The device's mean watts while it sleeps (as it does waiting on the edge) and while its drafter steps, each in
    its own meter window, as the cost model's EnergyInputs with ``config.radio``'s model added; and the readings."""
    seconds = window_seconds(meter, config.energy_window_s)
    idle = measure_idle(meter, seconds)
    drafting = measure_steps(meter, engine, image if engine.accepts_images else None, prompt, None, seconds, 32)
    idle_w, drafting_w = idle.reading.mean_watts, drafting.reading.mean_watts
    if idle_w is None or drafting_w is None:
        raise EdgeError(f"the {meter.name} meter gave no joules; pick another with --energy", code="bad_config")
    inputs = measured_energy_inputs(idle_w, drafting_w, config.radio)
    return inputs, {
        "meter": meter.name,
        "estimated": idle.reading.estimated or drafting.reading.estimated,
        "idle": idle.to_dict(),
        "drafting": drafting.to_dict(),
        "radio": config.radio,
        "radio_modelled": config.radio is not None,
    }


# ---- calibration and its fits --------------------------------------------------------------------------------------


def calibrate(
    engine: DrafterEngine,
    client: EdgeClient,
    items: Sequence[tuple[bytes, str]],
    config: PairConfig,
    max_draft_tokens: int,
    on_generation: Callable[[int, GenerationResult], None] | None = None,
) -> list[GenerationResult]:
    """``config.calibration`` greedy generations with the fixed policy, K cycling through ``config.draft_lens``
    (capped by the edge's ``max_draft_tokens``), item after item, after one untimed warm-up generation."""
    if not items:
        raise ValueError("calibration needs at least one (image, prompt) item")
    ks = calibration_draft_lens(config.draft_lens, max_draft_tokens)
    mode = resolve_verify_mode(VerifyMode.AUTO)
    results = []
    for index in range(-1, config.calibration):
        image, prompt = items[max(index, 0) % len(items)]
        k = ks[max(index, 0) % len(ks)]
        run = GenerationConfig(max_new_tokens=config.max_new_tokens, draft_len=k, verify_mode=mode,
                               policy=PolicyKind.FIXED)  # fmt: skip
        result = generate(engine, client, image, prompt, run)
        if index >= 0:
            results.append(result)
            if on_generation is not None:
                on_generation(index, result)
    return results


def calibration_draft_lens(draft_lens: Sequence[int], max_draft_tokens: int) -> list[int]:
    ks = sorted({min(int(k), int(max_draft_tokens)) for k in draft_lens if k >= 1})
    if not ks:
        raise ValueError(f"no usable calibration draft length in {list(draft_lens)} (the edge allows up to "
                         f"{max_draft_tokens})")  # fmt: skip
    return ks


def draft_rounds(rounds: Sequence[RoundObservation]) -> list[RoundObservation]:
    return [r for r in rounds if not r.burst and r.drafted > 0]


def fit_verify(rounds: Sequence[RoundObservation]) -> Linear:
    """v(K) = base + slope*K by least squares over draft rounds' (K, verify_s); one K seen gives a flat line at its
    mean. Both coefficients are kept >= 0 (a negative slope is noise: the line is then flat)."""
    points = [(r.drafted, r.verify_s) for r in draft_rounds(rounds)]
    if not points:
        raise ValueError("no draft round to fit the verify time on")
    ks = np.array([k for k, _ in points], dtype=np.float64)
    seconds = np.array([s for _, s in points], dtype=np.float64)
    if np.unique(ks).size < 2:
        return Linear(float(seconds.mean()), 0.0)
    slope, base = np.polyfit(ks, seconds, 1)
    if slope < 0:
        return Linear(float(seconds.mean()), 0.0)
    if base < 0:  # through the origin instead
        return Linear(0.0, float((ks @ seconds) / (ks @ ks)))
    return Linear(float(base), float(slope))


def fit_bytes(rounds: Sequence[RoundObservation], direction: str) -> Linear:
    """Bytes of a draft round in K (``direction`` "up" or "down"), least squares; flat when one K was seen."""
    points = [(r.drafted, r.uplink_bytes if direction == "up" else r.downlink_bytes) for r in draft_rounds(rounds)]
    if not points:
        return Linear()
    ks = np.array([k for k, _ in points], dtype=np.float64)
    sizes = np.array([b for _, b in points], dtype=np.float64)
    if np.unique(ks).size < 2:
        return Linear(float(sizes.mean()), 0.0)
    slope, base = np.polyfit(ks, sizes, 1)
    return Linear(max(float(base), 0.0), max(float(slope), 0.0))


@dataclass(frozen=True)
class Acceptance:
    accept_probs: tuple[float, ...]  # a_i, positions 1..max K (censored counts, no prior)
    trials: tuple[float, ...]  # positions' trials (how much evidence each a_i has)
    aal_by_k: dict[int, float]  # mean committed tokens per draft round, by the K drafted
    rounds: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "accept_probs": list(self.accept_probs),
            "trials": list(self.trials),
            "aal_by_k": {str(k): v for k, v in self.aal_by_k.items()},
            "rounds": self.rounds,
        }


def acceptance_from_rounds(rounds: Sequence[RoundObservation], max_draft_len: int) -> Acceptance:
    """Per-position acceptance from draft rounds, censored after each block's first rejection
    (:class:`covspec.spec.estimators.PositionAcceptance` with its defaults), and the AAL at each K drafted."""
    estimate = PositionAcceptance(max_draft_len)
    by_k: dict[int, list[int]] = {}
    drafted = draft_rounds(rounds)
    for r in drafted:
        estimate.record(r.drafted, r.accepted)
        by_k.setdefault(r.drafted, []).append(r.committed)
    return Acceptance(
        accept_probs=tuple(float(a) for a in estimate.probabilities()),
        trials=tuple(float(t) for t in estimate.trials),
        aal_by_k={k: float(np.mean(v)) for k, v in sorted(by_k.items())},
        rounds=len(drafted),
    )


def round_overhead_s(rounds: Sequence[RoundObservation]) -> float:
    """The median seconds a draft round spent beyond the edge's verify time: the link's round trip with the loop's
    own per-round work, what the cost policy calls the round trip."""
    spans = [max(r.exchange_s - r.verify_s, 0.0) for r in draft_rounds(rounds)]
    if not spans:
        raise ValueError("no draft round to time the round trip on")
    return float(statistics.median(spans))


# ---- the recommendation --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairNumbers:
    """What the recommendation is computed from (all measured)."""

    accept_probs: tuple[float, ...]
    draft_step_s: float
    verify: Linear
    round_overhead_s: float  # on the measured link
    uplink_bytes_per_s: float
    downlink_bytes_per_s: float
    draft_uplink_bytes: Linear
    draft_downlink_bytes: Linear
    answer_tokens: float  # mean tokens per calibration answer: the target-only baseline decodes this many


def link_conditions(
    numbers: PairNumbers, through: LinkProfile | None = None, presets: dict[str, LinkProfile] = LINK_PRESETS
) -> dict[str, tuple[float, float, float]]:
    """(rtt_s, up B/s, down B/s) per link condition: the measured link (emulated ``through`` a preset, or direct), and
    each preset in its place: the measured per-round time less the emulated round trip it ran through, plus the
    preset's; the preset's bandwidth where it shapes one (capped by the measured one when measured directly)."""
    out = {MEASURED: (numbers.round_overhead_s, numbers.uplink_bytes_per_s, numbers.downlink_bytes_per_s)}
    base = max(numbers.round_overhead_s - (through.rtt_s if through is not None else 0.0), 0.0)
    for name, profile in presets.items():
        rates = []
        for bps, measured in ((profile.uplink_bps, numbers.uplink_bytes_per_s),
                              (profile.downlink_bps, numbers.downlink_bytes_per_s)):  # fmt: skip
            if bps is None:  # unshaped: the measured rate (a floor, when measured through a shaped preset)
                rates.append(measured)
            else:
                rates.append(bps / 8 if through is not None else min(bps / 8, measured))
        out[name] = (base + profile.rtt_s, rates[0], rates[1])
    return out


def cost_inputs(numbers: PairNumbers, rtt_s: float, up: float, down: float) -> CostInputs:
    """The cost model's inputs on one link condition; the target's own step is v(0) (one position verified)."""
    return CostInputs(
        accept_probs=np.asarray(numbers.accept_probs),
        draft_step_s=numbers.draft_step_s,
        verify_s=numbers.verify,
        target_step_s=float(numbers.verify(0)),
        rtt_s=rtt_s,
        uplink_bytes_per_s=up,
        downlink_bytes_per_s=down,
        draft_uplink_bytes=numbers.draft_uplink_bytes,
        draft_downlink_bytes=numbers.draft_downlink_bytes,
        burst_downlink_bytes=Linear(numbers.draft_downlink_bytes.base, CostConfig().burst_token_bytes),
    )


def recommend_link(numbers: PairNumbers, rtt_s: float, up: float, down: float) -> LinkChoice:
    """The best K >= 1 by the cost model on this link, its expected tokens/s, and its speedup over the target alone
    decoding the mean answer through the same link (one request: its tokens, one round trip, its bytes)."""
    inputs = cost_inputs(numbers, rtt_s, up, down)
    top = len(numbers.accept_probs)
    plan, rate = best_plan(inputs, remaining=top + 1, max_draft_len=top, min_draft_len=1)
    answer = max(numbers.answer_tokens, 1.0)
    target_only = answer / float(inputs.burst_round_s(answer, catch_up=False))
    speedup = rate / target_only
    return LinkChoice(
        rtt_s=rtt_s,
        uplink_bytes_per_s=up,
        downlink_bytes_per_s=down,
        draft_len=plan.length,
        expected_tokens_per_s=rate,
        target_only_tokens_per_s=target_only,
        expected_speedup=speedup,
        drafting_pays=speedup > 1.0 + CostConfig().draft_margin,
    )


def recommend(
    numbers: PairNumbers, through: LinkProfile | None = None, presets: dict[str, LinkProfile] = LINK_PRESETS
) -> dict[str, LinkChoice]:
    """:func:`recommend_link` on every link condition of :func:`link_conditions`."""
    return {name: recommend_link(numbers, *cond) for name, cond in link_conditions(numbers, through, presets).items()}


def pair_numbers(results: Sequence[GenerationResult], link: LinkMeasurement, max_draft_len: int) -> PairNumbers:
    """The calibration's rounds reduced to the recommendation's inputs."""
    rounds = [r for result in results for r in result.rounds]
    drafted = draft_rounds(rounds)
    if not drafted:
        raise ValueError("the calibration produced no draft round (every answer ended at once)")
    acceptance = acceptance_from_rounds(rounds, max_draft_len)
    return PairNumbers(
        accept_probs=acceptance.accept_probs,
        draft_step_s=sum(r.draft_s for r in drafted) / sum(r.drafted for r in drafted),
        verify=fit_verify(rounds),
        round_overhead_s=round_overhead_s(rounds),
        uplink_bytes_per_s=link.uplink_bytes_per_s,
        downlink_bytes_per_s=link.downlink_bytes_per_s,
        draft_uplink_bytes=fit_bytes(rounds, "up"),
        draft_downlink_bytes=fit_bytes(rounds, "down"),
        answer_tokens=float(np.mean([len(result.tokens) for result in results])),
    )


def warm_start(numbers: PairNumbers) -> WarmStart:
    """The cost policy's warm start (:class:`covspec.spec.policy.WarmStart`) on the measured link."""
    return WarmStart(
        accept_probs=numbers.accept_probs,
        draft_step_s=numbers.draft_step_s,
        verify_base_s=numbers.verify.base,
        verify_slope_s=numbers.verify.slope,
        rtt_s=numbers.round_overhead_s,
    )


def measure_pair(
    engine: DrafterEngine,
    client: EdgeClient,
    items: Sequence[tuple[bytes, str]],
    config: PairConfig = PairConfig(),
    *,
    through: LinkProfile | None = None,
    edge_url: str | None = None,
    on_stage: Callable[..., None] | None = None,
) -> Pairing:
    """Everything `covspec pair` does against ``client``'s edge (already behind ``through``'s emulated link, if any):
    the full pair check (``IncompatiblePairError`` names the first difference), the link, the drafter's steps, the
    calibration on ``items`` (image bytes, prompt), and the recommendation. ``on_stage(description, completed,
    total)`` reports progress."""
    stage = on_stage or (lambda *args, **kwargs: None)
    info = client.info()
    checks = check_pair_fully(engine, info, client)
    if LinkProbe.FEATURE not in info.get("features", ()):
        raise EdgeError(
            f"the edge does not offer {LinkProbe.FEATURE} (/v1/link/sink and /v1/link/source): update its covspec",
            code="bad_config",
        )
    meter = None
    if config.energy is not None:  # an unavailable meter or unknown radio fails before any measuring
        meter = profile_meter(config.energy, config.power_profile)
        radio_terms(config.radio)
    limits = info.get("limits", {})
    max_draft = int(limits.get("max_draft_tokens", max(config.draft_lens)))
    stage("measuring the link")
    name = through.name if through is not None else MEASURED
    link = measure_link(client, config, int(limits.get("max_link_probe_bytes", 8 << 20)), name)
    stage("timing the drafter's steps")
    image, prompt = decode_rgb(items[0][0]), items[0][1]  # the first item's, for the steps and the watts
    steps = drafter_steps(engine, image, prompt, config)
    stage("calibrating", 0, config.calibration)
    results = calibrate(engine, client, items, config, max_draft, lambda i, _: stage("calibrating", i + 1,
                                                                                     config.calibration))  # fmt: skip
    ks = calibration_draft_lens(config.draft_lens, max_draft)
    energy, energy_readings = None, None
    if meter is not None:
        stage("measuring the device's watts")
        energy, energy_readings = measure_watts(meter, engine, image, prompt, config)
    numbers = pair_numbers(results, link, max(ks))
    acceptance = acceptance_from_rounds([r for result in results for r in result.rounds], max(ks))
    mode = resolve_verify_mode(VerifyMode.AUTO)
    burst_cap = int(limits.get("max_burst_tokens", CostConfig().max_burst))
    return Pairing(
        drafter=Identity.of(engine.fingerprint),
        target=Identity.from_info(info),
        edge_url=edge_url or f"http://{client.host}:{client.port}{client.base_path}",
        checks=tuple(checks),
        verify_mode=mode,
        policy=PolicyKind.COST,
        max_burst=min(CostConfig().max_burst, burst_cap),
        warm=warm_start(numbers),
        links=recommend(numbers, through),
        measured_link=name,
        energy=energy,
        measurements={
            "link": link.to_dict(),
            "drafter": {"engine": engine.name, **steps, "draft_step_s": numbers.draft_step_s},
            "verify": {"base_s": numbers.verify.base, "slope_s": numbers.verify.slope},
            "acceptance": acceptance.to_dict(),
            "round_overhead_s": numbers.round_overhead_s,
            "round_bytes": {
                "uplink": asdict(numbers.draft_uplink_bytes),
                "downlink": asdict(numbers.draft_downlink_bytes),
            },  # fmt: skip
            "calibration": {
                "generations": len(results),
                "draft_lens": ks,
                "max_new_tokens": config.max_new_tokens,
                "mean_answer_tokens": numbers.answer_tokens,
                "verify_mode": mode.value,
                "policy": PolicyKind.FIXED.value,
            },
            "edge_protocol_version": info.get("protocol_version"),
            "energy": energy_readings,
        },
    )


__all__ = [
    "Acceptance",
    "LinkMeasurement",
    "PairConfig",
    "PairNumbers",
    "acceptance_from_rounds",
    "calibrate",
    "calibration_draft_lens",
    "cost_inputs",
    "draft_rounds",
    "drafter_steps",
    "fit_bytes",
    "fit_verify",
    "link_conditions",
    "measure_link",
    "measure_pair",
    "measure_watts",
    "pair_numbers",
    "recommend",
    "recommend_link",
    "round_overhead_s",
    "throughput",
    "warm_start",
]
