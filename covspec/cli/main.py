"""The `covspec` command: one Typer app, one module per command group (thin: parse, call, print)."""

from __future__ import annotations

import logging

import typer

from covspec.cli import (
    bench_cmd,
    demo_cmd,
    distill_cmd,
    export_cmd,
    info_cmd,
    link_cmd,
    pair_cmd,
    profile_cmd,
    run_cmd,
    serve_cmd,
    tiny_cmd,
)

app = typer.Typer(
    name="covspec",
    help="Device-edge speculative decoding for vision-language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v info, -vv debug logging.")) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


app.command("tiny")(tiny_cmd.tiny)
app.command("serve")(serve_cmd.serve)
app.command("run")(run_cmd.run)
app.command("demo")(demo_cmd.demo)
app.command("demo-train")(demo_cmd.demo_train)
app.command("export")(export_cmd.export)
app.command("quantize")(export_cmd.quantize)
app.command("distill")(distill_cmd.distill)
app.command("link")(link_cmd.link)
app.command("info")(info_cmd.info)
app.command("profile")(profile_cmd.profile)
app.command("pair")(pair_cmd.pair)
app.add_typer(bench_cmd.bench_app, name="bench")

if __name__ == "__main__":
    app()
