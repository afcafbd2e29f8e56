"""Where the CLI meets the library, without typer (the fast `stats` path uses it too): opening a spool file for a
command, and the one place that turns library, SQLite and OS errors into the text of an `Error:` line."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

from .._config import SpoolConfig, default_path
from .._errors import SpoolCorruptError, SpoolError
from .._store import Store, check_path, damage_error, is_damage

__all__ = [
    "ERRORS",
    "check_before_write",
    "error_line",
    "existing",
    "naming_damage",
    "open_store",
    "report",
    "resolve_path",
]

ERRORS = (SpoolError, sqlite3.Error, OSError, ExceptionGroup)
"""What a command may raise to end with an `Error:` line (exit 2) rather than a traceback (a group: when one of
its errors is one of the others, e.g. from the drainer's task group)."""


def _leaf(exc: BaseException) -> BaseException:
    """The first error of a group (depth first) that is one of `ERRORS`; `exc` itself when it is not a group."""
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _leaf(sub)
            if not isinstance(found, BaseExceptionGroup) and isinstance(found, ERRORS):
                return found
    return exc


def error_line(exc: BaseException) -> str | None:
    """The `Error:` text for a library, SQLite or OS error (or a group holding one); None for anything else (a
    bug: let it show)."""
    exc = _leaf(exc)
    if isinstance(exc, SpoolError):
        return str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and is_damage(exc):
        return f"the spool file is damaged ({exc}); run: spool recover --path PATH --out NEW.db"
    if isinstance(exc, sqlite3.Error):
        return f"SQLite: {exc}"
    if isinstance(exc, (NotADirectoryError, FileExistsError)) and exc.filename:
        return f"{exc.filename} is not a directory"
    if isinstance(exc, OSError):
        return f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
    return None


def report(exc: BaseException) -> int:
    """Print the `Error:` line for `exc` on stderr and return the exit code (2); an error that is none of ours (a
    bug) is raised again, with its traceback."""
    line = error_line(exc)
    if line is None:
        raise exc
    print(f"Error: {line}", file=sys.stderr)
    return 2


def resolve_path(path: Path | None) -> Path:
    """`--path`, else the default (`$SPOOL_PATH`, else the XDG state directory). Raises `SpoolError` for a symbolic
    link or a directory."""
    p = path if path is not None else default_path()
    check_path(p)
    return p


def existing(path: Path | None) -> Path:
    """The spool path (`resolve_path`), which must exist: a missing file is `SpoolError("no spool at PATH")`, so a
    wrong path never looks like an empty spool."""
    p = resolve_path(path)
    if not p.exists():
        raise SpoolError(f"no spool at {p}")
    return p


@contextlib.contextmanager
def naming_damage(path: Path) -> Iterator[None]:
    """Damage SQLite reports inside the block is raised as `SpoolCorruptError` naming `path`."""
    try:
        yield
    except (sqlite3.DatabaseError, ExceptionGroup) as exc:
        leaf = _leaf(exc)
        if isinstance(leaf, sqlite3.DatabaseError) and is_damage(leaf):
            raise damage_error(path, leaf) from None
        raise


@contextlib.contextmanager
def open_store(path: Path | None, *, write: bool = False) -> Iterator[Store]:
    """Open an existing spool file for a command: read-only (nothing is written to it, whatever happens; the
    environment's `SPOOL_*` settings are not read) unless `write`. Damage met while the command reads it is
    `SpoolCorruptError` naming the file."""
    p = existing(path)
    if write:
        check_before_write(p)
    store = Store(p, SpoolConfig() if write else SpoolConfig.defaults(), create=False, readonly=not write)
    try:
        with naming_damage(p):
            yield store
    finally:
        store.close()


def check_before_write(path: Path) -> None:
    """For a command that writes: look at the whole file read-only first (`Store.check_quick`), and raise
    `SpoolCorruptError` naming it when SQLite finds damage, so that the file is left byte for byte as it was."""
    store = Store(path, SpoolConfig.defaults(), create=False, readonly=True)
    try:
        with naming_damage(path):
            problems = store.check_quick()
    finally:
        store.close()
    if problems:
        raise SpoolCorruptError(path, "; ".join(problems[:3]))
