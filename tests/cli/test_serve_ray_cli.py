"""`covspec serve --ray` as people run it: a subprocess with a relative target path, serving through Ray Serve's proxy
until Ctrl-C; and the flags that only mean something with --ray refused without it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from covspec.cli.main import app
from covspec.runtime_edge.ray_serve import REPLICA_HEADER
from covspec.runtime_edge.server import free_port

COVSPEC = str(Path(sys.executable).parent / "covspec")


def test_replica_flags_need_ray() -> None:
    result = CliRunner().invoke(app, ["serve", "--target", "nowhere", "--replicas", "3"])
    assert result.exit_code == 2 and "--ray" in result.output


@pytest.mark.e2e
def test_serve_ray_answers_through_the_proxy_and_stops_on_ctrl_c(tiny_pair) -> None:
    pytest.importorskip("ray.serve", reason="Ray is an optional extra (pip install 'covspec[ray]'); not installed")
    target = tiny_pair("llava").target
    port = free_port()
    proc = subprocess.Popen(
        [COVSPEC, "serve", "--ray", "--replicas", "1", "--target", os.path.relpath(target, target.parents[1]),
         "--port", str(port), "--threads", "1", "--log-level", "warning"],
        cwd=target.parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    timer = threading.Timer(180, proc.kill)  # a hung server ends the test instead of the test run
    timer.start()
    try:
        replica = None
        while replica is None and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/info", timeout=2) as reply:
                    replica = reply.headers.get(REPLICA_HEADER)
                    info = reply.read()
            except OSError:
                time.sleep(0.5)
        assert replica, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no replica header"
        assert b'"protocol_version"' in info
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
