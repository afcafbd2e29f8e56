"""`spool flush`: deliver what a spool holds now, to Scale GP (credentials from `SGP_*`), then exit.

Exit 0 when nothing is pending at the end (dead letters do not count), 1 when spans remain (the backend is down or
the timeout ran out: they stay on disk), 2 when retrying cannot help (missing or refused credentials, a base URL that
is not an http(s) URL or has no span API) or for bad usage or no spool file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._config import SpoolConfig
from .._errors import CredentialsError, EndpointError, SpoolCorruptError
from .._sink import SGPSink
from ._boundary import naming_damage
from ._common import PathOption, app, fail, open_store
from ._format import human_count, plural

if TYPE_CHECKING:
    from .._spool import Spool
    from .._stats import SpoolStats

__all__ = ["flush", "run_flush"]


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """While a command runs: keep the library's log (the command reports what went wrong itself, in one line) and
    httpx's request log off the screen. The levels are restored afterwards (commands also run inside tests)."""
    levels = {"spool": logging.CRITICAL, "httpx": logging.WARNING, "httpcore": logging.WARNING}
    saved = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


async def run_flush(
    path: Path, sink: SGPSink, config: SpoolConfig, timeout: float, batch_size: int | None, progress: bool
) -> dict[str, Any]:
    """Open the spool, deliver until nothing is pending or `timeout` passes, close without draining again.

    Returns `{"ok", "delivered", "pending", "dead", "last_error"}` (delivered: by this run). Raises `SpoolError` /
    `OSError` when the file cannot be opened, `CredentialsError` / `EndpointError` at once when the server refuses
    the key or has no span API at the URL.
    """
    from .._spool import Spool

    spool = Spool(path, sink=sink, config=config, heal=False)
    try:
        start = await spool.stats()
        watcher = asyncio.create_task(_show_progress(spool, start)) if progress else None
        try:
            ok = await spool.flush(timeout, batch_size=batch_size, strict=True)
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        end = await spool.stats()
        delivered = spool.metrics(gauges=False)["delivered"]  # counters only: no blocking read on the loop
    finally:
        await spool.aclose(timeout=0)
    return {
        "ok": ok,
        "delivered": delivered,
        "pending": end.pending,
        "dead": end.dead,
        "last_error": None if ok and end.pending == 0 else end.last_error,
    }


async def _show_progress(spool: Spool, start: SpoolStats) -> None:
    """A rich progress bar on stderr: delivered so far of (delivered + still pending), from one stats snapshot."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("flushing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("flush", total=max(start.pending, 1), note="")
        while True:
            st = await spool.stats()
            delivered = max(0, st.delivered_total - start.delivered_total)
            dead = st.dead - start.dead
            notes = [f"[red]{dead:,} dead[/red]" if dead > 0 else "", _short(st.last_error) if st.last_error else ""]
            bar.update(
                task, completed=delivered, total=max(delivered + st.pending, 1), note="  ".join(filter(None, notes))
            )
            await asyncio.sleep(0.2)


def _short(text: str, n: int = 60) -> str:
    from rich.markup import escape

    return escape(text if len(text) <= n else text[: n - 1] + "…")


@app.command(epilog="Example: spool flush --timeout 120 --batch-size 500 --path ./spans.db")
def flush(
    path: PathOption = None,
    timeout: Annotated[float, typer.Option("--timeout", "-t", help="Give up after this many seconds.")] = 30.0,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            "-b",
            help="Spans per request, 1..1000 (larger is faster for big replays).",
            show_default="$SPOOL_BATCH_SIZE or 50",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with the outcome.")] = False,
) -> None:
    """Deliver everything pending now, then exit.

    Sends to Scale GP with SGP_API_KEY, SGP_ACCOUNT_ID and SGP_CLIENT_BASE_URL. Exit 0: nothing pending; 1: spans
    remain (kept on disk: the backend is down or the timeout ran out); 2: retrying cannot help (credentials missing
    or refused, no span API at the base URL), bad usage or no spool at the path. A progress bar shows on a terminal.
    """
    with open_store(path) as store:  # read-only first: a file found damaged here is left exactly as it is
        p = store.path
        if problems := store.check_cheap():
            raise SpoolCorruptError(p, "; ".join(problems[:3]))
        store.stats()
    if batch_size is not None and not 1 <= batch_size <= 1000:
        fail(f"--batch-size must be 1..1000, got {batch_size}")
    if not timeout >= 0:
        fail(f"--timeout must be >= 0, got {timeout}")
    config = SpoolConfig() if batch_size is None else SpoolConfig(batch_size=batch_size)
    sink = SGPSink()
    try:
        with quiet_logs(), naming_damage(p):
            result = asyncio.run(run_flush(p, sink, config, timeout, batch_size, progress=sys.stderr.isatty()))
    except CredentialsError as exc:
        fail(f"credentials refused ({exc}); fix SGP_API_KEY / SGP_ACCOUNT_ID (spans kept)")
    except EndpointError as exc:
        fail(f"{exc}; fix SGP_CLIENT_BASE_URL (spans kept)")
    except KeyboardInterrupt:
        fail("interrupted; what was not delivered stays in the spool", 130)
    if as_json:
        print(json.dumps(result))
    else:
        _report(result)
    raise typer.Exit(0 if result["ok"] else 1)


def _report(r: dict[str, Any]) -> None:
    line = f"delivered {plural(r['delivered'], 'span')}"
    if r["ok"]:
        line += "; nothing pending"
    else:
        line += f"; {human_count(r['pending'])} still pending (kept on disk)"
    if r["dead"]:
        line += f"; {plural(r['dead'], 'dead letter')} (spool dead list)"
    print(line)
    if not r["ok"] and r["last_error"]:
        print(f"last error: {r['last_error']}", file=sys.stderr)
