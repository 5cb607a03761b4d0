"""`covspec link` as people run it: a subprocess relaying to an echo server on 127.0.0.1, stopped with Ctrl-C."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from covspec.cli.main import app
from tests.link.echo import EchoServer, connect, ping

COVSPEC = str(Path(sys.executable).parent / "covspec")


def _lines(stream) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue, pattern: str, timeout_s: float = 20) -> tuple[re.Match, list[str]]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if match := re.search(pattern, line):
            return match, seen
    raise AssertionError(f"no line matching {pattern!r} in {seen}")


def test_link_relays_with_delay_and_prints_the_counts() -> None:
    with EchoServer() as echo:
        args = ["link", "--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{echo.port}"]
        proc = subprocess.Popen(
            [COVSPEC, *args, "--preset", "lan", "--delay-ms", "25"], stdout=subprocess.PIPE, text=True, bufsize=1
        )
        try:
            lines = _lines(proc.stdout)
            match, seen = _wait_for(lines, r"listening on 127\.0\.0\.1:(\d+) ")
            assert any("emulating lan+custom: one-way delay 25 ms" in line for line in seen)
            with connect(int(match.group(1))) as sock:
                rtts = [ping(sock, b"x" * 500) for _ in range(2)]
            assert min(rtts) >= 0.05 * 0.99 and max(rtts) < 1.0
            proc.send_signal(signal.SIGINT)
            match, _ = _wait_for(lines, r"stopped: uplink=(\d+) downlink=(\d+) connections=(\d+)")
            assert match.groups() == ("1000", "1000", "1")
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "carrier-pigeon", "--to", "127.0.0.1:9"], "unknown link preset"),
        (["--preset", "lte"], "--to"),
        (["--to", "nowhere"], "HOST:PORT"),
        (["--loss", "100", "--to", "127.0.0.1:9"], "loss_pct"),
        (["--preset", "lte", "--netem", "cvstest0", "--to", "127.0.0.1:9"], "relays nothing"),
        (["--preset", "lte", "--netem", "cvstest0", "--shared-cell"], "a shared cell is the relay's"),
    ],
)
def test_link_rejects_bad_flags(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["link", *args], env={"COLUMNS": "300"})  # one line per message
    assert result.exit_code == 2 and message in result.output


def test_link_shared_cell_says_so() -> None:
    """``--shared-cell``: every connection through the relay shares the preset's rates (tests/link measures it)."""
    with EchoServer() as echo:
        args = ["link", "--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{echo.port}", "--preset", "wifi"]
        proc = subprocess.Popen([COVSPEC, *args, "--shared-cell"], stdout=subprocess.PIPE, text=True, bufsize=1)
        try:
            match, seen = _wait_for(_lines(proc.stdout), r"listening on 127\.0\.0\.1:(\d+) ")
            assert any("one shared cell for all connections" in line for line in seen)
            with connect(int(match.group(1))) as sock:
                assert ping(sock, b"x" * 100) < 1.0  # it relays
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_netem_without_tc_names_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no tc: nothing can touch an interface (and cvstest0 exists nowhere)
    result = CliRunner().invoke(app, ["link", "--preset", "lte", "--netem", "cvstest0"])
    assert result.exit_code == 1 and "`tc` was not found" in result.output and "iproute2" in result.output
