"""What `spool flush` runs (no typer here; `cmd_flush` is the command line): open the spool, deliver, report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._config import SpoolConfig
from ._format import human_count, plural

if TYPE_CHECKING:
    from .._sink import Sink
    from .._spool import Spool
    from .._stats import SpoolStats

__all__ = ["quiet_logs", "report", "run_flush"]


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
    path: Path, sink: Sink, config: SpoolConfig, timeout: float, batch_size: int | None, progress: bool
) -> dict[str, Any]:
    """Open the spool, deliver until nothing is pending or `timeout` passes, close without draining again.

    Returns `{"ok", "delivered", "refused", "pending", "dead", "last_error"}` (delivered, refused: spans this run
    delivered, and moved to dead letters because the server refused them). Raises `SpoolError` /
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
        counters = spool.metrics(gauges=False)  # counters only: no blocking read on the loop
    finally:
        await spool.aclose(timeout=0)
    return {
        "ok": ok,
        "delivered": counters["delivered"],
        "refused": counters["dead_lettered"],
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


def report(r: dict[str, Any]) -> None:
    line = f"delivered {plural(r['delivered'], 'span')}"
    if r.get("refused"):
        line += f"; {plural(r['refused'], 'span')} refused by the server: spool dead list"
    if r["ok"]:
        line += "; nothing pending"
    else:
        line += f"; {human_count(r['pending'])} still pending (kept on disk)"
    if r["dead"]:
        line += f"; {plural(r['dead'], 'dead letter')} (spool dead list)"
    print(line)
    for held in r.get("leased", ()):
        print(leased_line(held))
    if not r["ok"] and r["last_error"]:
        print(f"last error: {r['last_error']}", file=sys.stderr)


def leased_line(held: dict[str, Any], now: float | None = None) -> str:
    """`N spans leased by pid P on HOST until HH:MM:SS` (local time), from one entry of `Store.leased()`; a lease
    whose time has passed while its process still runs (hung, or its clock is behind) says so."""
    import time

    who = f"pid {held['pid']} on {held['host']}" if held["pid"] is not None else f"a drainer on {held['host']}"
    until = time.strftime("%H:%M:%S", time.localtime(held["until"]))
    line = f"{plural(held['spans'], 'span')} leased by {who} until {until}"
    if held["until"] < (time.time() if now is None else now):
        line += " (past, and the process still runs: its spans are taken over once watched for the lease's bound)"
    return line
