"""The device loop: open a session on the edge, draft, send, apply verdicts, until EOS or max_new_tokens.

The target decides every committed token: greedy and vanilla/dssd-bonus verdicts come from the edge; a dssd
rejection and compact sampling are completed here with the spec math and reported in the next round's ``commit``.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from covspec.errors import EdgeError, EdgeUnavailableError, GenerationInterrupted
from covspec.protocol import (
    DEVICE_RNG_STREAM,
    RoundRequest,
    SessionSpec,
    Verdict,
    VerifyMode,
    round_rng,
    session_rng,
)
from covspec.protocol.modes import mode_rules, resolve_verify_mode
from covspec.reduce import TokenReduction
from covspec.runtime_device.client import EdgeClient, EdgeConnection
from covspec.runtime_device.drafter import Drafter
from covspec.runtime_device.engines.base import DrafterEngine
from covspec.runtime_device.pairing import check_pair
from covspec.runtime_device.upload import Upload, decode_rgb, prepare_upload
from covspec.spec import SamplingParams, SpecStats
from covspec.spec.cost_model import EnergyInputs, Objective
from covspec.spec.policy import CostConfig, DraftPolicy, PolicyKind, RoundObservation, WarmStart, make_policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationConfig:
    """One generation's settings; `covspec run` flags map one to one onto these fields.

    ``draft_len`` is K for the ``fixed`` policy and the largest K for the adaptive ones (``margin`` stops a block
    early; ``cost`` chooses each round's K, or a burst of up to ``max_burst`` target tokens, by ``objective``:
    tokens/s, or tokens per joule of the device from ``energy``). ``warm``: a calibration's estimates
    (`covspec pair`), so the cost policy plans from the first round.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    draft_len: int = 4
    verify_mode: VerifyMode = VerifyMode.COMPACT
    policy: PolicyKind = PolicyKind.COST
    max_burst: int = CostConfig().max_burst
    objective: Objective = CostConfig().objective
    energy: EnergyInputs | None = None
    warm: WarmStart | None = None
    reduction: TokenReduction | None = None  # the visual tokens the drafter reads (the target reads all)
    reduce_target: bool = False  # lossy: the target reads only the tokens ``reduction`` keeps, too
    upload_resize: bool = True  # upload the image the target's processor works on (exact), when the edge says how
    upload_quality: int | None = None  # lossy: upload the image as JPEG at this quality (1..100)

    @property
    def target_reduction(self) -> tuple[str, float] | None:
        """What the session asks the edge for when the target reduces as well (``SessionSpec.target_reduction``)."""
        if not self.reduce_target or self.reduction is None:
            return None
        budget = self.reduction.budget
        return self.reduction.reducer, float(budget.count if budget.count is not None else budget.ratio or 1.0)

    @property
    def params(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_k, self.top_p, self.seed)

    def make_policy(self) -> DraftPolicy:
        cost = CostConfig(max_burst=self.max_burst, objective=self.objective, energy=self.energy)
        return make_policy(self.policy, draft_len=self.draft_len, cost=cost, warm=self.warm)

    def upload(self, image_bytes: bytes, info: dict[str, Any]) -> Upload:
        """What goes up for ``image_bytes`` to the edge whose ``/v1/info`` is ``info`` (``runtime_device.upload``)."""
        processor = info.get("model", {}).get("image_processor")
        return prepare_upload(image_bytes, processor, resize=self.upload_resize, quality=self.upload_quality)


@dataclass
class GenerationResult:
    text: str
    tokens: list[int]
    stats: dict[str, Any] = field(default_factory=dict)
    rounds: list[RoundObservation] = field(default_factory=list)  # what each round cost and gave (benchmarks)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "tokens": list(self.tokens), "stats": dict(self.stats)}


def generate(
    engine: DrafterEngine,
    client: EdgeClient,
    image_bytes: bytes,
    prompt: str,
    config: GenerationConfig,
    policy: DraftPolicy | None = None,
) -> GenerationResult:
    """One lossless generation over the link; raises ``EdgeError``/``EdgeUnavailableError`` when it cannot finish.
    ``policy``: a drafting policy object to use instead of the one ``config.policy`` names."""
    params = config.params
    params.validate()
    if config.draft_len < 0 or config.max_burst < 0:
        raise ValueError("need draft_len >= 0 and max_burst >= 0")
    counter, connection = client.counter, client.connection()
    setup_before = (counter.sent["setup"], counter.received["setup"])
    rounds_before = (counter.sent["rounds"], counter.received["rounds"])
    reconnects_before, admission_waits_before = connection.reconnects, connection.admission_waits

    started = time.perf_counter()
    info = connection.hello()  # on a new connection, its hello is this generation's cost
    vocab_size = check_pair(engine, info, client)
    upload = config.upload(image_bytes, info)  # the target's processor input, or the original
    mode = resolve_verify_mode(config.verify_mode)
    spec = SessionSpec(
        prompt, config.temperature, config.top_k, config.top_p, config.seed, config.max_new_tokens, mode,
        request_id=uuid.uuid4().hex,  # an open sent again after a lost answer finds the session it made
        target_reduction=config.target_reduction,
    )  # fmt: skip
    policy = policy if policy is not None else _policy_for(connection, config, engine.fingerprint.name)
    # The drafter's prefill runs while the edge prefills the target: setup costs the slower of the two, not both. The
    # first round goes up behind the open frame; a burst does not even wait for the drafter's prefill.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="covspec-drafter-prefill")
    prefilled: list[float] = []
    try:
        # the open goes first: on a device with one core the prefill thread would hold it and delay the edge's
        # prefill, the longer of the two (its answer comes with the first verdict)
        connection.start_generation(spec, upload.data)
        image = upload.image if upload.image is not None else image_bytes  # the drafter reads the original
        drafter_prefill = pool.submit(_start_drafter, engine, image, prompt, config.reduction)
        drafter_prefill.add_done_callback(lambda _: prefilled.append(time.perf_counter() - started))
        drafter = Drafter(drafter_prefill, vocab_size, params, session_rng(config.seed, DEVICE_RNG_STREAM))
        edge = info.get("limits", {})
        limits = (int(edge.get("max_draft_tokens", config.draft_len)), int(edge.get("max_burst_tokens", 1)))
        trace: list[RoundObservation] = []
        tokens, stats = decode_rounds(
            drafter, connection, config, set(engine.fingerprint.eos_token_ids), policy, limits, trace
        )
    except BaseException as exc:
        connection.cancel()  # nothing of this generation stays on the edge
        if isinstance(exc, GenerationInterrupted):
            exc.text = engine.decode(exc.tokens)
        raise
    finally:
        pool.shutdown(wait=True)
    elapsed = time.perf_counter() - started
    setup_s = prefilled[0] if prefilled else 0.0
    sent_setup = counter.sent["setup"] - setup_before[0]
    received_setup = counter.received["setup"] - setup_before[1]
    uplink = counter.sent["rounds"] - rounds_before[0]
    downlink = counter.received["rounds"] - rounds_before[1]
    n = len(tokens)
    result_stats = {
        "generated_tokens": n,
        "rounds": stats.exchanges,
        "draft_rounds": stats.rounds,
        "bursts": stats.bursts,
        "burst_tokens": stats.burst_tokens,
        "aal": stats.aal,
        "acceptance_rate": stats.acceptance_rate,
        "tokens_per_s": n / elapsed if elapsed > 0 else 0.0,
        "uplink_bytes": uplink,
        "downlink_bytes": downlink,
        "setup_uplink_bytes": sent_setup,
        "setup_downlink_bytes": received_setup,
        "uplink_bytes_per_token": uplink / n if n else 0.0,
        "downlink_bytes_per_token": downlink / n if n else 0.0,
        "draft_len": config.draft_len,
        "verify_mode": mode.value,
        "policy": config.policy.value,
        "objective": config.objective.value,
        "warm_start": config.warm is not None,
        "device_joules": _device_joules(config.energy, elapsed, trace, uplink, downlink),
        "wall_s": elapsed,
        "setup_s": setup_s,
        "edge_prefill_s": connection.opened.prefill_s if connection.opened is not None else None,
        "reconnects": connection.reconnects - reconnects_before,
        "admission_waits": connection.admission_waits - admission_waits_before,
        "drafter_image_tokens": drafter_prefill.result().image_tokens,
        "reducer": config.reduction.reducer if config.reduction is not None else None,
        "target_reduced": config.target_reduction is not None,
        **upload.stats(),
    }
    return GenerationResult(engine.decode(tokens), tokens, result_stats, trace)


def _device_joules(
    energy: EnergyInputs | None, wall_s: float, rounds: list[RoundObservation], uplink: int, downlink: int
) -> float | None:
    """The energy model applied to the generation as measured (None without energy inputs): a model, not a meter."""
    if energy is None:
        return None
    drafting_s = sum(r.draft_s + r.catchup_s for r in rounds)
    return energy.joules(wall_s, drafting_s, uplink, downlink)


def _policy_for(connection: EdgeConnection, config: GenerationConfig, drafter: str) -> DraftPolicy:
    """One policy per drafter and kind on a connection, kept across its generations: what it learnt of the link, the
    edge's verify time, the drafter and its acceptance carries over (the cost policy forgets old rounds as it goes)."""
    policies = connection.policies
    key = (drafter, config.policy, config.draft_len, config.max_burst, config.objective, config.energy, config.warm)
    if key not in policies:
        policies[key] = config.make_policy()
    return policies[key]


def generate_target_only(
    client: EdgeClient, image_bytes: bytes, prompt: str, config: GenerationConfig
) -> GenerationResult:
    """The baseline: the target alone through the edge's chat completions, over the same link. Its request (image,
    prompt) counts as setup uplink, its response as downlink; nothing goes up per token."""
    import base64

    counter = client.counter
    sent, received = counter.sent["setup"], counter.received["setup"]
    wants_info = config.upload_resize or config.upload_quality is not None
    upload = config.upload(image_bytes, client.edge_info() if wants_info else {})
    uri = "data:image/png;base64," + base64.b64encode(upload.data).decode()
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": prompt}],
            }
        ],
        "max_tokens": config.max_new_tokens,
        "temperature": config.temperature,
        "top_k": config.top_k,
        "top_p": config.top_p,
        "seed": config.seed,
    }
    started = time.perf_counter()
    reply = client.chat_completion(body)
    elapsed = time.perf_counter() - started
    tokens = list(reply.get("covspec", {}).get("token_ids", []))
    uplink, downlink = counter.sent["setup"] - sent, counter.received["setup"] - received
    n = len(tokens)
    stats = {
        "generated_tokens": n,
        "rounds": 0,
        "aal": None,
        "acceptance_rate": None,
        "tokens_per_s": n / elapsed if elapsed > 0 else 0.0,
        "uplink_bytes": 0,
        "downlink_bytes": downlink,
        "setup_uplink_bytes": uplink,
        "setup_downlink_bytes": 0,
        "uplink_bytes_per_token": 0.0,
        "downlink_bytes_per_token": downlink / n if n else 0.0,
        "draft_len": 0,
        "verify_mode": "target_only",
        "wall_s": elapsed,
        "reconnects": 0,
        "admission_waits": 0,
        **upload.stats(),
    }
    return GenerationResult(reply["choices"][0]["message"]["content"], tokens, stats)


class RoundExchange(Protocol):
    """Whatever carries a round to the target and brings its verdict back (the WebSocket, or a direct call).
    ``last_exchange_bytes``: (uplink, downlink) of the last exchange; ``prefill_wait(sent)``: how long a round sent at
    ``sent`` waited for the target's prefill, which is not link time; ``reopen(committed, next_round)``: continue on a
    fresh session after the target lost its own (``unknown_session``)."""

    last_exchange_bytes: tuple[int, int]

    def exchange(self, request: RoundRequest) -> Verdict: ...

    def prefill_wait(self, sent: float) -> float: ...

    def reopen(self, committed: list[int], next_round: int) -> None: ...


def decode_rounds(
    drafter: Drafter,
    channel: RoundExchange,
    config: GenerationConfig,
    eos: set[int],
    policy: DraftPolicy | None = None,
    limits: tuple[int, int] | None = None,
    trace: list[RoundObservation] | None = None,
) -> tuple[list[int], SpecStats]:
    """Rounds until EOS or max_new_tokens: the policy plans each round (draft up to K, or a burst of target tokens),
    the verdict is applied to the tokens and the drafter, and the policy observes what the round cost and gave.
    ``limits``: the edge's (draft tokens, burst tokens) per round; ``trace`` collects each round's observation."""
    params, rules = config.params, mode_rules(config.verify_mode)
    policy = policy if policy is not None else config.make_policy()
    max_draft, max_burst = limits if limits is not None else (config.draft_len, config.max_burst)
    stats, tokens, commit, round_no = SpecStats(), [], None, 0
    observing = 0.0  # the loop's own time after the last round's verdict was applied (observing it)
    while len(tokens) < config.max_new_tokens and not (tokens and tokens[-1] in eos):
        top = time.perf_counter()
        plan = policy.plan(config.max_new_tokens - len(tokens), first_round=round_no == 0)
        plan = replace(plan, length=min(plan.length, max_burst if plan.burst else max_draft))
        round_no += 1
        if config.seed is not None:  # keyed by the round: a generation continued after an edge restart draws alike
            drafter.rng = round_rng(config.seed, DEVICE_RNG_STREAM, round_no)
        if not plan.burst and round_no == 1:  # the drafter's prefill is setup: not this round's drafting or overhead
            waiting_from = time.perf_counter()
            drafter.wait_for_prefill()
            top += time.perf_counter() - waiting_from
        started = time.perf_counter()
        if plan.burst:
            draft, rows, margins = [], None, ()
            request = RoundRequest(round_no, np.zeros(0, dtype=np.int32), commit, burst=plan.length)
        else:
            draft, rows, margins = drafter.draft(plan.length, policy.keep_drafting if policy.uses_margins else None)
            request = rules.request(round_no, draft, rows, commit, params)
        sent = time.perf_counter()
        verdict = _exchange(channel, request, tokens)
        received = time.perf_counter()
        waited = channel.prefill_wait(sent) if round_no == 1 else 0.0
        if plan.burst:
            new, commit, accepted = _burst_tokens(verdict, plan.length), None, 0
            done = new[-1] in eos or len(tokens) + len(new) >= config.max_new_tokens
            shadow = drafter.catch_up(new) if not done else []  # no drafting follows the last burst
        else:
            outcome = rules.resolve(verdict, draft, rows, drafter.rng)
            commit, accepted, shadow = outcome.commit, outcome.accepted, ()
            drafter.commit(draft, outcome.accepted, outcome.token)
            new = draft[: outcome.accepted] + [outcome.token]
        kept = _append_until_eos(tokens, new, eos)
        if plan.burst:
            stats.record_burst(committed=kept)
        else:
            stats.record_round(drafted=len(draft), accepted=accepted, committed=kept)
        up, down = channel.last_exchange_bytes
        applied = time.perf_counter()
        # every per-round cost that is neither drafting nor the edge's compute counts with the exchange: the link,
        # and this loop's own planning, applying and observing (a burst's catch-up is counted apart)
        own = (started - top) + observing + (0.0 if plan.burst else applied - received)
        # drafts past the end of the answer were work for nothing: to the policy they count as not accepted
        observation = RoundObservation(
                burst=plan.burst, drafted=len(draft), accepted=min(accepted, kept - 1), committed=kept,
                draft_s=sent - started, verify_s=verdict.verify_s or 0.0, exchange_s=received - sent - waited + own,
                uplink_bytes=up, downlink_bytes=down, margins=tuple(margins), shadow_matches=tuple(shadow),
                catchup_s=applied - received if plan.burst else 0.0, prefill_wait_s=waited if round_no == 1 else None,
        )  # fmt: skip
        policy.observe(observation)
        if trace is not None:
            trace.append(observation)
        observing = time.perf_counter() - applied
    return tokens, stats


def _exchange(channel: RoundExchange, request: RoundRequest, committed: list[int]) -> Verdict:
    """The round's verdict; a session the edge lost is continued on a fresh one after the ``committed`` tokens
    (which hold the outcome a commit field would report, so the resent round carries none). A round that cannot be
    verified ends the generation with what was committed."""
    try:
        try:
            return channel.exchange(request)
        except EdgeError as exc:
            if exc.code != "unknown_session":
                raise
        channel.reopen(committed, request.round)
        return channel.exchange(replace(request, commit=None))
    except (EdgeError, EdgeUnavailableError) as exc:
        raise GenerationInterrupted(
            f"stopped after {len(committed)} tokens: {exc.message}", code=exc.code, tokens=list(committed)
        ) from exc


def _append_until_eos(tokens: list[int], new: list[int], eos: set[int]) -> int:
    kept = 0
    for token in new:
        tokens.append(token)
        kept += 1
        if token in eos:
            break
    return kept


def _burst_tokens(verdict: Verdict, asked: int) -> list[int]:
    if verdict.burst_tokens is None or not 0 < len(verdict.burst_tokens) <= asked:
        raise EdgeError(
            f"verdict of burst round {verdict.round} does not carry 1..{asked} tokens", code="malformed_message"
        )
    return [int(t) for t in verdict.burst_tokens]


def _start_drafter(engine: DrafterEngine, image: Any, prompt: str, reduction: TokenReduction | None) -> Any:
    """The drafter's prefill, image decoding included (``image``: bytes, or an image decoded already), off the path
    of the open frame."""
    if not engine.accepts_images:
        return engine.start(None, prompt, reduction)
    return engine.start(decode_rgb(image) if isinstance(image, bytes) else image, prompt, reduction)
