"""`covspec link`: an emulated link (a relay with delay, jitter, bandwidth and loss) in front of an edge, or the same
preset applied to an interface with netem; runs until Ctrl-C."""

from __future__ import annotations

import signal
import time
from types import FrameType

import typer

from covspec.link.presets import LINK_PRESETS, LinkProfile, custom_profile


def link(
    listen: str = typer.Option(
        "127.0.0.1:0", "--listen", help="HOST:PORT to accept on; port 0 picks a free one (printed)."
    ),
    to: str | None = typer.Option(None, "--to", help="HOST:PORT to relay to (the edge). Required without --netem."),
    preset: str | None = typer.Option(
        None, "--preset", help=f"One of {', '.join(LINK_PRESETS)} (docs/links.md); the flags below override its fields."
    ),
    delay_ms: float | None = typer.Option(None, "--delay-ms", help="One-way delay, each direction."),
    jitter_ms: float | None = typer.Option(None, "--jitter-ms", help="Uniform extra delay in [0, X) per chunk."),
    up_mbps: float | None = typer.Option(None, "--up-mbps", help="Uplink (client -> edge) rate; 0 = unlimited."),
    down_mbps: float | None = typer.Option(None, "--down-mbps", help="Downlink rate; 0 = unlimited."),
    loss: float | None = typer.Option(
        None, "--loss", help="Loss in percent of 1448-byte segments, emulated as retransmission delay."
    ),
    min_rto_ms: float | None = typer.Option(None, "--min-rto-ms", help="Floor of the retransmission timeout."),
    seed: int = typer.Option(0, "--seed", help="Seed of the jitter and loss draws."),
    shared_cell: bool = typer.Option(
        False,
        "--shared-cell",
        help="One cell: all connections share one uplink and one downlink at the link's rates (N devices on one "
        "Wi-Fi or cellular cell); without it each connection has the rates to itself.",
    ),
    netem_iface: str | None = typer.Option(
        None, "--netem", help="Apply the link to this interface with tc netem (root) instead of relaying."
    ),
    netem_side: str = typer.Option(
        "device", "--netem-side", help="device: shape with the uplink rate; edge: with the downlink rate."
    ),
) -> None:
    """Emulate a link between a device and an edge: relay --listen to --to through it, and count the bytes."""
    try:
        profile = custom_profile(
            preset,
            delay_ms=delay_ms,
            jitter_ms=jitter_ms,
            up_mbps=up_mbps,
            down_mbps=down_mbps,
            loss_pct=loss,
            min_rto_ms=min_rto_ms,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if netem_iface is not None:
        if shared_cell:
            raise typer.BadParameter("a shared cell is the relay's: netem shapes one interface", param_hint="--netem")
        if to is not None:
            raise typer.BadParameter("--netem shapes the interface itself and relays nothing", param_hint="--to")
        _netem(netem_iface, profile, netem_side)
        return
    if to is None:
        raise typer.BadParameter("say where to relay to (or use --netem IFACE)", param_hint="--to")
    _relay(_host_port(listen, "--listen"), _host_port(to, "--to"), profile, seed, shared_cell)


def _relay(listen: tuple[str, int], to: tuple[str, int], profile: LinkProfile, seed: int, shared: bool) -> None:
    from covspec.link.relay import TcpRelay

    try:
        relay = TcpRelay(*to, host=listen[0], port=listen[1], link=profile, seed=seed, shared=shared)
    except OSError as exc:
        typer.echo(f"cannot listen on {listen[0]}:{listen[1]}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"emulating {profile.summary()}" + (", one shared cell for all connections" if shared else ""))
    relay.start()
    typer.echo(f"listening on {relay.host}:{relay.port} -> {to[0]}:{to[1]} (Ctrl-C to stop)")
    try:
        _wait_for_interrupt()
    finally:
        relay.stop()
        counts = relay.counters.snapshot()
        typer.echo("stopped: " + " ".join(f"{key}={value}" for key, value in counts.items()))


def _netem(iface: str, profile: LinkProfile, side: str) -> None:
    from covspec.errors import ConfigError
    from covspec.link.netem import apply_netem, remove_netem

    try:
        command = apply_netem(iface, profile, side=side)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--netem") from None
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"emulating {profile.summary()} on {iface} ({side} side): {' '.join(command)} (Ctrl-C to remove)")
    try:
        _wait_for_interrupt()
    finally:
        try:
            typer.echo("removed: " + " ".join(remove_netem(iface)))
        except ConfigError as exc:
            typer.echo(f"error: {exc}", err=True)


def _wait_for_interrupt() -> None:
    """Sleep until Ctrl-C (SIGINT) or SIGTERM; either ends the command normally."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a process started from a non-interactive shell's background inherits SIGINT ignored, and Python
    # then installs no handler of its own, so Ctrl-C (or kill -INT) would not stop it
    previous = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _host_port(text: str, flag: str) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT, or PORT alone (host 127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise typer.BadParameter(f"expected HOST:PORT, got {text!r}", param_hint=flag) from None
    if not 0 <= number <= 65535:
        raise typer.BadParameter(f"port out of range in {text!r}", param_hint=flag)
    return host or "127.0.0.1", number
