"""The edge verifier as a FastAPI app: session setup over HTTP, rounds over one WebSocket per session.

`create_app` is the factory; the target is loaded in the lifespan (or injected, for tests and embedding), and all
model work runs on one worker thread so the event loop keeps answering health checks and other sessions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.websockets import WebSocketDisconnect

from covspec.errors import CovspecError, LimitError, ProtocolError
from covspec.models.base import LoadedModel
from covspec.protocol import (
    EDGE_RNG_STREAM,
    PROTOCOL_VERSION,
    ErrorFrame,
    SessionSpec,
    VerifyMode,
    decode_round,
    encode_error,
    encode_verdict,
    error_code,
    session_rng,
)
from covspec.runtime_edge.auth import check_bearer
from covspec.runtime_edge.images import decode_data_uri, decode_image
from covspec.runtime_edge.metrics import EdgeMetrics
from covspec.runtime_edge.openai_api import (
    ChatCompletionRequest,
    chunk_body,
    completion_body,
    completion_id,
    split_chat_request,
    usage,
)
from covspec.runtime_edge.sessions import EdgeSession, SessionStore
from covspec.runtime_edge.settings import EdgeSettings
from covspec.runtime_edge.target_only import iter_target_tokens
from covspec.runtime_edge.verifier import TargetState, process_round
from covspec.spec import SamplingParams

log = logging.getLogger(__name__)
T = TypeVar("T")
FEATURES = ["rounds.vanilla", "rounds.dssd", "rounds.compact", "sampling", "openai.chat_completions", "metrics"]


class EdgeService:
    """Everything a request handler needs: settings, the target, the sessions, the metrics, the model thread."""

    def __init__(self, settings: EdgeSettings, model: LoadedModel) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.model = model
        self.store = SessionStore(settings.limits)
        self.metrics = EdgeMetrics()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="covspec-target")

    @property
    def model_name(self) -> str:
        return self.settings.model_name or self.model.name

    async def run_model(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def info(self) -> dict[str, Any]:
        return {
            "protocol_version": PROTOCOL_VERSION,
            "model": {**self.model.fingerprint.to_dict(), "name": self.model_name},
            "features": FEATURES,
            "verify_modes": [m.value for m in VerifyMode],
            "limits": self.limits.to_dict(),
        }

    def update_gauges(self) -> None:
        self.metrics.sessions_active.set(len(self.store))
        self.metrics.kv_reserved.set(self.store.kv_reserved)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def create_app(settings: EdgeSettings, model: LoadedModel | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        target = model
        if target is None:
            from covspec.models import load_model

            log.info("loading target %s", settings.target)
            target = await asyncio.to_thread(load_model, settings.target, dtype=settings.dtype)
        service = EdgeService(settings, target)
        app.state.service = service
        sweeper = asyncio.create_task(_sweep_forever(service))
        try:
            yield
        finally:
            sweeper.cancel()
            service.close()

    app = FastAPI(title="covspec edge", version=str(PROTOCOL_VERSION), lifespan=lifespan)
    app.add_exception_handler(CovspecError, _covspec_error_response)
    app.add_exception_handler(RequestValidationError, _validation_error_response)
    _add_routes(app)
    return app


def _service(request: Request) -> EdgeService:
    return request.app.state.service


def _authorized(request: Request) -> EdgeService:
    service = _service(request)
    check_bearer(service.settings.api_key, request.headers.get("authorization"))
    return service


Service = Annotated[EdgeService, Depends(_authorized)]


def _add_routes(app: FastAPI) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/info")
    async def info(service: Service) -> dict[str, Any]:
        return service.info()

    @app.get("/v1/models")
    async def models(service: Service) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": service.model_name, "object": "model", "owned_by": "covspec"}]}

    @app.get("/metrics")
    async def metrics(service: Service) -> Response:
        service.update_gauges()
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/sessions")
    async def create_session(request: Request, service: Service) -> dict[str, Any]:
        spec, image_bytes = await _read_session_form(request, service)
        return await _open_session(service, spec, image_bytes)

    @app.delete("/v1/sessions/{session_id}")
    async def delete_session(session_id: str, service: Service) -> dict[str, Any]:
        session = service.store.remove(session_id)
        service.update_gauges()
        return {"session_id": session_id, "generated_tokens": len(session.state.generated)}

    @app.websocket("/v1/sessions/{session_id}/rounds")
    async def rounds(websocket: WebSocket, session_id: str) -> None:
        await _serve_rounds(websocket, session_id)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, service: Service) -> Any:
        return await _chat_completion(service, body)


async def _read_session_form(request: Request, service: EdgeService) -> tuple[SessionSpec, bytes]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ProtocolError(
            "POST /v1/sessions takes multipart/form-data: a 'request' JSON field and an 'image' file",
            code="invalid_request",
        )
    async with request.form(max_files=1, max_fields=4) as form:
        raw_spec = form.get("request")
        upload = form.get("image")
        if not isinstance(raw_spec, str):
            raise ProtocolError("the 'request' field (JSON) is missing", code="invalid_request")
        if upload is None or isinstance(upload, str):
            raise ProtocolError("the 'image' file is missing", code="invalid_request")
        image_bytes = await upload.read(service.limits.max_image_bytes + 1)
    try:
        data = json.loads(raw_spec)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"the 'request' field is not JSON: {exc.msg}", code="invalid_request") from None
    spec = SessionSpec.from_dict(data)
    if spec.max_new_tokens > service.limits.max_new_tokens:
        raise ProtocolError(f"max_new_tokens is limited to {service.limits.max_new_tokens}", code="invalid_request")
    if len(spec.prompt) > service.limits.max_prompt_chars:
        raise LimitError(
            f"the prompt has {len(spec.prompt)} characters; at most {service.limits.max_prompt_chars}",
            code="prompt_too_long",
        )
    return spec, image_bytes


async def _open_session(service: EdgeService, spec: SessionSpec, image_bytes: bytes) -> dict[str, Any]:
    image = decode_image(image_bytes, service.limits)
    model = service.model
    service.store.begin_admission()
    try:
        started = time.perf_counter()
        sequence = await service.run_model(model.start, image, spec.prompt)
        service.metrics.prefill_latency.observe(time.perf_counter() - started)
        if sequence.prompt_length > service.limits.max_prompt_tokens:
            raise LimitError(
                f"the rendered prompt has {sequence.prompt_length} tokens; at most {service.limits.max_prompt_tokens}",
                code="prompt_too_long",
            )
        if spec.keep_set is not None and spec.keep_set and spec.keep_set[-1] >= sequence.image_tokens:
            raise ProtocolError(
                f"keep_set index {spec.keep_set[-1]} is past the target's {sequence.image_tokens} image tokens",
                code="invalid_request",
            )
        positions = sequence.prompt_length + spec.max_new_tokens + service.limits.max_draft_tokens + 1
        state = TargetState(spec, sequence, frozenset(model.eos_token_ids), session_rng(spec.seed, EDGE_RNG_STREAM))
        session = service.store.add(state, positions * model.kv_bytes_per_token())
    finally:
        service.store.end_admission()
    service.metrics.sessions_created.inc()
    service.update_gauges()
    return {
        "session_id": session.id,
        "protocol_version": PROTOCOL_VERSION,
        "prompt_tokens": sequence.prompt_length,
        "image_tokens": sequence.image_tokens,
        "vocab_size": model.vocab_size,
        "max_new_tokens": spec.max_new_tokens,
        "verify_mode": spec.verify_mode.value,
        "ttl_s": service.limits.session_ttl_s,
        "keep_set_size": len(spec.keep_set) if spec.keep_set is not None else None,
    }


async def _serve_rounds(websocket: WebSocket, session_id: str) -> None:
    """One WebSocket per session; a bad frame gets an error frame and a close code, the session itself survives."""
    service: EdgeService = websocket.app.state.service
    await websocket.accept()
    try:
        check_bearer(service.settings.api_key, websocket.headers.get("authorization"))
        session = service.store.get(session_id)
    except CovspecError as exc:
        await _close_with_error(websocket, service, exc, 0)
        return
    round_no = 0
    while True:
        try:
            message = await websocket.receive()
        except WebSocketDisconnect:
            return
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        try:
            if data is None:
                raise ProtocolError("round frames are binary msgpack, not text", code="malformed_message")
            service.metrics.wire_bytes.labels("uplink").inc(len(data))
            request = decode_round(
                data, vocab_size=service.model.vocab_size, max_draft_tokens=service.limits.max_draft_tokens
            )
            round_no = request.round
            reply = await _verify_round(service, session, request)
        except CovspecError as exc:
            await _close_with_error(websocket, service, exc, round_no)
            return
        except Exception as exc:  # a bug must not take the server down; this session is dropped
            log.exception("round %s of session %s failed", round_no, session_id)
            service.store.discard(session.id)
            await _close_with_error(websocket, service, CovspecError(f"internal error: {type(exc).__name__}"), round_no)
            return
        service.metrics.wire_bytes.labels("downlink").inc(len(reply))
        try:
            await websocket.send_bytes(reply)
        except (WebSocketDisconnect, RuntimeError):
            return  # the device reconnects and retries the round; the stored verdict answers it


async def _verify_round(service: EdgeService, session: EdgeSession, request: Any) -> bytes:
    async with session.lock:
        service.store.get(session.id)  # raises if deleted or expired meanwhile; refreshes the TTL
        verdict, outcome = await service.run_model(process_round, session.state, request)
        session.last_used = time.monotonic()
    if outcome is not None:
        m = service.metrics
        m.rounds.labels(session.state.spec.verify_mode.value).inc()
        m.draft_tokens.inc(outcome.drafted)
        if outcome.accepted is not None:
            m.accepted_tokens.inc(outcome.accepted)
        m.committed_tokens.inc(outcome.committed)
        m.verify_latency.observe(outcome.verify_seconds)
    return encode_verdict(verdict)


async def _close_with_error(websocket: WebSocket, service: EdgeService, exc: CovspecError, round_no: int) -> None:
    row = error_code(exc.code)
    service.metrics.errors.labels(row.code).inc()
    try:
        await websocket.send_bytes(encode_error(ErrorFrame(round_no, row.code, exc.message)))
        await websocket.close(code=row.ws_close, reason=f"{row.code}: {exc.message}"[:120])
    except (WebSocketDisconnect, RuntimeError):
        pass


async def _chat_completion(service: EdgeService, body: ChatCompletionRequest) -> Any:
    prompt, image_url = split_chat_request(body)
    if image_url is None and service.model.accepts_images:
        raise ProtocolError("this target is a VLM: send one image_url part (a data: URI)", code="invalid_request")
    image = decode_data_uri(image_url, service.limits) if image_url is not None else None
    requested = body.max_completion_tokens or body.max_tokens or 256
    if requested > service.limits.max_new_tokens:
        raise ProtocolError(f"max_tokens is limited to {service.limits.max_new_tokens}", code="invalid_request")
    params = SamplingParams(body.temperature, body.top_k, body.top_p, body.seed)
    try:
        params.validate()
    except ValueError as exc:
        raise ProtocolError(str(exc), code="invalid_request") from None
    model = service.model
    sequence = await service.run_model(model.start, image, prompt)
    eos = frozenset(model.eos_token_ids)
    tokens_iter = iter_target_tokens(sequence, params, requested, eos, np.random.default_rng(body.seed))
    service.metrics.chat_completions.inc()
    cid, name = completion_id(), body.model or service.model_name

    def finish_reason(tokens: list[int]) -> str:
        return "stop" if tokens and tokens[-1] in eos else "length"

    if not body.stream:
        tokens = await service.run_model(list, tokens_iter)
        service.metrics.chat_tokens.inc(len(tokens))
        return completion_body(cid, name, model.decode(tokens), finish_reason(tokens), sequence.prompt_length, tokens)

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    async def events() -> AsyncIterator[str]:
        created = int(time.time())
        tokens: list[int] = []
        sent = ""
        yield _sse(chunk_body(cid, name, created, {"role": "assistant", "content": ""}, None))
        while True:
            token = await service.run_model(next, tokens_iter, None)
            if token is None:
                break
            tokens.append(token)
            text = model.decode(tokens)
            if text.endswith("\ufffd") or not text.startswith(sent):
                continue  # an incomplete multi-byte character: wait for the rest
            if len(text) > len(sent):
                yield _sse(chunk_body(cid, name, created, {"content": text[len(sent) :]}, None))
                sent = text
        text = model.decode(tokens)
        tail = text[len(sent) :] if text.startswith(sent) else ""
        service.metrics.chat_tokens.inc(len(tokens))
        yield _sse(chunk_body(cid, name, created, {"content": tail} if tail else {}, finish_reason(tokens)))
        if include_usage:
            yield _sse(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": name,
                    "choices": [],
                    "usage": usage(sequence.prompt_length, len(tokens)),
                }
            )
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def _covspec_error_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CovspecError)
    row = error_code(exc.code)
    service = getattr(request.app.state, "service", None)
    if service is not None:
        service.metrics.errors.labels(row.code).inc()
    return JSONResponse({"error": {"code": row.code, "message": exc.message}}, status_code=row.http_status)


async def _validation_error_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
    message = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in details) or "invalid request"
    return JSONResponse({"error": {"code": "invalid_request", "message": message, "details": details}}, status_code=422)


async def _sweep_forever(service: EdgeService, period_s: float = 1.0) -> None:
    while True:
        await asyncio.sleep(period_s)
        if service.store.sweep():
            service.update_gauges()
