"""Tables the CLI prints for side-by-side rows (`covspec demo`, `covspec bench`)."""

from __future__ import annotations


def print_rows(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = ("mode", "tok/s", "speedup", "of bound", "AAL", "rnd/tok", "waste/tok", "up B/tok", "down B/tok",
               "setup up/down B", "acc", "same")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "mode" else "right", no_wrap=True)
    for row in rows:
        table.add_row(
            row["mode"],
            f"{row['tokens_per_s']:.1f}",
            f"{row['speedup']:.2f}x",
            _opt(row.get("of_bound"), "{:.2f}"),
            _opt(row["aal"], "{:.2f}"),
            _opt(row.get("rounds_per_token"), "{:.2f}"),
            _opt(row.get("wasted_drafts_per_token"), "{:.2f}"),
            f"{row['uplink_bytes_per_token']:.1f}",
            f"{row['downlink_bytes_per_token']:.1f}",
            f"{row['setup_uplink_bytes_per_generation']:.0f}/{row['setup_downlink_bytes_per_generation']:.0f}",
            _opt(row["accuracy"], "{:.0%}"),
            "yes" if row["identical_to_target"] else "NO",
        )
    console = Console(width=max(Console().width, 150))
    console.print(table)


def _opt(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def print_reduce_rows(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = ("reducer", "keep", "visual tokens", "prefill ms", "prefill / all", "decoder / all", "drafter KV KiB",
               "AAL", "AAL / all", "accept", "tokens/s", "speedup", "accuracy")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "reducer" else "right", no_wrap=True)
    for row in rows:
        table.add_row(
            row["reducer"],
            f"{row['keep']:.2f}",
            f"{row['visual_tokens']:.1f}",
            f"{row['prefill_ms']:.2f}",
            f"{row['prefill_share']:.2f}",
            _opt(row["decoder_prefill_share"], "{:.2f}"),
            f"{row['drafter_kv_kib']:.0f}",
            f"{row['aal']:.2f}",
            _opt(row["aal_share"], "{:.2f}"),
            f"{row['acceptance_rate']:.3f}",
            f"{row['tokens_per_s']:.1f}",
            f"{row['speedup']:.2f}x",
            _opt(row["accuracy"], "{:.2f}"),
        )
    Console().print(table)
    if any(row["target_reduced"] for row in rows):
        Console().print("rows <reducer>+target are LOSSY: the target reads only the kept tokens too")


def print_load_rows(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = ("devices", "mode", "emulated", "tokens/s", "vs target-only", "vs one-at-a-time", "min device tok/s",
               "Jain", "p50 round ms", "p95 round ms", "batch", "edge busy", "edge bound tok/s", "bytes/token",
               "identical")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "mode" else "right", no_wrap=True)
    for row in rows:
        table.add_row(
            str(row["devices"]),
            row["mode"],
            str(row["emulated_devices"]),
            f"{row['tokens_per_s']:.0f}",
            _opt(row["vs_target_only"], "{:.2f}x"),
            _opt(row["vs_one_at_a_time"], "{:.2f}x"),
            f"{row['min_device_tokens_per_s']:.0f}",
            _opt(row["jain_index"], "{:.3f}"),
            _opt(row["p50_round_ms"], "{:.1f}"),
            _opt(row["p95_round_ms"], "{:.1f}"),
            _opt(row["mean_batch_size"], "{:.1f}"),
            _opt(row["edge_busy_share"], "{:.2f}"),
            _opt(row["edge_bound_tokens_per_s"], "{:.0f}"),
            _opt(row["bytes_per_token"], "{:.0f}"),
            "yes" if row["identical_to_target"] else "NO",
        )
    Console().print(table)


def print_pareto_rows(rows: list[dict], title: str) -> None:
    """One line per operating point: the four axes, the bound, and whether it is lossless."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("point", "factor", "link", "tok/s", "speedup", "bound", "B/tok", "mJ/tok (est.)", "acc", "AAL",
                   "same"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("point", "factor", "link") else "right", no_wrap=True)
    for row in rows:
        table.add_row(
            row["name"],
            row["factor"],
            row["link"],
            f"{row['tokens_per_s']:.1f}",
            _opt(row["speedup"], "{:.2f}x"),
            _opt(row["bound_tokens_per_s"], "{:.0f}"),
            f"{row['bytes_per_token']:.1f}",
            f"{row['joules_per_token'] * 1e3:.3f}",
            _opt(row["accuracy"], "{:.0%}"),
            _opt(row["aal"], "{:.2f}"),
            "yes" if row["identical_to_target"] else ("LOSSY" if row["lossy"] else "NO"),
        )
    Console(width=max(Console().width, 150)).print(table)
