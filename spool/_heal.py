"""Opening a spool file for a `Spool`: a file that is not a usable spool is moved aside, never deleted.

Only the `Spool` heals; the CLI's read commands open with `Store(path, create=False)` and report problems instead.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from ._config import SpoolConfig
from ._errors import SpoolCorruptError
from ._store import Store, spool_files

__all__ = ["FULL_CHECK_MAX_BYTES", "move_aside", "open_store_healing"]

log = logging.getLogger("spool")

FULL_CHECK_MAX_BYTES = 256 * 1024 * 1024
"""After an unclean close, files up to this size get `PRAGMA quick_check` (~1.2 ms per MB with a warm page cache,
~11 ms per MB cold: 1.2 s / 11.5 s for 1 GB); larger ones only the cheap checks of `_check`."""


def move_aside(path: str | os.PathLike[str], now: datetime | None = None) -> Path:
    """Rename the database to `<name>.corrupt-<YYYYmmddTHHMMSSZ>` and its `-wal` / `-shm` to that name plus
    `-wal` / `-shm` (so SQLite still pairs them when the moved file is opened). Returns the new database path."""
    src = spool_files(path)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    n = 0
    while True:
        dst = spool_files(src[0].with_name(f"{src[0].name}.corrupt-{stamp}{f'-{n}' if n else ''}"))
        if not any(d.exists() for d in dst):
            break
        n += 1
    for s, d in zip(src, dst, strict=True):
        if s.exists():
            os.rename(s, d)
    return dst[0]


def _check(store: Store) -> list[str]:
    """Problems found in a file that opened. After a clean close, none are looked for (the header and schema were
    read on open). After an unclean one (a crash, or a file no `Spool` closed): `PRAGMA quick_check` on files up to
    `FULL_CHECK_MAX_BYTES`; on larger ones the small tables plus both ends of the span table."""
    if store.meta("clean_close") == 1:
        return []
    if store.db_bytes() <= FULL_CHECK_MAX_BYTES:
        return store.check()
    return store.check_cheap()


def open_store_healing(path: str | os.PathLike[str], config: SpoolConfig) -> tuple[Store, str | None]:
    """Open (or create) the spool at `path` for a `Spool`; returns the store and, when the file had to be moved
    aside, what happened (also logged as an error, and recorded in the fresh file's meta as `last_error`, cleared
    by the next successful delivery, and as `moved_aside`, kept).

    A file that is not a spool database, or fails the check after an unclean close, is moved aside (`move_aside`)
    and a fresh spool is started. Raises `SpoolSchemaError` (file untouched) for a file from a newer span-spool,
    `SpoolError` / `OSError` when the file cannot be opened at all (permissions, a directory, a lock held too long).
    """
    p = Path(path)
    try:
        if not _sqlite_header(p):  # decided before SQLite opens it: SQLite would delete a -wal beside it on close
            raise SpoolCorruptError(f"{p} is not an SQLite database (no SQLite header)")
        store = Store(p, config)
    except SpoolCorruptError as exc:
        problem = str(exc)
    else:
        problems = _check(store)
        if not problems:
            _opened(store)
            return store, None
        store.close(checkpoint=False)
        problem = f"{p} failed its integrity check: {'; '.join(problems[:3])}"
    moved = move_aside(p)
    note = f"{problem}; moved it aside to {moved} and started a fresh spool"
    log.error("spool: %s", note)
    store = Store(p, config)
    store.set_error(note)  # shown by `stats()` / `spool stats` until a delivery succeeds
    store.set_meta("moved_aside", note)  # kept: the last file moved aside, for people and tools
    _opened(store)
    return store, note


def _sqlite_header(path: Path) -> bool:
    """False for a file that does not start like an SQLite database (missing, empty, being-created files are fine)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        return True
    magic = b"SQLite format 3\x00"
    # Zeros, or a prefix of the magic then zeros, is a file another process is creating right now, not garbage.
    return head == magic or magic.startswith(head.rstrip(b"\x00"))


def _opened(store: Store) -> None:
    """Mark the file in use until `close()` records a clean close."""
    store.set_meta("clean_close", 0)
    store.mark_clean_on_close = True
