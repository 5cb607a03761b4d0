"""Running the edge app under uvicorn (the `covspec serve` entry point and the tests' in-process server)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import uvicorn

from covspec.cpus import describe, resolve_threads, set_torch_threads
from covspec.models.base import LoadedModel
from covspec.models.loading import load_model
from covspec.runtime_edge.app import create_app
from covspec.runtime_edge.gate import RefusingWebSocketProtocol, head_deadline_protocol
from covspec.runtime_edge.settings import EdgeSettings

logger = logging.getLogger(__name__)
LARGEST_VOCAB = 262_144  # Gemma 3's; frame limits before the target is known assume a vocabulary this large


def uvicorn_config(settings: EdgeSettings, model: LoadedModel | None = None, **overrides) -> uvicorn.Config:
    # Round frames are tiny and latency-bound: no per-message deflate. The frame size limit is the largest frame a
    # valid device can send (an open with the largest image, or a vanilla round of full draft rows at this target's
    # vocabulary; 152k-vocabulary bound when the target loads later). Request heads have a deadline, idle
    # keep-alive connections a timeout (slow clients).
    limits = settings.limits
    vocab = model.vocab_size if model is not None else LARGEST_VOCAB
    options = dict(
        host=settings.host,
        port=settings.port,
        http=head_deadline_protocol(limits.header_timeout_s),
        ws=RefusingWebSocketProtocol,
        ws_per_message_deflate=False,
        ws_max_size=limits.max_frame_bytes(vocab),
        timeout_keep_alive=max(1, round(limits.idle_timeout_s)),
        log_level="warning",
        lifespan="on",
        loop="asyncio",  # not uvloop, which the ray extra brings in: one event loop whatever else is installed
    )
    options.update(overrides)
    return uvicorn.Config(create_app(settings, model), **options)


def serve(settings: EdgeSettings, log_level: str = "info") -> None:
    """Block serving ``settings.target`` until interrupted. Sets torch's threads first (``settings.threads``, else
    one per CPU this process may use), before the target loads, so its pool is sized on purpose."""
    apply_threads(settings.threads)
    logger.info("loading target %s", settings.target)
    model = load_model(settings.target, dtype=settings.dtype)  # first: its vocabulary sizes the frame limit
    uvicorn.Server(uvicorn_config(settings, model, log_level=log_level)).run()


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op threads for the edge (None: derived from this process's CPU affinity), log it, return
    the count."""
    threads = resolve_threads(threads)
    set_torch_threads(threads)
    logger.info(describe("edge", threads))
    return threads


class BackgroundServer:
    """A real uvicorn server on a thread (tests, benchmarks, `covspec demo`); ``url`` once ``start()`` returns.

    It shares its host's process, so torch's threads are set only when ``settings.threads`` is given (process-wide);
    with None the host's own setting stands."""

    def __init__(self, settings: EdgeSettings, model: LoadedModel | None = None) -> None:
        if settings.port == 0:
            settings = _with_port(settings, free_port(settings.host))
        self.settings = settings
        self._server = uvicorn.Server(uvicorn_config(settings, model))
        self._thread = threading.Thread(target=self._server.run, name="covspec-edge", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def start(self, timeout_s: float = 120.0) -> BackgroundServer:
        if self.settings.threads is not None:
            apply_threads(self.settings.threads)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the edge server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _with_port(settings: EdgeSettings, port: int) -> EdgeSettings:
    from dataclasses import replace

    return replace(settings, port=port)


class ServeProcess:
    """`covspec serve` as a subprocess on a free 127.0.0.1 port, or ``port`` (demo, benchmarks, restart tests);
    ``stop()`` it in a finally block, so Ctrl-C or an error never leaves it running (``kill()``: as a crash would).
    ``cpus`` pins it and ``threads`` sizes its torch pool (``--threads``; None: the subprocess derives it from its
    CPUs), one pool on its own CPUs (DESIGN.md §10)."""

    def __init__(
        self,
        target: Path | str,
        *,
        dtype: str = "float32",
        threads: int | None = 1,
        cpus: set[int] | frozenset[int] | None = None,
        extra_args: tuple[str, ...] = (),
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.threads, self.cpus = threads, cpus
        env, thread_args = dict(os.environ), []
        if threads is not None:  # the OpenMP/MKL variables too: they size pools before torch reads its setting
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            thread_args = ["--threads", str(threads)]
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus and hasattr(os, "sched_setaffinity") else None
        covspec = str(Path(sys.executable).parent / "covspec")
        self.proc = subprocess.Popen(
            [covspec, "serve", "--target", str(target), "--port", str(self.port), "--dtype", dtype,
             "--log-level", "warning", *thread_args, *extra_args],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=pin,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 180.0) -> ServeProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"covspec serve exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/healthz", timeout=1)
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("covspec serve did not become ready")

    def kill(self) -> None:
        """End it at once, with no shutdown: every session it held is lost."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
