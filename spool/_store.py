"""The SQLite WAL store: plain, synchronous, one connection per `Store`.

Every method is one transaction and may block (disk, other processes' locks); the async layer runs them on the
connection's own thread. A `Store` is three parts behind one façade, each in its own module, by who calls it:
`Schema` (creating, checking, migrating the file: at open), `Queue` (append with its cap, claim, complete, release,
dead letters: the spool's writer and drainer) and `Inspection` (stats, detail, bodies, checks, dead-letter listing:
people and tools). What they share (the connection, `_tx`, `meta`, the file's helpers) is `StoreBase`. This module
opens and closes the file and keeps the WAL within its limit (`checkpoint`, `reclaim`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from ._config import SpoolConfig
from ._errors import SpoolError
from ._inspect import STATS_SQL, TOP_TRACES_MAX_ROWS, DeadLetter, Inspection, stats_of
from ._leases import LeaseBook
from ._queue import ENDED_MAX, ENDED_SECONDS, Claimed, Queue, body_bytes, row_cost, rows_cost, split_rows
from ._schema import SCHEMA_VERSION, WHOLE_BODY, Schema, register_functions, span_key
from ._storebase import (
    RECLAIM_MIN,
    Row,
    check_path,
    damage_error,
    file_size,
    files_size,
    fs_free,
    has_sqlite_header,
    is_busy,
    is_damage,
    make_dirs,
    readonly_uri,
    spool_files,
    wal_limit,
)

__all__ = [
    "ENDED_MAX",
    "ENDED_SECONDS",
    "SCHEMA_VERSION",
    "STATS_SQL",
    "TOP_TRACES_MAX_ROWS",
    "WHOLE_BODY",
    "Claimed",
    "DeadLetter",
    "Row",
    "Store",
    "body_bytes",
    "check_path",
    "damage_error",
    "has_sqlite_header",
    "is_busy",
    "is_damage",
    "readonly_uri",
    "register_functions",
    "row_cost",
    "rows_cost",
    "span_key",
    "split_rows",
    "spool_files",
    "stats_of",
    "wal_limit",
]


class Store(Schema, Queue, Inspection):
    """One connection to one spool file. Not thread-safe: use it from one thread at a time.

    `Store(path, config)` creates the file (mode 0600, directory 0700) or opens and migrates it. Raises
    `SpoolSchemaError` for a file from a newer span-spool, `SpoolCorruptError` for one that is not a spool or is
    damaged where opening reads, `SpoolError` for one that cannot be opened (permissions, a directory, a lock held
    past the busy timeout); `create=False` raises `FileNotFoundError` when there is no file. Never moves or deletes
    a file: a `Spool` heals through `spool._heal` (`on_damage`).

    `readonly=True` (the CLI's read commands) opens the file with SQLite's `mode=ro`: nothing is written to it (no
    migration, index, checkpoint or clean-close mark), and an empty file is `SpoolCorruptError` (not a spool).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: SpoolConfig | None = None,
        *,
        create: bool = True,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.config = config or SpoolConfig()
        self.readonly = readonly
        check_path(self.path)
        if not self.path.exists():
            if not create or readonly:
                raise FileNotFoundError(str(self.path))
            make_dirs(self.path.parent)
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600))
        self._wal_path, self._shm_path = spool_files(self.path)[1:]
        self._names = [os.fspath(f) for f in spool_files(self.path)]
        # The WAL is sized on what the spool can really grow to: the cap, or the filesystem when that is smaller.
        self._wal_limit = wal_limit(min(self.config.max_bytes, fs_free(self.path) + files_size(self.path)))
        self.chunk_bytes = self._wal_limit // 2
        """Estimated bytes per commit: a checkpoint runs once the WAL passes half its limit, so a commit of this size
        still ends inside the limit (see `split_rows`)."""
        self.ended_keep = min(ENDED_MAX, self.config.max_bytes // 16 // 64)
        """Delivered ends remembered (each ~50 bytes on disk): the last 100,000 (fewer under a cap below 100 MiB: the
        record takes at most 1/16 of it), and those of the last `ENDED_SECONDS`, whichever are fewer. Up to a 16th
        more wait to be forgotten in bulk (`_forget_ends`)."""
        self._ended_new, self._ended_forgot_at, self._ended_looked = 0, float("-inf"), None
        self.records_ends = True  # (until the file's format says otherwise: `claim_format`)
        self.leases = LeaseBook()
        """This process's judgement of the file's leases (`spool._leases`): dead owners, clocks ahead or behind."""
        cfg = self.config
        self.lease_bound = cfg.lease_seconds + max(cfg.request_timeout, cfg.backoff_max)
        """The longest a lease can run from its last renewal: a lease further ahead was written by a clock ahead."""
        self.claim_bytes = self.chunk_bytes // 2
        """Body bytes one claim takes at most (and at least one row): deleting rows writes about twice their bytes
        to the WAL (their pages, the index's), so a batch's delete also ends inside the WAL's limit."""
        self.mark_clean_on_close = False
        """Set by the `Spool`'s opener: `close()` then records a clean close (the next open skips the check)."""
        self.on_damage = None
        """Set by the `Spool`'s opener: called when a query finds the file damaged; it moves the file aside and
        `reopen`s this store on a fresh one, and the call that met the damage is made once more (`heals`)."""
        self.full = ""
        """What limited the last `append` that had to refuse rows: the disk cap or the filesystem."""
        self._page_size = 4096
        self._open()

    def _open(self) -> None:
        """Connect and set up; the file's identity is kept, so a healer can tell whether it was replaced."""
        try:
            self._db = self._connect()
            self.inode = os.stat(self.path).st_ino
        except (sqlite3.Error, OSError) as exc:
            raise SpoolError(f"cannot open {self.path}: {exc}") from exc
        try:
            try:
                self._setup()
            except sqlite3.OperationalError:
                # Read-only, and SQLite may not create the WAL index (`-shm`) here (another user's directory): a
                # file with no WAL beside it can still be read as immutable, which needs no index.
                if not self.readonly or self._wal_path.exists():
                    raise
                self._db.close()
                self._db = self._connect(immutable=True)
                self._setup()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if is_damage(exc):
                raise damage_error(self.path, exc) from exc
            raise SpoolError(f"cannot open {self.path}: {exc}") from exc
        except BaseException:
            self._db.close()
            raise

    def _connect(self, *, immutable: bool = False) -> sqlite3.Connection:
        target = readonly_uri(self.path, immutable=immutable) if self.readonly else str(self.path)
        db = sqlite3.connect(target, uri=self.readonly, isolation_level=None, check_same_thread=False, timeout=30.0)
        register_functions(db)
        return db

    def reopen(self) -> None:
        """Close the connection (no checkpoint) and open the file at `path` again (a fresh one, when it was moved)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._open()

    def close(self, *, checkpoint: bool = True) -> None:
        """Checkpoint (truncating the WAL) and close; with `mark_clean_on_close`, first record the clean close.
        `checkpoint=False` only closes. Idempotent."""
        if checkpoint and not self.readonly:
            if self.mark_clean_on_close:
                self.mark_clean_on_close = False
                with contextlib.suppress(sqlite3.Error):
                    self.set_meta("clean_close", 1)
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()

    def near_cap(self) -> bool:
        """The three files are within two WAL limits of `max_bytes` (any thread: it only looks at file sizes; ~8 µs,
        it runs with every commit and delete)."""
        size = 0
        for name in self._names:
            with contextlib.suppress(OSError):  # (no WAL yet)
                size += os.stat(name).st_size
        return size + 2 * self._wal_limit > self.config.max_bytes

    def checkpoint(self) -> None:
        """Copy the WAL back into the file as far as no reader holds it (PASSIVE: never waits; nothing to do is
        cheap), so the next transaction can start the WAL over instead of growing it. Best effort: a full or failing
        disk is left to the transaction that follows."""
        with contextlib.suppress(sqlite3.OperationalError):
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def reclaim(self, max_pages: int = 256) -> int:
        """Give free pages back to the file system: at most `max_pages` in one short write transaction, while more
        than 4 MiB (1/8 of a small cap) is free; after the last step (or at once, with a WAL over 4 MiB and little
        free), checkpoint and truncate the WAL. Never waits for another connection's lock and never raises (a busy or
        failing file: nothing is reclaimed this time). Returns the pages given back; call it again while that is > 0."""
        db = self._db
        db.execute("PRAGMA busy_timeout = 0")  # someone else is writing or reading: skip rather than stall our writer
        try:
            free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
            keep = min(RECLAIM_MIN, self.config.max_bytes // 8) // self._page_size
            if free <= keep:
                if file_size(self._wal_path) > RECLAIM_MIN:
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                return 0
            try:
                db.executescript(f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({int(max_pages)}); COMMIT;")
            finally:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.rollback()
            left = int(db.execute("PRAGMA freelist_count").fetchone()[0])
            if left <= keep:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            return max(0, free - left)
        except sqlite3.Error:
            return 0
        finally:
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA busy_timeout = 30000")
