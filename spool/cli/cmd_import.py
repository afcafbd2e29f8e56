"""`spool import`: append span items from JSON lines to a spool (created if missing), validated as `put` does.

Lines are SGP items, or OTLP/JSON objects `{"resource", "scope", "span"}` (what `spool export` writes for an `otlp`
spool); the first line says which, and a new file takes that format.

Rows are keyed by `(trace_id, id)`, so importing a file twice leaves one row per span (identical bytes do not even
bump the row's version), and `spool export` of the result gives the same lines back. A line without `id` gets one
derived from its bytes (not a random one), for the same reason. A bad line is reported with its number and skipped.
"""

from __future__ import annotations

import collections
import itertools
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Annotated

import typer

from .._config import SpoolConfig
from .._errors import SpoolConfigError, SpoolCorruptError
from .._formats import SGP, format_named, sniff_line
from .._items import Encoded
from .._store import Store
from .._storebase import missing_dir
from ._boundary import check_before_write, error_line, naming_damage
from ._common import PathOption, app, fail, resolve_path
from ._format import plural
from ._progress import progress

__all__ = ["import_", "import_lines"]

CHUNK = 1000
MAX_REPORTED = 100
"""Bad lines reported one by one; beyond this, only counted (a binary file would flood the terminal)."""


class _TooLong(bytes):
    """A line longer than an item can be: its first bytes only (the rest was read through, never held)."""


def bounded_lines(f: IO[bytes], limit: int) -> Iterator[bytes]:
    """The lines of `f`, each held in memory only up to `limit` bytes: a longer line is yielded as a `_TooLong` of
    its first bytes (a 1 GiB line costs `limit` of memory, not 2 GiB)."""
    while line := f.readline(limit + 1):
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
            pass
        yield _TooLong(line[:64])


def import_lines(
    lines: Iterable[bytes],
    store: Callable[[], Store],
    max_item_bytes: int,
    on_error: Callable[[int, str], None],
    on_chunk: Callable[[int], None] = lambda n: None,
    parse: Callable[[bytes, int], Encoded] = SGP.parse_line,
) -> collections.Counter[str]:
    """Parse numbered `lines` (blank ones ignored) and append valid items to `store()` in chunks of `CHUNK` (it is
    called at the first chunk with a valid item: a file of bad lines creates no spool); report
    each bad line to `on_error(lineno, reason)` and skip it; `on_chunk(bytes read)` after each chunk. Returns the
    rows counted as "new", "updated", "unchanged" (already stored with these bytes, or a start meeting its end),
    "skipped" (bad lines) and "dropped" (new rows the disk cap refused). Whatever `store.append` raises
    propagates (what was appended before stays)."""
    batch: list[Encoded] = []
    counts: collections.Counter[str] = collections.Counter(new=0, updated=0, unchanged=0, skipped=0, dropped=0)
    read = 0

    def append() -> None:
        if not batch:
            return on_chunk(read)
        into = store()
        outcomes = into.outcomes(batch)
        dropped = into.append(batch)  # only rows new to the file are refused by the cap
        counts.update(outcomes)
        counts["new"] -= dropped
        counts["dropped"] += dropped
        on_chunk(read)

    for lineno, line in enumerate(lines, 1):
        read += len(line)
        if not line.strip():
            continue
        try:
            if isinstance(line, _TooLong):
                raise ValueError(f"line longer than max_item_bytes ({max_item_bytes} bytes): {bytes(line)[:40]!r}...")
            batch.append(parse(line, max_item_bytes))
        except (ValueError, TypeError) as exc:
            counts["skipped"] += 1
            on_error(lineno, str(exc))
            continue
        if len(batch) >= CHUNK:
            append()
            batch, read = [], 0
    if batch or read:
        append()
    return counts


@app.command(
    "import",
    epilog="Example: spool import spans.jsonl --path ./spans.db",
)
def import_(
    src: Annotated[str, typer.Argument(metavar="IN.jsonl|-", help="JSON lines to read, or - for stdin.")],
    path: PathOption = None,
) -> None:
    """Append spans from JSON lines to a spool.

    Reads what `spool export` writes; creates the spool if missing. Reports new, updated, unchanged and skipped
    rows; bad lines are reported by number and skipped (exit 1).
    """
    config = SpoolConfig()
    try:
        f: IO[bytes] = sys.stdin.buffer if src == "-" else open(src, "rb")  # noqa: SIM115
    except OSError as exc:
        fail(f"cannot read {src}: {exc.strerror or exc}")
    size = None if src == "-" else _size(Path(src))
    p = resolve_path(path)
    if not p.exists() and not p.is_symlink() and not p.parent.is_dir():
        f.close()
        fail(f"cannot create a spool at {p}: {missing_dir(p.parent)}")
    lines = bounded_lines(f, config.max_item_bytes + 2)  # (an item, its newline; longer lines are refused anyway)
    head: list[bytes] = []  # the lines up to the first that is not blank: it says the format
    for line in lines:
        head.append(line)
        if line.strip():
            break
    fmt = sniff_line(head[-1]).name if head else None
    try:
        if p.is_file() and p.stat().st_size == 0:
            raise SpoolCorruptError(p)  # an empty file someone made: not ours to turn into a spool
        if fmt is not None:
            format_named(fmt).check_lines()  # (without the extra a format needs: its Error line, now)
        opened: list[Store] = []
        if p.exists():
            check_before_write(p)
            opened.append(Store(p, config))
    except OSError as exc:
        f.close()
        fail(f"cannot create a spool at {p}: {error_line(exc)}")
    except BaseException:
        f.close()
        raise

    def store() -> Store:
        """The spool, created with the first valid chunk when there is none: a file of bad lines makes no spool."""
        if not opened:
            opened.append(Store(p, config))
            opened[0].claim_format(fmt)
        return opened[0]

    have = fmt or SGP.name
    if opened:
        try:
            with naming_damage(p):
                have = opened[0].claim_format(fmt)
        except SpoolConfigError:
            have = opened[0].file_format()
            opened[0].close()
            f.close()
            fail(f"{p} holds {have} spans; these lines are {fmt} spans (import them into another file)")
        except BaseException:
            opened[0].close()
            f.close()
            raise
    parse = format_named(have).parse_line
    shown = 0

    def report(lineno: int, reason: str) -> None:
        nonlocal shown
        shown += 1
        if shown <= MAX_REPORTED:
            print(f"line {lineno}: {reason}", file=sys.stderr)

    try:
        with naming_damage(p), f, progress("importing", size, unit="bytes") as advance:
            n = import_lines(itertools.chain(head, lines), store, config.max_item_bytes, report, advance, parse)
    except (sqlite3.Error, OSError) as exc:
        fail(f"import stopped: {error_line(exc)} (spans appended before it are kept)")
    finally:
        for opened_store in opened:
            opened_store.close()
    if n["skipped"] > MAX_REPORTED:
        print(f"... {n['skipped'] - MAX_REPORTED:,} more bad lines not shown", file=sys.stderr)
    if n["dropped"]:
        print(
            f"{plural(n['dropped'], 'span')} dropped: the disk cap was reached (SPOOL_MAX_BYTES={config.max_bytes})",
            file=sys.stderr,
        )
    counted = ", ".join(f"{n[k]:,} {k}" for k in ("new", "updated", "unchanged", "skipped"))
    print(f"imported into {p}: {counted}" + ("" if opened else " (no spool created: nothing to import)"))
    raise typer.Exit(1 if n["skipped"] or n["dropped"] else 0)


def _size(p: Path) -> int | None:
    try:
        return p.stat().st_size if p.is_file() else None
    except OSError:
        return None
