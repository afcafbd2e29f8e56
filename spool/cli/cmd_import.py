"""`spool import`: append span items from JSON lines to a spool (created if missing), validated as `put` does.

Rows are keyed by `(trace_id, id)`, so importing a file twice leaves one row per span (identical bytes do not even
bump the row's version), and `spool export` of the result gives the same lines back. A line without `id` gets one
derived from its bytes (not a random one), for the same reason. A bad line is reported with its number and skipped.
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Annotated

import orjson
import typer

from .._config import SpoolConfig
from .._errors import SpoolError
from .._items import Encoded, encode_item
from .._store import Store
from ._common import PathOption, app, fail, resolve_path
from ._format import plural
from ._progress import progress

__all__ = ["import_", "import_lines", "parse_line"]

CHUNK = 1000
MAX_REPORTED = 100
"""Bad lines reported one by one; beyond this, only counted (a binary file would flood the terminal)."""


def parse_line(line: bytes, max_item_bytes: int) -> Encoded:
    """One JSON line -> a validated, encoded item. Raises `ValueError` / `TypeError` with the reason."""
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if isinstance(item, dict) and item.get("id") is None:
        digest = hashlib.sha256(line.strip()).digest()
        item["id"] = str(uuid.UUID(bytes=digest[:16], version=4))
    return encode_item(item, max_item_bytes)


def import_lines(
    lines: Iterable[bytes],
    append: Callable[[list[Encoded]], int],
    max_item_bytes: int,
    on_error: Callable[[int, str], None],
    on_chunk: Callable[[int], None] = lambda n: None,
) -> tuple[int, int, int]:
    """Parse numbered `lines` (blank ones ignored) and `append` valid items in chunks of `CHUNK` (`append` returns
    how many spans the disk cap dropped); report each bad line to `on_error(lineno, reason)` and skip it;
    `on_chunk(bytes read)` after each chunk. Returns (appended, skipped, dropped). Whatever `append` raises
    propagates (what was appended before stays)."""
    batch: list[Encoded] = []
    imported = skipped = read = dropped = 0
    for lineno, line in enumerate(lines, 1):
        read += len(line)
        if not line.strip():
            continue
        try:
            batch.append(parse_line(line, max_item_bytes))
        except (ValueError, TypeError) as exc:
            skipped += 1
            on_error(lineno, str(exc))
            continue
        if len(batch) >= CHUNK:
            dropped += append(batch)
            imported += len(batch)
            batch = []
            on_chunk(read)
            read = 0
    if batch:
        dropped += append(batch)
        imported += len(batch)
    on_chunk(read)
    return imported, skipped, dropped


@app.command(
    "import",
    epilog="Example: spool import spans.jsonl --path ./spans.db",
)
def import_(
    src: Annotated[str, typer.Argument(metavar="IN.jsonl|-", help="JSON lines to read, or - for stdin.")],
    path: PathOption = None,
) -> None:
    """Append span items from JSON lines (as `spool export` writes them) to a spool, creating it if missing; bad
    lines are reported by number and skipped (exit 1)."""
    try:
        config = SpoolConfig()
    except SpoolError as exc:
        fail(str(exc))
    try:
        f: IO[bytes] = sys.stdin.buffer if src == "-" else open(src, "rb")  # noqa: SIM115
    except OSError as exc:
        fail(f"cannot read {src}: {exc}")
    size = None if src == "-" else _size(Path(src))
    p = resolve_path(path)
    try:
        store = Store(p, config)
    except (SpoolError, OSError) as exc:
        f.close()
        fail(str(exc))
    shown = 0

    def report(lineno: int, reason: str) -> None:
        nonlocal shown
        shown += 1
        if shown <= MAX_REPORTED:
            print(f"line {lineno}: {reason}", file=sys.stderr)

    try:
        with f, progress("importing", size, unit="bytes") as advance:
            imported, skipped, dropped = import_lines(f, store.append, config.max_item_bytes, report, advance)
    except (sqlite3.Error, OSError) as exc:
        fail(f"import stopped: {exc} (spans appended before it are kept)")
    finally:
        store.close()
    if skipped > MAX_REPORTED:
        print(f"... {skipped - MAX_REPORTED:,} more bad lines not shown", file=sys.stderr)
    if dropped:
        print(
            f"{plural(dropped, 'span')} dropped: the disk cap was reached (SPOOL_MAX_BYTES={config.max_bytes})",
            file=sys.stderr,
        )
    print(f"imported {plural(imported, 'span')} ({skipped:,} skipped) into {p}")
    raise typer.Exit(1 if skipped or dropped else 0)


def _size(p: Path) -> int | None:
    try:
        return p.stat().st_size if p.is_file() else None
    except OSError:
        return None
