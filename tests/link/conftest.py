from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.link.echo import EchoServer


@pytest.fixture()
def echo_server() -> Iterator[int]:
    """The port of an echo server on 127.0.0.1."""
    with EchoServer() as server:
        yield server.port
