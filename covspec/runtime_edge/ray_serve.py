"""Scale-out on Ray Serve: R verifier replicas behind Ray Serve's HTTP proxy (`covspec serve --ray --replicas R`).

Each replica is one edge app, built by `create_app` in the replica's own process, with its own `EdgeService` (the
target, the sessions and their KV caches, the model thread). Nothing is shared between replicas, so a session must
stay on the replica that opened it. A device's generations ride one WebSocket (``/v1/connect``), and the proxy holds a
WebSocket on the replica that accepted it for its whole life: every round reaches the cache that holds its session,
with no routing table of ours. When a replica dies its connections drop; the device reconnects (the proxy picks a live
replica), its resume is answered ``unknown_session``, and it reopens the generation from the tokens it committed
(``resume_tokens``, ``first_round``); the edge's random draws are a function of (seed, stream, round), so the output is
the target's, seeded sampling included. HTTP sessions (``POST /v1/sessions`` then ``/v1/sessions/{id}/rounds``) are
two requests the proxy routes independently: they are not sticky (docs/scaling.md).

Every response, and every WebSocket handshake, names the replica that answered (``x-covspec-replica``).

Ray is imported only inside functions, so this module imports without the ray extra; the replica set's settings
live in `covspec.runtime_edge.ray_settings`, which the CLI reads for its defaults.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from covspec.cpus import describe, set_torch_threads
from covspec.errors import ConfigError
from covspec.runtime_edge.app import create_app
from covspec.runtime_edge.ray_settings import RaySettings
from covspec.runtime_edge.server import free_port
from covspec.runtime_edge.settings import EdgeSettings

log = logging.getLogger(__name__)
REPLICA_HEADER = "x-covspec-replica"


class ReplicaHeader:
    """ASGI middleware, outermost: names the replica on every response and WebSocket handshake, refusals included
    (which replica holds a device's sessions, which one answered a request)."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app = app
        self._header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def named(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept", "websocket.http.response.start"):
                message = {**message, "headers": [*message.get("headers", []), self._header]}
            await send(message)

        await self.app(scope, receive, named)


def replica_app_builder(settings: EdgeSettings, threads: int) -> Callable[[], ASGIApp]:
    """What each replica runs at start: torch's threads set before the target loads (in the app's lifespan, off the
    replica's event loop), then the edge app, named by this replica's id."""

    def build() -> ASGIApp:
        from ray import serve

        set_torch_threads(threads)
        replica = serve.get_replica_context().replica_id.unique_id
        log.info("%s", describe(f"edge replica {replica}", threads))
        app = create_app(settings)
        app.add_middleware(ReplicaHeader, replica=replica)
        return app

    return build


def edge_application(settings: EdgeSettings, ray_settings: RaySettings = RaySettings(), log_level: str = "info") -> Any:
    """The Ray Serve application (``serve.run`` it): ``ray_settings.replicas`` replicas of the edge app, logging at
    ``log_level`` (uvicorn's names; below info, no access log)."""
    from ray import serve

    threads = ray_settings.threads(settings)

    @serve.ingress(replica_app_builder(settings, threads))
    class EdgeReplica:
        """One verifier replica; its app (and so its EdgeService) is built in the replica's process."""

    thread_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}  # sized before torch starts
    deployment = serve.deployment(
        EdgeReplica,
        name=ray_settings.deployment_name,
        num_replicas=ray_settings.replicas,
        max_ongoing_requests=ray_settings.max_ongoing_requests,
        ray_actor_options={"num_cpus": ray_settings.replica_cpus, "runtime_env": {"env_vars": thread_env}},
        logging_config=_logging_config(log_level),
    )
    return deployment.bind()


def _logging_config(log_level: str) -> dict[str, Any]:
    level = {"trace": "DEBUG", "critical": "CRITICAL"}.get(log_level.lower(), log_level.upper())
    return {"log_level": level, "enable_access_log": level in ("DEBUG", "INFO")}


class RayEdge:
    """A local Ray instance serving the edge's replicas on ``settings.host:settings.port`` (port 0: a free one);
    ``url`` once ``start()`` returns (every replica has loaded its target). ``stop()`` shuts Serve down, and Ray if
    it started it (an already initialised Ray, e.g. a cluster the caller joined, is used as it is)."""

    def __init__(
        self, settings: EdgeSettings, ray_settings: RaySettings = RaySettings(), log_level: str = "info"
    ) -> None:
        if settings.port == 0:
            settings = replace(settings, port=free_port(settings.host))
        if Path(settings.target).exists():  # replicas run in Ray's worker processes, from another directory
            settings = replace(settings, target=str(Path(settings.target).resolve()))
        self.settings, self.ray_settings, self.log_level = settings, ray_settings, log_level
        self._started_ray = False

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def start(self) -> RayEdge:
        import ray
        from ray import serve

        check_amdsmi_loads()
        if not ray.is_initialized():
            ray.init(num_cpus=self.ray_settings.cluster_cpus, include_dashboard=False, configure_logging=False)
            self._started_ray = True
        # the proxy's own uvicorn: idle keep-alive connections closed as the plain edge closes them; no request
        # timeout (a device's WebSocket is one request for its whole life)
        http = {
            "host": self.settings.host,
            "port": self.settings.port,
            "keep_alive_timeout_s": max(1, round(self.settings.limits.idle_timeout_s)),
        }
        try:
            serve.start(http_options=http, logging_config=_logging_config(self.log_level))  # the proxy's, too
            app = edge_application(self.settings, self.ray_settings, self.log_level)
            serve.run(app, name=self.ray_settings.app_name, route_prefix="/")
        except BaseException:
            self.stop()
            raise
        log.info("edge: %d replicas behind Ray Serve on %s", self.ray_settings.replicas, self.url)
        return self

    def stop(self) -> None:
        import ray
        from ray import serve

        if ray.is_initialized():
            serve.shutdown()
            if self._started_ray:
                ray.shutdown()

    def __enter__(self) -> RayEdge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def check_amdsmi_loads() -> None:
    """Refuse to start Ray beside an amdsmi that cannot load. Ray counts AMD GPUs by importing amdsmi in every worker
    whenever it is installed, outside any guard; amdsmi 7 without ROCm's libamd_smi.so fails at import (KeyError), so
    every worker would die at start. Zeus (the zeus extra) pulls amdsmi in; it needs it only for AMD GPUs."""
    if importlib.util.find_spec("amdsmi") is None:
        return
    try:
        import amdsmi  # noqa: F401
    except Exception as exc:
        raise ConfigError(
            f"amdsmi is installed but cannot load ({type(exc).__name__}: {exc}); Ray imports it in every worker, which "
            "would die at start: `pip uninstall amdsmi` (Zeus needs it only for AMD GPUs) or install ROCm's amd-smi-lib"
        ) from None


def serve_on_ray(settings: EdgeSettings, ray_settings: RaySettings = RaySettings(), log_level: str = "info") -> None:
    """Block serving the edge on Ray until SIGINT or SIGTERM (the `covspec serve --ray` entry point)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    edge = RayEdge(settings, ray_settings, log_level).start()
    try:
        stop.wait()
    finally:
        edge.stop()
