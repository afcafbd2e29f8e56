"""The parts of a `Store` every other part uses: the file and its connection, a write transaction, `meta`, and the
file-level helpers (sizes, SQLite's error codes, read-only URIs).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeAlias, TypeVar

from ._blobs import Split, whole
from ._config import SpoolConfig
from ._errors import SpoolCorruptError, SpoolError
from ._items import Encoded
from ._leases import LeaseBook

__all__ = [
    "HEADROOM",
    "MAX_SEQ",
    "RECLAIM_MIN",
    "SHM_RESERVE",
    "Row",
    "StoreBase",
    "bytes_of",
    "check_path",
    "damage_error",
    "file_size",
    "files_size",
    "fs_free",
    "has_sqlite_header",
    "heals",
    "id_filter",
    "is_busy",
    "is_damage",
    "make_dirs",
    "missing_dir",
    "reading",
    "readonly_uri",
    "spool_files",
    "wal_limit",
    "whole_row",
]


Row: TypeAlias = Encoded | Split
"""A row to append: an encoded item, whole or with its large repeated string apart."""

P = ParamSpec("P")

R = TypeVar("R")

_KiB = 1024

_MiB = 1024 * _KiB

SHM_RESERVE = 32 * _KiB  # the WAL index: 32 KiB per 4096 WAL frames, and our WAL stays far below that

HEADROOM = 256 * _KiB  # filesystem space the producers leave to the drain side (see `Store._room`)

RECLAIM_MIN = 4 * _MiB  # free pages kept for reuse before `reclaim` gives them back

_CORRUPT_CODES = frozenset({sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT})

MAX_SEQ = 2**63 - 1


def spool_files(path: str | os.PathLike[str]) -> list[Path]:
    """The database file and its `-wal` / `-shm` companions."""
    p = Path(path)
    return [p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")]


def check_path(path: Path) -> None:
    """Raise `SpoolError` for a spool path that is a symbolic link (a dangling one would make SQLite create the file
    wherever it points) or a directory."""
    if path.is_symlink():
        raise SpoolError(f"{path} is a symbolic link; give the file's real path")
    if path.is_dir():
        raise SpoolError(f"{path} is a directory; give the spool file's path (e.g. {path / 'spans.db'})")


def missing_dir(directory: Path) -> str:
    """Why files cannot be made in `directory` (for commands that never create directories)."""
    if directory.exists():
        return f"{directory} is not a directory"
    return f"{directory} does not exist (create it first: this command never creates directories)"


def make_dirs(directory: Path) -> None:
    """Create `directory` and its missing parents, each 0700 whatever the umask (a spool holds prompts)."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):  # (another process made it meanwhile)
            d.mkdir(mode=0o700)
            os.chmod(d, 0o700)


def wal_limit(max_bytes: int) -> int:
    """WAL bytes between checkpoints (and what the WAL file is truncated back to): 1/16 of the disk cap, 64 KiB
    to 16 MiB. Each checkpoint syncs the files: at 4 MiB (SQLite's default) appending and draining together ran
    ~25% slower. `reclaim` truncates a WAL above 4 MiB once a drain ends, so an idle spool stays small."""
    return max(64 * _KiB, min(16 * _MiB, max_bytes // 16))


def is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock. Retry; never a reason to drop data."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def is_damage(exc: sqlite3.Error) -> bool:
    """SQLite reports the file as damaged (SQLITE_CORRUPT, SQLITE_NOTADB)."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in _CORRUPT_CODES


def has_sqlite_header(path: Path) -> bool:
    """False for a file that does not start like an SQLite database (missing, empty, being-created files are fine)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        return True
    magic = b"SQLite format 3\x00"
    # Zeros, or a prefix of the magic then zeros, is a file another process is creating right now, not garbage.
    return head == magic or magic.startswith(head.rstrip(b"\x00"))


def readonly_uri(path: Path, *, immutable: bool = False) -> str:
    """The URI that opens `path` read-only in SQLite (`immutable`: without the WAL index, for a file with no WAL)."""
    return path.absolute().as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")


def damage_error(path: Path, exc: sqlite3.Error) -> SpoolCorruptError:
    """The error for a file SQLite could not read: damaged (SQLite's words), or not an SQLite file at all."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if size == 0 or not has_sqlite_header(path):
        return SpoolCorruptError(path)
    return SpoolCorruptError(path, str(exc))


def fs_free(path: Path) -> int:
    """Bytes the filesystem holding `path` gives an unprivileged writer; very large when it cannot tell (no statvfs,
    or one that reports 0 blocks in all: FUSE, some network filesystems), so that only `max_bytes` applies."""
    try:
        st = os.statvfs(path.parent)
    except (OSError, AttributeError):  # no statvfs (Windows), or the directory is gone
        return 1 << 62
    if st.f_blocks == 0:
        return 1 << 62
    return st.f_bavail * st.f_frsize


def files_size(path: Path) -> int:
    return sum(map(file_size, spool_files(path)))


def file_size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def whole_row(r: Row) -> Encoded:
    return Encoded(r.trace_id, r.span_id, r.is_end, bytes_of(r)) if isinstance(r, Split) else r


def bytes_of(r: Row) -> bytes:
    return whole(r.body, r.at, r.data) if isinstance(r, Split) else r.body


def id_filter(ids: Sequence[int] | None) -> tuple[str, list[Any]]:
    if ids is None:
        return "1", []
    return f"id IN ({','.join('?' * len(ids))})", list(ids)


@contextlib.contextmanager
def reading(db: sqlite3.Connection) -> Iterator[None]:
    """A read transaction, so several SELECTs see one snapshot."""
    db.execute("BEGIN")
    try:
        yield
    finally:
        db.execute("COMMIT")


def heals(method: Callable[P, R]) -> Callable[P, R]:
    """A `Store` method a running `Spool` calls: when SQLite reports the file damaged and the store has an
    `on_damage` healer, the healer moves the file aside and reopens the store on a fresh file, and the call is made
    once more there (an append lands in the fresh file; a claim finds nothing; a completion deletes nothing)."""

    @functools.wraps(method)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        store: StoreBase = args[0]  # type: ignore[assignment]
        try:
            return method(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if store.on_damage is None or not is_damage(exc):
                raise
            store.on_damage(store, exc)
        return method(*args, **kwargs)

    return run


class StoreBase:
    """What every part of a `Store` shares: its connection and file, one write transaction (`_tx`), and the `meta`
    table (totals, the last error). Attributes are set by `Store.__init__`."""

    path: Path
    config: SpoolConfig
    readonly: bool
    inode: int
    chunk_bytes: int
    claim_bytes: int
    ended_keep: int
    mark_clean_on_close: bool
    on_damage: Callable[[Any, sqlite3.DatabaseError], None] | None  # given the `Store`
    full: str
    _db: sqlite3.Connection
    _wal_path: Path
    _shm_path: Path
    _wal_limit: int
    _page_size: int
    leases: LeaseBook
    lease_bound: float
    records_ends: bool
    """Delivered ends are recorded (`ended_keys`), so a late start is never sent after its end: a format whose
    rows can be starts (`Format.has_starts`)."""
    _ended_new: int
    _ended_forgot_at: float
    _ended_looked: float | None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with BEGIN IMMEDIATE so it never fails half-way on a lock upgrade."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")  # may fail too (disk full): then roll back, never leave the transaction open
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.rollback()
            raise

    def _bump(self, key: str, n: int) -> None:
        if n:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = value + ?",
                (key, n, n),
            )

    def meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    @heals
    def set_error(self, text: str | None) -> None:
        """Record (or with None, clear) the last delivery error, with its time."""
        with self._tx() as db:
            if text is None:
                db.execute("DELETE FROM meta WHERE key IN ('last_error', 'last_error_at')")
            else:
                self._record_error(text)

    def _record_error(self, text: str) -> None:
        """`last_error` and its time, inside the caller's transaction."""
        rows = [("last_error", text), ("last_error_at", time.time())]
        self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows)

    @heals
    def set_meta(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
