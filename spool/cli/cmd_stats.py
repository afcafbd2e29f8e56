"""`spool stats`: what is in a spool file, for people (a table) or machines (`--json`).

The computing and drawing live in `_stats_report` (no typer there): `spool.cli.main` answers the plain forms through
`_stats_report.fast_stats` before typer loads, and this command handles the rest (`--help`, options added later).
`fast_stats` answers only the forms it knows and hands anything else to this command: a new option needs nothing
there.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .._store import TOP_TRACES_MAX_ROWS
from ._common import PathOption, app, fail, open_store
from ._stats_report import print_stats, watch_stats

__all__ = ["stats"]


@app.command(epilog="Example: spool stats --json --path ./spans.db   (live: spool stats --watch --interval 1)")
def stats(
    path: PathOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with the stats fields.")] = False,
    detail: Annotated[
        bool,
        typer.Option(
            "--detail",
            help=("With --json: add attempts_buckets, top_traces, last_error_at, moved_aside and dropped_memory."),
        ),
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C (with --json: one object per line).")
    ] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes with --watch.")] = 2.0,
    traces: Annotated[
        bool,
        typer.Option(
            "--traces", help=f"Count the top traces even above {TOP_TRACES_MAX_ROWS:,} pending rows (slower)."
        ),
    ] = False,
) -> None:
    """Show what a spool holds: pending, dead, age, size, totals.

    Fields: pending (in flight included), in flight, dead letters, age of the oldest pending span, size on disk,
    delivered and dropped totals, last delivery error; the table adds failed-attempt buckets and the top traces.
    --json prints exactly the stats fields as one object for scripts (--detail adds the rest).
    """
    if watch and not interval > 0:
        fail(f"--interval must be > 0, got {interval}")
    with open_store(path) as store:  # (a first read: a missing or damaged file is an Error: line, exit 2)
        if not watch:
            print_stats(store, as_json, detail=detail, all_traces=traces)
            return
    watch_stats(store.path, as_json, interval, detail=detail, all_traces=traces)
