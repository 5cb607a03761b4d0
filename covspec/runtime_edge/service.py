"""EdgeService: what a replica wraps. The target, the sessions, the held images, the metrics and the scheduler (the
model thread), with the two operations every transport needs: open a session, verify a round. Free of HTTP and
WebSocket."""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from PIL import Image

from covspec.errors import LimitError, ProtocolError
from covspec.models.base import LoadedModel, ModelSequence, PromptStart
from covspec.models.prompts import vlm_inputs
from covspec.protocol import PROTOCOL_VERSION, RoundRequest, SessionSpec, Verdict, VerifyMode
from covspec.protocol.errors import shown
from covspec.protocol.modes import resolve_verify_mode
from covspec.reduce import Budget, TokenReduction
from covspec.runtime_edge.image_cache import DeviceImageCache
from covspec.runtime_edge.images import decode_image
from covspec.runtime_edge.metrics import EdgeMetrics
from covspec.runtime_edge.scheduler import BatchRecord, Scheduler
from covspec.runtime_edge.sessions import EdgeSession, SessionStore
from covspec.runtime_edge.settings import EdgeSettings
from covspec.runtime_edge.steps import Forward, Start, Steps
from covspec.runtime_edge.verifier import RoundOutcome, round_steps, start_state

T = TypeVar("T")
log = logging.getLogger(__name__)


def target_reduction(spec: SessionSpec) -> TokenReduction | None:
    """The lossy target reduction a session asked for, or None; an unknown reducer is the request's error."""
    if spec.target_reduction is None:
        return None
    name, keep = spec.target_reduction
    try:
        return TokenReduction(name, Budget.parse(keep))
    except ValueError as exc:
        raise ProtocolError(f"'target_reduction': {exc}", code="invalid_request") from None


FEATURES = [
    "connection",  # one WebSocket per device across generations (/v1/connect): hello, open/opened, rounds
    "connection.image_by_sha256",
    "connection.cancel",
    "rounds.vanilla",
    "rounds.dssd",
    "rounds.compact",
    "rounds.burst",
    "verdict.verify_time",
    "verify_mode.auto",
    "pairing.vocabulary",  # GET /v1/vocabulary: what each token id means, for drafters with other tokenizer files
    "reduce_target",  # a session's lossy target_reduction: the target reads only the visual tokens a reducer keeps
    "upload.image_processor",  # model.image_processor: what a device needs to upload the image already resized
    "batching",  # rounds and completion tokens of many sessions verified in one target forward (info: batching)
    "link.probe",  # POST /v1/link/sink, GET /v1/link/source: the device times the link (covspec pair)
    "sampling",
    "http_sessions",
    "openai.chat_completions",
    "metrics",
]


def caller_key(authorization: str | None) -> str:
    """Who is asking, as far as the edge can tell: a digest of the API key sent (requests ids and held images are
    scoped by it, so one client cannot name another's)."""
    return hashlib.sha256((authorization or "").encode()).hexdigest()[:16]


def describe_image_processor(model: LoadedModel) -> dict[str, Any] | None:
    """``/v1/info`` ``model.image_processor``: the target's image processor as a device needs it to resize an image
    exactly as the edge will (``covspec.runtime_device.upload``): its class and backend, its config, the keyword
    arguments the target's processor calls it with (some processors pass their own, e.g. Pixtral's patch size) and the
    versions of the libraries that compute its pixels. None for a target without one, or one that cannot be described
    in JSON. The keyword arguments are recorded from one real call on a probe image, on a copy of the processor."""
    processor = getattr(model, "processor", None)
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None or not hasattr(image_processor, "to_dict"):
        return None
    try:
        recorder = _CallRecorder(image_processor)
        probe = copy.copy(processor)  # the served processor is never touched
        probe.image_processor = recorder
        vlm_inputs(probe, Image.new("RGB", (32, 24)), "probe", "pt")
        call_kwargs = {k: v for k, v in (recorder.calls[0] if recorder.calls else {}).items() if k != "return_tensors"}
        backend = str(getattr(image_processor, "backend", "pil"))
        packages = ("transformers", "Pillow") + (("torch", "torchvision") if backend == "torchvision" else ())
        description = {
            "class": type(image_processor).__name__,
            "backend": backend,
            "config": image_processor.to_dict(),
            "call_kwargs": call_kwargs,
            "versions": {name: _version(name) for name in packages},
        }
        return json.loads(json.dumps(description))  # JSON-safe, or not published
    except Exception as exc:  # a processor we cannot describe is not published; the device sends original bytes
        log.warning("not publishing the image processor (%s: %s)", type(exc).__name__, exc)
        return None


class _CallRecorder:
    """Stands in for an image processor: records the keyword arguments of each call, then makes the call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(dict(kwargs))
        return self.inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


class EdgeService:
    """Everything a request handler needs: settings, the target, the sessions, the metrics, the scheduler."""

    def __init__(self, settings: EdgeSettings, model: LoadedModel) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.model = model
        self.store = SessionStore(settings.limits)
        self.images = DeviceImageCache(settings.limits.images_per_device, settings.limits.image_cache_bytes)
        self.metrics = EdgeMetrics()
        self.scheduler = Scheduler(settings.batching, self._observe_batch, self._observe_prefills)
        self.image_processor = describe_image_processor(model)  # before serving: the processor is not in use yet

    @property
    def model_name(self) -> str:
        return self.settings.model_name or self.model.name

    async def run_model_steps(self, steps: Steps[T], kind: str, key: str = "", value: float = 1.0) -> T:
        """A job whose forwards are batched with other jobs' (``key``, ``value``: see ``Scheduler.run``)."""
        return await self.scheduler.run(steps, on_done=self._waited(kind), key=key, value=value)

    def _waited(self, kind: str) -> Callable[[int], None]:
        return self.metrics.model_wait_steps.labels(kind).observe

    def _observe_prefills(self, prompts: int, seconds: float) -> None:
        self.metrics.prefill_batch_size.observe(prompts)
        self.metrics.model_busy.labels("prefill").inc(seconds)

    def _observe_batch(self, batch: BatchRecord) -> None:
        m, schedule = self.metrics, batch.schedule.value
        m.batch_rows.labels(schedule).observe(batch.rows)
        m.batch_tokens.observe(batch.tokens)
        m.batch_seconds.observe(batch.seconds)
        m.model_busy.labels("batch").inc(batch.seconds)
        for wait in batch.queue_waits_s:
            m.queue_wait.labels(schedule).observe(wait)

    def info(self) -> dict[str, Any]:
        return {
            "protocol_version": PROTOCOL_VERSION,
            "model": {
                **self.model.fingerprint.to_dict(),
                "name": self.model_name,
                "chat_probe": list(self.model.vocabulary.probe_ids),
                "image_processor": self.image_processor,
                "accepts_images": self.model.accepts_images,
                "image_token_id": self.model.image_token_id,
            },
            "features": FEATURES,
            "verify_modes": [m.value for m in VerifyMode],  # "auto" is answered with the mode it resolves to
            "limits": self.limits.to_dict(),
            "batching": self.settings.batching.to_dict(),
        }

    @functools.cached_property
    def vocabulary_json(self) -> bytes:
        """``GET /v1/vocabulary``, serialised once: megabytes at a real vocabulary, asked for only by drafters whose
        tokenizer files differ from the target's."""
        body = {**self.model.vocabulary.to_dict(), "tokenizer_hash": self.model.fingerprint.tokenizer_hash}
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def check_spec(self, spec: SessionSpec) -> SessionSpec:
        """The server's own limits on a valid request; ``auto`` resolved to the mode it stands for."""
        if spec.max_new_tokens > self.limits.max_new_tokens:
            raise ProtocolError(f"max_new_tokens is limited to {self.limits.max_new_tokens}", code="invalid_request")
        self.check_prompt(spec.prompt)
        resumed = spec.resume_tokens
        if resumed and max(resumed) >= self.model.vocab_size:
            raise ProtocolError(
                f"token id {max(resumed)} is outside the vocabulary [0, {self.model.vocab_size})",
                code="token_out_of_vocab",
            )
        if set(resumed) & set(self.model.eos_token_ids):
            raise ProtocolError(
                "'resume.tokens' hold an end-of-sequence token: that generation ended", code="invalid_request"
            )
        if spec.target_reduction is not None:
            target_reduction(spec)
            if getattr(self.model, "vision", None) is None:
                raise ProtocolError(
                    f"this target ({self.model.family}) has no vision graph, so it cannot reduce its visual tokens",
                    code="invalid_request",
                )
        return replace(spec, verify_mode=resolve_verify_mode(spec.verify_mode))

    def check_prompt(self, prompt: str) -> None:
        """What the tokenizer and processor would refuse, refused first: too many characters (before any
        tokenization), text that is not Unicode scalar values, the text of special tokens and image placeholders.
        The token count is checked by the model between rendering and prefill."""
        if len(prompt) > self.limits.max_prompt_chars:
            raise LimitError(
                f"the prompt has {len(prompt)} characters; at most {self.limits.max_prompt_chars}",
                code="prompt_too_long",
            )
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ProtocolError(
                f"the prompt is not valid Unicode (a lone surrogate at character {exc.start})", code="invalid_request"
            ) from None
        reserved = [text for text in self.model.reserved_texts if text in prompt]
        if reserved:
            raise ProtocolError(
                f"the prompt contains the special token {shown(min(reserved))}: special tokens and image "
                "placeholders cannot be typed as text",
                code="invalid_request",
            )

    async def open_session(
        self, spec: SessionSpec, image_bytes: bytes | None, caller: str = "", owner: object | None = None
    ) -> EdgeSession:
        """Check, prefill and register a session (``spec`` already through :meth:`check_spec`), served by
        ``owner``. A request id ``caller`` already opened a live session with answers with that session (a device
        that retries after a lost answer must not leave an orphan holding a slot and its KV reservation)."""
        request_key = f"{caller}:{spec.request_id}" if spec.request_id is not None else None
        if request_key is not None and (existing := self.store.find_request(request_key)) is not None:
            existing.owner = owner
            return existing
        model = self.model
        if image_bytes is None and model.accepts_images:
            raise ProtocolError("this target is a VLM: a session needs an image", code="invalid_request")
        image = None
        if image_bytes is not None:  # off the event loop (a large PNG takes a while) and off the model thread
            image = await asyncio.to_thread(decode_image, image_bytes, self.limits)
        self.store.begin_admission()
        try:
            started = time.perf_counter()
            sequence = await self.start_sequence(image, spec.prompt, spec.resume_tokens, target_reduction(spec))
            prefill_s = time.perf_counter() - started
            self.metrics.prefill_latency.observe(prefill_s)
            if spec.keep_set is not None and spec.keep_set and spec.keep_set[-1] >= sequence.image_tokens:
                raise ProtocolError(
                    f"keep_set index {spec.keep_set[-1]} is past the target's {sequence.image_tokens} image tokens",
                    code="invalid_request",
                )
            positions = sequence.prompt_length + spec.max_new_tokens + self.limits.max_draft_tokens + 1
            state = start_state(spec, sequence, frozenset(model.eos_token_ids))
            session = self.store.add(state, positions * model.kv_bytes_per_token(), request_key)
            session.prefill_s, session.owner = prefill_s, owner
        finally:
            self.store.end_admission()
        self.metrics.sessions_created.inc()
        self.update_gauges()
        return session

    async def start_sequence(
        self,
        image: Any | None,
        prompt: str,
        continued: Sequence[int] = (),
        reduction: TokenReduction | None = None,
    ) -> ModelSequence:
        """Render and prefill on the model thread; a prompt past ``max_prompt_tokens`` is refused before its
        prefill. ``continued``: tokens a lost session had committed, all but the newest fed after the prompt (the
        newest is the state's pending token). ``reduction``: the lossy target reduction a session asked for."""
        select = reduction.select if reduction is not None else None
        request = PromptStart(image, prompt, self.limits.max_prompt_tokens, select)

        def start() -> Steps[ModelSequence]:
            sequence = yield Start(self.model, request)  # prefilled with other waiting prompts where the model can
            if len(continued) > 1:
                yield Forward(sequence, continued[:-1])
            return sequence

        return await self.run_model_steps(start(), "prefill")

    def attach(self, session_id: str, owner: object) -> EdgeSession:
        """The session, now served by ``owner`` (a reconnected device resuming it); its former connection is
        refused its next round with ``session_moved``."""
        session = self.store.get(session_id)
        session.owner = owner
        return session

    async def verify_round(self, session: EdgeSession, request: RoundRequest, owner: object | None = None) -> Verdict:
        """Run one round on the model thread, under the session's lock; count it."""
        if session.owner is not owner:
            raise ProtocolError("another connection resumed this session", code="session_moved")
        async with session.lock:
            self.store.get(session.id)  # raises if deleted or expired meanwhile; refreshes the TTL
            kind = "burst" if request.burst else "round"
            steps = round_steps(session.state, request, time.perf_counter())
            verdict, outcome = await self.run_model_steps(steps, kind, session.id, session.expected_tokens(request))
            session.last_used = time.monotonic()
        if outcome is not None:
            self._count_round(session, outcome)
        return verdict

    def _count_round(self, session: EdgeSession, outcome: RoundOutcome) -> None:
        m, mode = self.metrics, session.state.spec.verify_mode.value
        if outcome.burst:
            m.bursts.inc()
        else:
            m.rounds.labels(mode).inc()
        m.draft_tokens.inc(outcome.drafted)
        m.committed_tokens.inc(outcome.committed)
        m.verify_latency.observe(outcome.verify_seconds)
        decided = [(outcome.drafted, outcome.accepted)] if outcome.accepted is not None else []
        if outcome.settled is not None:  # the previous round, which the device decided
            drafted, accepted, committed = outcome.settled
            m.committed_tokens.inc(committed)
            decided.append((drafted, accepted))
        for drafted, accepted in decided:
            m.accepted_tokens.inc(accepted)
            m.accepted_per_round.labels(mode).observe(accepted)
            session.observe_acceptance(drafted, accepted)

    def update_gauges(self) -> None:
        self.metrics.sessions_active.set(len(self.store))
        self.metrics.kv_reserved.set(self.store.kv_reserved)

    def close(self) -> None:
        self.scheduler.close()
