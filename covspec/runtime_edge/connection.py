"""The edge's WebSocket transports: one connection per device across generations (``/v1/connect``), and the older
one-socket-per-session round channel of the HTTP sessions.

On a device connection the edge speaks first (``hello``: its ``/v1/info``), then each generation is one ``open``
frame (request + image, or the sha256 of an image this edge holds for the device) answered by ``opened``, then
rounds; the device may send its first round right behind the open, so frames are handled strictly in order. The
generation ends with its last verdict, and the next ``open`` (or a ``cancel``) drops its session. A refused ``open``
gets an error frame, the rounds sent behind it are dropped and the connection stays; a bad round gets an error frame
and a close code, and the session survives for a ``resume`` (except after an internal error).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from covspec.errors import CovspecError, ProtocolError
from covspec.protocol import (
    Cancel,
    Hello,
    Opened,
    OpenRequest,
    Resume,
    decode_round,
    decode_uplink,
    encode_hello,
    encode_opened,
    encode_verdict,
)
from covspec.protocol.codec import InvalidOpenRequest
from covspec.runtime_edge.replies import close_with_error, error_frame
from covspec.runtime_edge.service import EdgeService, caller_key
from covspec.runtime_edge.sessions import EdgeSession

log = logging.getLogger(__name__)
T = TypeVar("T")


async def serve_device_connection(websocket: WebSocket, service: EdgeService) -> None:
    await websocket.accept()  # the API key was checked before the handshake (covspec.runtime_edge.gate)
    device, caller = _device_key(websocket), _caller(websocket)
    owner = object()  # this connection: the sessions it serves name it, until another connection resumes them
    if not await _send(websocket, service, encode_hello(Hello(service.info()))):
        return
    current: EdgeSession | None = None
    refused = False  # the last open was refused: rounds sent behind it are dropped until the next open
    round_no = 0
    async for data in _frames(websocket, service):
        try:
            try:
                frame = await _decoded(decode_uplink, data, service)
            except InvalidOpenRequest as exc:
                frame = exc  # an open whose request is invalid: refused like any other open
            if isinstance(frame, (OpenRequest, InvalidOpenRequest)):
                _drop(service, current, owner)
                current, round_no, refused = None, 0, False
                try:
                    current = await _open(service, device, caller, owner, frame)
                except CovspecError as exc:  # the generation is refused; the connection stays
                    refused = True
                    await _send(websocket, service, error_frame(service, exc, 0))
                    continue
                reply = encode_opened(_opened(current))
            elif isinstance(frame, Resume):
                current, refused = service.attach(frame.session_id, owner), False
                continue
            elif isinstance(frame, Cancel):
                _drop(service, current, owner)
                current, refused = None, False
                continue
            elif refused:
                continue  # the device sent its first round behind an open that was refused; it opens again
            else:
                if current is None:
                    raise ProtocolError("no generation is running on this connection", code="no_generation")
                round_no = frame.round
                reply = encode_verdict(await service.verify_round(current, frame, owner))
        except Exception as exc:
            if not isinstance(exc, CovspecError):  # a bug must not take the server down; this generation is dropped
                log.exception("frame of device %s failed", device)
                _drop(service, current, owner)
            await close_with_error(websocket, service, exc, round_no)
            return
        if not await _send(websocket, service, reply):
            return  # the device reconnects, resumes and retries; the stored verdict answers it
    if current is not None and current.state.finished:
        _drop(service, current, owner)  # a clean goodbye after the last verdict: nothing left to retry


async def serve_session_rounds(websocket: WebSocket, service: EdgeService, session_id: str) -> None:
    """One WebSocket per HTTP session; a bad frame gets an error frame and a close code, the session survives."""
    await websocket.accept()
    owner = object()
    try:
        session = service.attach(session_id, owner)
    except CovspecError as exc:
        await close_with_error(websocket, service, exc, 0)
        return
    round_no = 0
    async for data in _frames(websocket, service):
        try:
            request = await _decoded(decode_round, data, service)
            round_no = request.round
            reply = encode_verdict(await service.verify_round(session, request, owner))
        except Exception as exc:
            if not isinstance(exc, CovspecError):  # a bug must not take the server down; this session is dropped
                log.exception("round %s of session %s failed", round_no, session_id)
                service.store.discard(session.id)
            await close_with_error(websocket, service, exc, round_no)
            return
        if not await _send(websocket, service, reply):
            return


INLINE_DECODE_BYTES = 64 << 10  # larger frames (an image, vanilla draft rows) are decoded off the event loop


async def _decoded(decode: Callable[..., T], data: bytes, service: EdgeService) -> T:
    """``decode`` a frame against the target's vocabulary and the server's per-round limits."""
    limits = service.limits
    kwargs = {
        "vocab_size": service.model.vocab_size,
        "max_draft_tokens": limits.max_draft_tokens,
        "max_burst_tokens": limits.max_burst_tokens,
    }
    if len(data) <= INLINE_DECODE_BYTES:
        return decode(data, **kwargs)
    return await asyncio.to_thread(decode, data, **kwargs)


async def _frames(websocket: WebSocket, service: EdgeService) -> AsyncIterator[bytes]:
    """Binary frames until the peer goes; a text frame is refused with its close code."""
    while True:
        try:
            message = await websocket.receive()
        except WebSocketDisconnect:
            return
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            error = ProtocolError("frames are binary msgpack, not text", code="malformed_message")
            await close_with_error(websocket, service, error, 0)
            return
        service.metrics.wire_bytes.labels("uplink").inc(len(data))
        yield data


async def _send(websocket: WebSocket, service: EdgeService, frame: bytes) -> bool:
    service.metrics.wire_bytes.labels("downlink").inc(len(frame))
    try:
        await websocket.send_bytes(frame)
    except (WebSocketDisconnect, RuntimeError):
        return False
    return True


async def _open(
    service: EdgeService, device: str, caller: str, owner: object, request: OpenRequest | InvalidOpenRequest
) -> EdgeSession:
    if isinstance(request, InvalidOpenRequest):
        raise request
    spec = service.check_spec(request.spec)
    image = request.image
    if request.image_sha256 is not None:
        image = service.images.get(device, request.image_sha256)
        if image is None:
            raise ProtocolError(
                f"no image {request.image_sha256.hex()[:16]}… is held for this device; send its bytes",
                code="unknown_image",
            )
    session = await service.open_session(spec, image, caller, owner)  # checks the image's size and decodes it
    if request.image is not None:
        service.images.put(device, request.image)
    return session


def _opened(session: EdgeSession) -> Opened:
    state = session.state
    sequence = state.sequence
    return Opened(session.id, sequence.prompt_length, sequence.image_tokens, state.spec.verify_mode, session.prefill_s)


def _drop(service: EdgeService, session: EdgeSession | None, owner: object) -> None:
    """End ``session`` if this connection still serves it (one another connection resumed is not this one's)."""
    if session is not None and session.owner is owner:
        service.store.discard(session.id)
        service.update_gauges()


def _device_key(websocket: WebSocket) -> str:
    """Whose held images a connection may name: its API key and the device id it gave (a fresh id if none)."""
    return f"{_caller(websocket)}:{websocket.query_params.get('device') or secrets.token_hex(8)}"


def _caller(websocket: WebSocket) -> str:
    return caller_key(websocket.headers.get("authorization"))
