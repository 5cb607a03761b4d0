"""The one error body, on every path out of the edge: an HTTP JSON body, a WebSocket error frame and close, or a
refused WebSocket handshake. Each is counted in ``covspec_errors_total``, bounded in size whatever the client sent,
and carries ``Retry-After`` when the refusal is for capacity."""

from __future__ import annotations

import json
from typing import Any

from fastapi import WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.types import Scope, Send
from starlette.websockets import WebSocketDisconnect

from covspec.errors import CovspecError, ProtocolError
from covspec.protocol import ErrorFrame, encode_error, error_code
from covspec.protocol.errors import bounded_message, close_reason


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    """The one error body, as the OpenAPI schema documents it for every 4xx and 5xx."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "Refused: a documented error code (README, Errors)"},
    "5XX": {"model": ErrorBody, "description": "internal_error"},
}
CAPACITY_CODES = frozenset({"too_many_sessions", "kv_memory_exhausted"})  # answered with Retry-After


def as_covspec_error(exc: BaseException) -> CovspecError:
    """``exc`` itself when raised on purpose; anything else is an internal error (its text stays in the log)."""
    return exc if isinstance(exc, CovspecError) else CovspecError(f"internal error: {type(exc).__name__}")


def error_body(exc: CovspecError) -> dict[str, Any]:
    row = error_code(exc.code)
    return {"error": {"code": row.code, "message": bounded_message(exc.message)}}


def http_error(service: Any, exc: BaseException, details: list[dict[str, Any]] | None = None) -> JSONResponse:
    """The JSON error response of ``exc`` (``service`` may be None before the lifespan started)."""
    error = as_covspec_error(exc)
    row = error_code(error.code)
    _count(service, row.code)
    body = error_body(error)
    if details:
        body["error"]["details"] = details
    headers = {"Retry-After": str(service.limits.retry_after_s)} if service and row.code in CAPACITY_CODES else None
    return JSONResponse(body, status_code=row.http_status, headers=headers)


def error_frame(service: Any, exc: CovspecError, round_no: int) -> bytes:
    row = error_code(exc.code)
    _count(service, row.code)
    retry_after = service.limits.retry_after_s if service is not None and row.code in CAPACITY_CODES else None
    return encode_error(ErrorFrame(round_no, row.code, bounded_message(exc.message), retry_after))


async def close_with_error(websocket: WebSocket, service: Any, exc: BaseException, round_no: int) -> None:
    """An error frame, then the close code of its error code with a reason that fits a close frame."""
    error = as_covspec_error(exc)
    row = error_code(error.code)
    try:
        await websocket.send_bytes(error_frame(service, error, round_no))
        await websocket.close(code=row.ws_close, reason=close_reason(row.code, error.message))
    except (WebSocketDisconnect, RuntimeError):
        pass


async def refuse(scope: Scope, send: Send, service: Any, exc: CovspecError) -> None:
    """Answer before the app sees the request: an HTTP error response, or a WebSocket handshake refused with the
    same response (ASGI's denial-response extension; a bare close, HTTP 403, where the server lacks it)."""
    response = http_error(service, exc)
    if scope["type"] == "http":
        await response({"type": "http"}, _no_body, send)
        return
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": error_code(exc.code).ws_close})
        return
    await send({"type": "websocket.http.response.start", "status": response.status_code,
                "headers": response.raw_headers})  # fmt: skip
    await send({"type": "websocket.http.response.body", "body": response.body})


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def _count(service: Any, code: str) -> None:
    if service is not None:
        service.metrics.errors.labels(code).inc()


def parse_json(raw: str | bytes, what: str) -> Any:
    """``json.loads`` whose failures (syntax, nesting too deep to parse) are the client's ``invalid_request``."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{what} is not JSON: {exc.msg}", code="invalid_request") from None
    except RecursionError:
        raise ProtocolError(f"{what} is nested too deeply", code="invalid_request") from None
