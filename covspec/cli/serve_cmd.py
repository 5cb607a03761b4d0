"""`covspec serve`: the edge verifier (FastAPI + uvicorn) hosting the target."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import typer

from covspec.runtime_edge.ray_settings import RaySettings
from covspec.runtime_edge.schedules import Schedule
from covspec.runtime_edge.settings import BatchSettings, EdgeLimits, EdgeSettings

_D = EdgeLimits()
_B = BatchSettings()
_R = RaySettings()
_S = {f.name: f.default for f in fields(EdgeSettings)}  # EdgeSettings has a required field, so no instance


def serve(
    target: str = typer.Option(..., "--target", help="Target checkpoint: a local folder or a hub id."),
    host: str = typer.Option(_S["host"], "--host"),
    port: int = typer.Option(_S["port"], "--port"),
    dtype: str = typer.Option(_S["dtype"], "--dtype", help="auto, float32, float64, bfloat16 or float16."),
    threads: int | None = typer.Option(
        _S["threads"], "--threads", min=1, help="torch intra-op threads (default: one per CPU this process may use)."
    ),
    api_key_file: Path | None = typer.Option(None, "--api-key-file", help="File whose first line is the bearer key."),
    name: str | None = typer.Option(None, "--name", help="Model name reported by /v1/info and /v1/models."),
    max_sessions: int = typer.Option(_D.max_sessions, "--max-sessions"),
    session_ttl_s: float = typer.Option(
        _D.session_ttl_s, "--session-ttl-s", help="Idle seconds before a session is dropped."
    ),
    max_kv_bytes: int = typer.Option(
        _D.max_kv_bytes, "--max-kv-bytes", help="KV-cache bytes all sessions may reserve."
    ),
    max_image_bytes: int = typer.Option(_D.max_image_bytes, "--max-image-bytes"),
    max_image_pixels: int = typer.Option(_D.max_image_pixels, "--max-image-pixels"),
    max_image_side: int = typer.Option(_D.max_image_side, "--max-image-side"),
    max_image_aspect: float = typer.Option(
        _D.max_image_aspect, "--max-image-aspect", help="Longest over shortest side an image may have."
    ),
    max_prompt_tokens: int = typer.Option(_D.max_prompt_tokens, "--max-prompt-tokens"),
    max_prompt_chars: int = typer.Option(_D.max_prompt_chars, "--max-prompt-chars"),
    max_draft_tokens: int = typer.Option(_D.max_draft_tokens, "--max-draft-tokens", help="Draft tokens per round."),
    max_burst_tokens: int = typer.Option(
        _D.max_burst_tokens, "--max-burst-tokens", help="Target tokens one burst round may ask for."
    ),
    max_new_tokens: int = typer.Option(_D.max_new_tokens, "--max-new-tokens"),
    images_per_device: int = typer.Option(
        _D.images_per_device, "--images-per-device", help="Images held per device, named later by sha256."
    ),
    image_cache_bytes: int = typer.Option(_D.image_cache_bytes, "--image-cache-bytes"),
    retry_after_s: int = typer.Option(
        _D.retry_after_s, "--retry-after-s", help="Retry-After of a refusal for capacity (503)."
    ),
    header_timeout_s: float = typer.Option(
        _D.header_timeout_s, "--header-timeout-s", help="Seconds a client has to send its request head."
    ),
    idle_timeout_s: float = typer.Option(
        _D.idle_timeout_s, "--idle-timeout-s", help="Seconds an idle keep-alive HTTP connection stays open."
    ),
    max_batch: int = typer.Option(
        _B.max_batch, "--max-batch", min=1, help="Forwards (rounds, completion tokens) per batched target forward."
    ),
    batch_window_ms: float = typer.Option(
        _B.window_s * 1000, "--batch-window-ms", min=0.0, help="How long a batch may wait for more forwards."
    ),
    schedule: Schedule = typer.Option(
        _B.schedule.value, "--schedule", help="Which forwards go first when more wait than a batch holds."
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn's log level (warning hides access logs)."),
    ray: bool = typer.Option(
        False, "--ray", help="Serve --replicas verifier replicas behind a local Ray Serve proxy (the ray extra)."
    ),
    replicas: int | None = typer.Option(
        None, "--replicas", min=1, help=f"Replicas of the target under --ray [default: {_R.replicas}]."
    ),
    replica_cpus: float | None = typer.Option(
        None,
        "--replica-cpus",
        min=0.01,
        help=f"Ray CPUs each replica reserves under --ray [default: {_R.replica_cpus:g}].",
    ),
) -> None:
    """Serve TARGET: one WebSocket per device (/v1/connect), HTTP sessions, OpenAI-compatible chat completions,
    /metrics. With --ray: --replicas copies of that edge behind a local Ray Serve proxy (docs/scaling.md)."""
    from covspec.apikey import read_api_key_file
    from covspec.runtime_edge.server import serve as run_server

    limits = EdgeLimits(
        max_sessions=max_sessions,
        session_ttl_s=session_ttl_s,
        max_kv_bytes=max_kv_bytes,
        max_image_bytes=max_image_bytes,
        max_image_pixels=max_image_pixels,
        max_image_side=max_image_side,
        max_image_aspect=max_image_aspect,
        max_prompt_tokens=max_prompt_tokens,
        max_prompt_chars=max_prompt_chars,
        max_draft_tokens=max_draft_tokens,
        max_burst_tokens=max_burst_tokens,
        max_new_tokens=max_new_tokens,
        images_per_device=images_per_device,
        image_cache_bytes=image_cache_bytes,
        retry_after_s=retry_after_s,
        header_timeout_s=header_timeout_s,
        idle_timeout_s=idle_timeout_s,
    )
    api_key = read_api_key_file(api_key_file) if api_key_file else None
    batching = BatchSettings(max_batch, batch_window_ms / 1000, schedule)
    settings = EdgeSettings(target, host, port, dtype, api_key, limits, name, threads=threads, batching=batching)
    if not ray:
        if replicas is not None or replica_cpus is not None:
            raise typer.BadParameter("--replicas and --replica-cpus need --ray")
        run_server(settings, log_level=log_level)
        return
    from covspec.runtime_edge.ray_serve import serve_on_ray

    given = {"replicas": replicas, "replica_cpus": replica_cpus}
    serve_on_ray(settings, replace(_R, **{k: v for k, v in given.items() if v is not None}), log_level=log_level)
