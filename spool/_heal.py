"""Opening a spool file for a `Spool`: a file that is not a usable spool is moved aside, never deleted.

Only the `Spool` heals; the CLI's read commands open with `Store(path, create=False)` and report problems instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from ._config import SpoolConfig
from ._errors import SpoolCorruptError, SpoolError
from ._store import Store, check_path, has_sqlite_header, is_damage, spool_files

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


def open_store_healing(
    path: str | os.PathLike[str], config: SpoolConfig, *, heal: bool = True
) -> tuple[Store, str | None]:
    """Open (or create) the spool at `path` for a `Spool`; returns the store and, when the file had to be moved
    aside, what happened (also logged as an error, and recorded in the fresh file's meta as `last_error`, cleared
    by the next successful delivery, and as `moved_aside`, kept).

    A file that is not a spool database, or fails the check after an unclean close, is moved aside (`move_aside`)
    and a fresh spool is started. The store heals the same way when a query finds the file damaged later
    (`Store.on_damage`). Raises `SpoolSchemaError` (file untouched) for a file from a newer span-spool,
    `SpoolError` / `OSError` when the file cannot be opened at all (permissions, a directory, a lock held too long).
    `heal=False` (a command, which must not move files): raises `SpoolCorruptError` instead of moving aside, then
    and later.
    """
    p = Path(path)
    check_path(p)
    try:
        if not has_sqlite_header(p):  # decided before SQLite opens it: SQLite would delete a -wal beside it on close
            raise SpoolCorruptError(p)
        store = Store(p, config)
    except SpoolCorruptError as exc:
        if not heal:
            raise
        problem = _problem(exc)
    else:
        try:
            problems = _check(store)
            if not problems:
                _opened(store, heal)
                return store, None
        except sqlite3.DatabaseError as exc:  # met while checking or marking the file
            if not is_damage(exc):
                store.close(checkpoint=False)
                raise SpoolError(f"cannot open {p}: {exc}") from exc
            problems = [str(exc)]
        store.close(checkpoint=False)
        if not heal:
            raise SpoolCorruptError(p, "; ".join(problems[:3]))
        problem = f"{p} failed its integrity check: {'; '.join(problems[:3])}"
    moved = move_aside(p)
    store = Store(p, config)
    return store, _started_fresh(store, problem, moved)


def _problem(exc: SpoolCorruptError) -> str:
    return f"{exc.path} is not a spool file" if exc.damage is None else f"{exc.path} is damaged ({exc.damage})"


def _started_fresh(store: Store, problem: str, moved: Path) -> str:
    """Record on the fresh store (`last_error` until a delivery succeeds, `moved_aside` kept) and in the log, once,
    that the file was moved aside; mark it in use. Returns the note."""
    note = f"{problem}; moved it aside to {moved} and started a fresh spool (salvage it: spool recover --path {moved}"
    note += " --out NEW.db)"
    log.error("spool: %s", note)
    store.set_error(note)  # shown by `stats()` / `spool stats` until a delivery succeeds
    store.set_meta("moved_aside", note)  # kept: the last file moved aside, for people and tools
    _opened(store)
    return note


def _heal_running(store: Store, exc: sqlite3.DatabaseError) -> None:
    """`Store.on_damage` of a `Spool`'s store: a query found the file damaged. Move it aside (unless another
    process already did: the file at the path is not ours any more) and go on with a fresh one."""
    store.on_damage = None  # while healing: a damaged fresh file must not loop
    try:
        with contextlib.suppress(sqlite3.Error):
            store.close(checkpoint=False)
        try:
            ours = os.stat(store.path).st_ino == store.inode
        except FileNotFoundError:
            ours = False
        if ours:
            moved = move_aside(store.path)
            store.reopen()
            _started_fresh(store, f"{store.path} is damaged ({exc})", moved)
        else:
            store.reopen()
            _opened(store)
    finally:
        store.on_damage = _heal_running


def _opened(store: Store, heal: bool = True) -> None:
    """Mark the file in use until `close()` records a clean close, and (`heal`) heal it if it turns out damaged
    later."""
    store.set_meta("clean_close", 0)
    store.mark_clean_on_close = True
    if heal:
        store.on_damage = _heal_running
