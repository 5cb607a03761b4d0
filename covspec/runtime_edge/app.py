"""The edge verifier as a FastAPI app: one WebSocket per device across generations (``/v1/connect``), HTTP sessions
with a WebSocket of rounds each, the OpenAI-compatible endpoint, info, health and metrics.

`create_app` is the factory; the target is loaded in the lifespan (or injected, for tests and embedding), and all
model work runs on the scheduler's thread so the event loop keeps answering health checks and other sessions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from covspec.errors import CovspecError, ProtocolError
from covspec.models.base import LoadedModel
from covspec.protocol import PROTOCOL_VERSION, SessionSpec
from covspec.runtime_edge import link_probe
from covspec.runtime_edge.connection import serve_device_connection, serve_session_rounds
from covspec.runtime_edge.gate import EdgeGate
from covspec.runtime_edge.images import decode_data_uri
from covspec.runtime_edge.openai_api import (
    ChatCompletionRequest,
    chunk_body,
    completion_body,
    completion_id,
    split_chat_request,
    usage,
)
from covspec.runtime_edge.replies import ERROR_RESPONSES, http_error, parse_json
from covspec.runtime_edge.service import EdgeService, caller_key
from covspec.runtime_edge.settings import EdgeSettings
from covspec.runtime_edge.target_only import completion_steps
from covspec.spec import SamplingParams

log = logging.getLogger(__name__)


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

    app = FastAPI(title="covspec edge", version=str(PROTOCOL_VERSION), lifespan=lifespan, responses=ERROR_RESPONSES)
    app.add_middleware(EdgeGate, settings=settings)  # the API key and the body's size, before anything is read
    app.add_exception_handler(CovspecError, _error_response)
    app.add_exception_handler(RequestValidationError, _validation_error_response)
    app.add_exception_handler(StarletteHTTPException, _http_exception_response)
    app.add_exception_handler(Exception, _error_response)  # a bug: 500 with the same body, counted
    _add_routes(app)
    return app


def _service(request: Request) -> EdgeService:
    return request.app.state.service


Service = Annotated[EdgeService, Depends(_service)]


def _add_routes(app: FastAPI) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/info")
    async def info(service: Service) -> dict[str, Any]:
        return service.info()

    @app.post("/v1/link/sink")
    async def link_sink(request: Request, service: Service) -> dict[str, int]:
        return await link_probe.sink(request, service.limits.max_link_probe_bytes)

    @app.get("/v1/link/source")
    async def link_source(service: Service, size: int = Query(..., alias="bytes", ge=0)) -> Response:
        link_probe.check_source_size(size, service.limits.max_link_probe_bytes)
        return StreamingResponse(
            link_probe.source(size), media_type="application/octet-stream", headers={"Content-Length": str(size)}
        )

    @app.get("/v1/vocabulary")
    async def vocabulary(service: Service) -> Response:
        body = await asyncio.to_thread(lambda: service.vocabulary_json)
        return Response(body, media_type="application/json")

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
        return await _open_session(service, spec, image_bytes, caller_key(request.headers.get("authorization")))

    @app.delete("/v1/sessions/{session_id}")
    async def delete_session(session_id: str, service: Service) -> dict[str, Any]:
        session = service.store.remove(session_id)
        service.update_gauges()
        return {"session_id": session_id, "generated_tokens": len(session.state.generated)}

    @app.websocket("/v1/connect")
    async def connect(websocket: WebSocket) -> None:
        await serve_device_connection(websocket, websocket.app.state.service)

    @app.websocket("/v1/sessions/{session_id}/rounds")
    async def rounds(websocket: WebSocket, session_id: str) -> None:
        await serve_session_rounds(websocket, websocket.app.state.service, session_id)

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
    data = parse_json(raw_spec, "the 'request' field")
    return service.check_spec(SessionSpec.from_dict(data)), image_bytes


async def _open_session(service: EdgeService, spec: SessionSpec, image_bytes: bytes, caller: str) -> dict[str, Any]:
    session = await service.open_session(spec, image_bytes, caller)
    sequence = session.state.sequence
    return {
        "session_id": session.id,
        "protocol_version": PROTOCOL_VERSION,
        "prompt_tokens": sequence.prompt_length,
        "image_tokens": sequence.image_tokens,
        "vocab_size": service.model.vocab_size,
        "max_new_tokens": spec.max_new_tokens,
        "verify_mode": spec.verify_mode.value,
        "ttl_s": service.limits.session_ttl_s,
        "keep_set_size": len(spec.keep_set) if spec.keep_set is not None else None,
    }


async def _chat_completion(service: EdgeService, body: ChatCompletionRequest) -> Any:
    prompt, image_url = split_chat_request(body)
    service.check_prompt(prompt)
    if image_url is None and service.model.accepts_images:
        raise ProtocolError("this target is a VLM: send one image_url part (a data: URI)", code="invalid_request")
    image = await asyncio.to_thread(decode_data_uri, image_url, service.limits) if image_url is not None else None
    requested = body.max_completion_tokens or body.max_tokens or 256
    if requested > service.limits.max_new_tokens:
        raise ProtocolError(f"max_tokens is limited to {service.limits.max_new_tokens}", code="invalid_request")
    params = SamplingParams(body.temperature, body.top_k, body.top_p, body.seed)
    try:
        params.validate()
    except ValueError as exc:
        raise ProtocolError(str(exc), code="invalid_request") from None
    model = service.model
    sequence = await service.start_sequence(image, prompt)
    eos = frozenset(model.eos_token_ids)
    rng = np.random.default_rng(body.seed)
    service.metrics.chat_completions.inc()
    cid, name = completion_id(), body.model or service.model_name
    key = f"completion:{cid}"

    def finish_reason(tokens: list[int]) -> str:
        return "stop" if tokens and tokens[-1] in eos else "length"

    if not body.stream:  # one job, one forward per token, each batched with other jobs' forwards
        steps = completion_steps(sequence, params, requested, eos, rng)
        tokens = await service.run_model_steps(steps, "completion", key)
        service.metrics.chat_tokens.inc(len(tokens))
        return completion_body(cid, name, model.decode(tokens), finish_reason(tokens), sequence.prompt_length, tokens)

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue[int] = asyncio.Queue()
    steps = completion_steps(
        sequence, params, requested, eos, rng, on_token=lambda t: loop.call_soon_threadsafe(arrived.put_nowait, t)
    )

    async def events() -> AsyncIterator[str]:
        created = int(time.time())
        tokens: list[int] = []
        sent = ""
        yield _sse(chunk_body(cid, name, created, {"role": "assistant", "content": ""}, None))
        job = asyncio.ensure_future(service.run_model_steps(steps, "completion", key))
        try:
            while not (job.done() and arrived.empty()):
                getter = asyncio.ensure_future(arrived.get())
                await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                tokens.append(getter.result())
                text = model.decode(tokens)
                if text.endswith("\ufffd") or not text.startswith(sent):
                    continue  # an incomplete multi-byte character: wait for the rest
                if len(text) > len(sent):
                    yield _sse(chunk_body(cid, name, created, {"content": text[len(sent) :]}, None))
                    sent = text
            job.result()  # its failure, if any, ends the stream
        finally:
            job.cancel()  # a client gone mid-stream: the scheduler drops the job at its next forward
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


async def _error_response(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, CovspecError):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return http_error(getattr(request.app.state, "service", None), exc)


async def _validation_error_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [{"loc": [str(x)[:40] for x in e.get("loc", ())], "msg": str(e.get("msg", ""))[:200]}
               for e in exc.errors()[:10]]  # fmt: skip
    message = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details) or "invalid request"
    error = ProtocolError(message, code="invalid_request")
    return http_error(getattr(request.app.state, "service", None), error, details)


# Starlette's own refusals (no route, wrong method, a multipart body its parser refuses) in the one error body.
_HTTP_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


async def _http_exception_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, CovspecError):  # FastAPI wraps what failed while reading the body (the gate's 413)
        return http_error(getattr(request.app.state, "service", None), exc.__cause__)
    code = _HTTP_STATUS_CODES.get(exc.status_code, "invalid_request")
    message = str(exc.detail) if exc.detail else code
    return http_error(getattr(request.app.state, "service", None), ProtocolError(message, code=code))


async def _sweep_forever(service: EdgeService, period_s: float = 1.0) -> None:
    while True:
        await asyncio.sleep(period_s)
        if service.store.sweep():
            service.update_gauges()
