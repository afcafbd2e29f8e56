"""`spool export`: write a spool's pending spans (or dead letters) as JSON lines: the exact stored bytes of an `sgp`
spool, one OTLP/JSON object (`{"resource", "scope", "span"}`) per span of an `otlp` spool.

For carrying spans off an air-gapped or cut-off host: `spool export` there, `spool import` + `spool flush` where the
backend is reachable. Streams in chunks (memory stays flat on any size); a file is written as `OUT.partial` and
renamed when complete, so a cut-short export never looks finished.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated

import typer

from .._formats import format_named
from .._store import Store
from ._common import PathOption, app, fail, open_store
from ._format import plural
from ._progress import progress

__all__ = ["export", "write_lines"]

CHUNK = 2000


def write_lines(store: Store, out: IO[bytes], *, dead: bool = False, trace_id: str | None = None) -> Iterator[int]:
    """Write each stored body of `store` (an `otlp` row in the OTLP JSON mapping) and a newline to `out`; yields after
    each chunk how many were written in it. Raises `OSError` (disk full, closed pipe) and `sqlite3.Error`."""
    line = format_named(store.file_format()).export_line()
    pending = 0
    for body in store.iter_bodies(dead=dead, trace_id=trace_id, chunk=CHUNK):
        out.write(body if line is None else line(body))
        out.write(b"\n")
        pending += 1
        if pending == CHUNK:
            yield pending
            pending = 0
    if pending:
        yield pending


def _total(store: Store, dead: bool, trace_id: str | None) -> int | None:
    """The row count for the progress bar (None when it would need a scan: a trace filter)."""
    if trace_id is not None:
        return None
    st = store.stats()
    return st.dead if dead else st.pending


@app.command(
    epilog="Example: spool export spans.jsonl --path ./spans.db",
)
def export(
    out: Annotated[str, typer.Argument(metavar="OUT.jsonl|-", help="File to write, or - for stdout.")],
    path: PathOption = None,
    dead: Annotated[bool, typer.Option("--dead", help="Export dead letters instead of pending spans.")] = False,
    trace: Annotated[str | None, typer.Option("--trace", metavar="ID", help="Only spans of this trace_id.")] = None,
) -> None:
    """Write pending spans or dead letters as JSON lines.

    One item per line: the exact stored bytes (an otlp spool: one OTLP/JSON object per span, with its resource and
    scope); the file is created 0600 (spans hold prompts).
    """
    what = "dead letter" if dead else "span"
    with open_store(path) as store:
        total = _total(store, dead, trace) if sys.stderr.isatty() else None
        written = 0
        try:
            with _output(out) as f, progress(f"exporting {what}s", total) as advance:
                for n in write_lines(store, f, dead=dead, trace_id=trace):
                    written += n
                    advance(n)
        except BrokenPipeError:
            _quiet_stdout()
            raise typer.Exit(1) from None
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror or exc}")
    where = "stdout" if out == "-" else out
    print(f"exported {plural(written, what)} to {where}", file=sys.stderr)


@contextlib.contextmanager
def _output(out: str) -> Iterator[IO[bytes]]:
    """stdout for `-`; else `OUT.partial` (created 0600: spans hold prompts), renamed to OUT once everything is
    written (removed on failure)."""
    if out == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    final = Path(out)
    partial = final.with_name(final.name + ".partial")
    try:
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            yield f
        os.replace(partial, final)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


def _quiet_stdout() -> None:
    """After EPIPE (`spool export - | head`): point stdout at /dev/null so the interpreter's final flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
