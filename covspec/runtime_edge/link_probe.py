"""What a device needs of the edge to measure the link between them (`covspec pair`): a sink that swallows an upload
and a source that answers a download, both of incompressible bytes, so that the device times each direction's
throughput on its own socket. The round trip is timed on ``/healthz``, the cheapest route.

Both take the API key like every /v1 route (the gate) and move at most ``EdgeLimits.max_link_probe_bytes`` per
request: more is refused with ``request_too_large`` (413) before a byte is read or made.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator

from starlette.requests import Request

from covspec.errors import LimitError

CHUNK_BYTES = 256 << 10  # the source's random block, made once per process and sent over and over


def too_large(what: str, size: int | str, limit: int) -> LimitError:
    return LimitError(
        f"{what} {size} bytes; a link probe moves at most {limit} bytes (max_link_probe_bytes)",
        code="request_too_large",
    )


async def sink(request: Request, limit: int) -> dict[str, int]:
    """Read the body to its end, counting it; refuse one that declares or passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large("the upload declares", declared, limit)
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise too_large("the upload passed", limit, limit)
    return {"bytes": seen}


def check_source_size(size: int, limit: int) -> None:
    if size > limit:
        raise too_large("asked for", size, limit)


@functools.cache
def _block() -> bytes:
    return os.urandom(CHUNK_BYTES)


async def source(size: int) -> AsyncIterator[bytes]:
    """``size`` random bytes, a block at a time: made once, so the download is timed, not the random generator; a
    block longer than any compressor's window (DEFLATE's is 32 KiB) leaves nothing on the way to shrink."""
    block, left = _block(), size
    while left > 0:
        n = min(CHUNK_BYTES, left)
        yield block[:n]
        left -= n


__all__ = ["CHUNK_BYTES", "check_source_size", "sink", "source", "too_large"]
