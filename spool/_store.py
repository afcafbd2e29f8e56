"""The SQLite WAL store: plain, synchronous, one connection per `Store`.

Every method is one transaction and may block (disk, other processes' locks); the async layer runs them on the
connection's own thread. Rows are keyed by `(trace_id, span_id)`; each update bumps `version`, and delivery deletes
only the version that was sent. Nothing is deleted except by `complete` (delivered), `to_dead` (moved to the dead
table), `dead_purge` and the overflow policy (counted in `dropped_total`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._config import SpoolConfig
from ._errors import SpoolCorruptError, SpoolSchemaError
from ._items import Encoded
from ._stats import SpoolStats

__all__ = ["SCHEMA_VERSION", "Claimed", "DeadLetter", "Store", "spool_files"]

SCHEMA_VERSION = 1
_APP_ID = 0x5350_4F4C  # "SPOL": marks the file as a spool

_SCHEMA = """
CREATE TABLE spans (
    seq INTEGER PRIMARY KEY,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    is_end INTEGER NOT NULL,
    body BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    UNIQUE (trace_id, span_id)
);
CREATE INDEX spans_leased ON spans (lease_until) WHERE lease_until > 0;
CREATE INDEX spans_cooling ON spans (next_attempt_at) WHERE next_attempt_at > 0;
CREATE TABLE dead (
    id INTEGER PRIMARY KEY,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    name TEXT,
    body BLOB NOT NULL,
    status INTEGER,
    detail TEXT,
    attempts INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    failed_at REAL NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;
"""

_UPSERT = """
INSERT INTO spans (trace_id, span_id, is_end, body, enqueued_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (trace_id, span_id) DO UPDATE
    SET body = excluded.body, is_end = excluded.is_end, version = version + 1
    WHERE excluded.is_end OR NOT spans.is_end
"""


def spool_files(path: str | os.PathLike[str]) -> list[Path]:
    """The database file and its `-wal` / `-shm` companions."""
    p = Path(path)
    return [p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")]


@dataclass(frozen=True, slots=True)
class Claimed:
    """One leased row: what was sent, and which version of it."""

    seq: int
    version: int
    attempts: int
    body: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    trace_id: str
    span_id: str
    name: str | None
    status: int | None
    detail: str | None
    attempts: int
    failed_at: float

    def to_dict(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        return {
            "id": self.id,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "attempts": self.attempts,
            "failed_at": datetime.fromtimestamp(self.failed_at, UTC).isoformat(),
        }


class Store:
    """One connection to one spool file. Not thread-safe: use it from one thread at a time.

    `Store(path, config)` creates the file (mode 0600, directory 0700) or opens and migrates it. Raises
    `SpoolSchemaError` for a file from a newer span-spool and `SpoolCorruptError` for one that is not a spool
    (`create=False` raises `FileNotFoundError` when there is no file).
    """

    def __init__(self, path: str | os.PathLike[str], config: SpoolConfig | None = None, *, create: bool = True) -> None:
        self.path = Path(path)
        self.config = config or SpoolConfig()
        if not self.path.exists():
            if not create:
                raise FileNotFoundError(str(self.path))
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise SpoolCorruptError(f"{self.path} is not a readable spool database: {exc}") from exc
        except BaseException:
            self._db.close()
            raise

    # -- set-up ---------------------------------------------------------------------------------------------

    def _setup(self) -> None:
        db, cfg = self._db, self.config
        db.execute("PRAGMA busy_timeout = 30000")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        fresh = version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        if not fresh and app_id != _APP_ID:
            raise sqlite3.DatabaseError("not a span-spool database (application_id differs)")
        if version > SCHEMA_VERSION:
            raise SpoolSchemaError(
                f"{self.path} has schema version {version}, newer than this span-spool's {SCHEMA_VERSION}; "
                "upgrade span-spool to read it (the file was left untouched)"
            )
        if fresh:
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {cfg.synchronous}")
        # Keep the WAL well inside the disk cap: checkpoint after ~1/16 of it, truncate back to that size.
        wal_limit = max(256 * 1024, min(64 * 1024 * 1024, cfg.max_bytes // 16))
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        db.execute(f"PRAGMA wal_autocheckpoint = {max(16, wal_limit // page_size)}")
        db.execute(f"PRAGMA journal_size_limit = {wal_limit}")
        if fresh:
            with self._tx():
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute(f"PRAGMA application_id = {_APP_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        # (older schema versions would be migrated here, in one transaction)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with BEGIN IMMEDIATE so it never fails half-way on a lock upgrade."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.rollback()
            raise
        else:
            db.execute("COMMIT")

    def close(self) -> None:
        """Checkpoint and close. Idempotent."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()

    # -- meta (totals, last error) ----------------------------------------------------------------------------

    def _bump(self, key: str, n: int) -> None:
        if n:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = value + ?",
                (key, n, n),
            )

    def meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_error(self, text: str | None) -> None:
        """Record (or with None, clear) the last delivery error, with its time."""
        with self._tx() as db:
            if text is None:
                db.execute("DELETE FROM meta WHERE key IN ('last_error', 'last_error_at')")
            else:
                db.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [("last_error", text), ("last_error_at", time.time())],
                )

    def add_dropped(self, n: int) -> None:
        with self._tx():
            self._bump("dropped_total", n)

    # -- producer side ----------------------------------------------------------------------------------------

    def append(self, rows: Sequence[Encoded], now: float | None = None) -> None:
        """Commit `rows` in one transaction. An end replaces a pending start; a start never replaces an end."""
        t = time.time() if now is None else now
        with self._tx() as db:
            db.executemany(_UPSERT, [(r.trace_id, r.span_id, r.is_end, r.body, t) for r in rows])

    # -- drainer side -----------------------------------------------------------------------------------------

    def claim(self, owner: str, limit: int, lease_seconds: float, *, force: bool = False) -> list[Claimed]:
        """Lease up to `limit` deliverable rows, oldest first. `force` ignores cool-downs (not others' leases)."""
        now = time.time()
        cooled = "" if force else "AND next_attempt_at <= :now"
        with self._tx() as db:
            rows = db.execute(
                f"""UPDATE spans SET lease_owner = :owner, lease_until = :until
                    WHERE seq IN (SELECT seq FROM spans WHERE lease_until <= :now {cooled} ORDER BY seq LIMIT :n)
                    RETURNING seq, version, attempts, body""",
                {"owner": owner, "until": now + lease_seconds, "now": now, "n": limit},
            ).fetchall()
        rows.sort()
        return [Claimed(*r) for r in rows]

    def attempt_failed(self, owner: str, seqs: Iterable[int], lease_seconds: float) -> None:
        """Count one failed attempt on each row and renew the lease for the next one."""
        with self._tx() as db:
            db.executemany(
                "UPDATE spans SET attempts = attempts + 1, lease_until = ? WHERE seq = ? AND lease_owner = ?",
                [(time.time() + lease_seconds, s, owner) for s in seqs],
            )

    def complete(self, owner: str, sent: Sequence[Claimed]) -> int:
        """The sink took `sent`: delete exactly the versions sent, release rows updated meanwhile.

        Returns how many rows were deleted (added to `delivered_total` in the same transaction).
        """
        with self._tx() as db:
            before = db.total_changes
            db.executemany("DELETE FROM spans WHERE seq = ? AND version = ?", [(c.seq, c.version) for c in sent])
            deleted = db.total_changes - before
            if deleted < len(sent):
                self._release(owner, [c.seq for c in sent], None)
            self._bump("delivered_total", deleted)
        return deleted

    def release(self, owner: str, seqs: Sequence[int], next_attempt_at: float | None = None) -> None:
        """Give leased rows back; with `next_attempt_at`, they cool down until then."""
        with self._tx():
            self._release(owner, seqs, next_attempt_at)

    def _release(self, owner: str, seqs: Sequence[int], next_attempt_at: float | None) -> None:
        cool = "" if next_attempt_at is None else f", next_attempt_at = {float(next_attempt_at)!r}"
        self._db.executemany(
            f"UPDATE spans SET lease_owner = NULL, lease_until = 0{cool} WHERE seq = ? AND lease_owner = ?",
            [(s, owner) for s in seqs],
        )

    def release_owner(self, owner: str) -> None:
        """Release every lease `owner` holds (on close)."""
        with self._tx() as db:
            db.execute("UPDATE spans SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = ?", (owner,))

    def to_dead(self, owner: str, row: Claimed, status: int | None, detail: str | None) -> bool:
        """Move the sent version of a rejected row to the dead table. False if the row changed meanwhile
        (then it is released, and its newer version is tried)."""
        with self._tx() as db:
            moved = db.execute(
                """INSERT INTO dead (trace_id, span_id, name, body, status, detail, attempts, enqueued_at, failed_at)
                   SELECT trace_id, span_id, json_extract(body, '$.name'), body, ?, ?, attempts + 1, enqueued_at, ?
                   FROM spans WHERE seq = ? AND version = ?""",
                (status, detail, time.time(), row.seq, row.version),
            ).rowcount
            if moved:
                db.execute("DELETE FROM spans WHERE seq = ?", (row.seq,))
                self._bump("dead_total", 1)
            else:
                self._release(owner, [row.seq], None)
        return bool(moved)

    # -- reading ----------------------------------------------------------------------------------------------

    def db_bytes(self) -> int:
        total = 0
        for f in spool_files(self.path):
            with contextlib.suppress(OSError):
                total += f.stat().st_size
        return total

    def counts(self) -> tuple[int, int, float | None]:
        """(pending, inflight, oldest enqueue time) in one read transaction."""
        db, now = self._db, time.time()
        with _read(db):
            pending = db.execute("SELECT count(*) FROM spans").fetchone()[0]
            inflight = db.execute(
                "SELECT count(*) FROM spans WHERE lease_until > 0 AND lease_until > ?", (now,)
            ).fetchone()[0]
            oldest = db.execute("SELECT enqueued_at FROM spans ORDER BY seq LIMIT 1").fetchone()
        return pending, inflight, None if oldest is None else oldest[0]

    def blocked(self) -> int:
        """Rows that `claim(force=True)` cannot take now: leased by someone."""
        return int(
            self._db.execute(
                "SELECT count(*) FROM spans WHERE lease_until > 0 AND lease_until > ?", (time.time(),)
            ).fetchone()[0]
        )

    def stats(self, extra_dropped: int = 0) -> SpoolStats:
        db = self._db
        now = time.time()
        pending, inflight, oldest = self.counts()
        with _read(db):
            dead = db.execute("SELECT count(*) FROM dead").fetchone()[0]
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        return SpoolStats(
            pending=pending,
            inflight=inflight,
            dead=dead,
            oldest_age_s=None if oldest is None else max(0.0, now - oldest),
            db_bytes=self.db_bytes(),
            delivered_total=int(meta.get("delivered_total", 0)),
            dropped_total=int(meta.get("dropped_total", 0)) + extra_dropped,
            last_error=meta.get("last_error"),
        )

    # -- dead letters -----------------------------------------------------------------------------------------

    def dead_list(self, limit: int | None = None) -> list[DeadLetter]:
        rows = self._db.execute(
            "SELECT id, trace_id, span_id, name, status, detail, attempts, failed_at FROM dead ORDER BY id LIMIT ?",
            (-1 if limit is None else limit,),
        ).fetchall()
        return [DeadLetter(*r) for r in rows]

    def dead_ids(self, ids: Sequence[int]) -> set[int]:
        """Which of `ids` exist in the dead table."""
        db = self._db
        return {i for i in ids if db.execute("SELECT 1 FROM dead WHERE id = ?", (i,)).fetchone()}

    def dead_retry(self, ids: Sequence[int] | None) -> int:
        """Move dead letters (all when `ids` is None) back to pending with a fresh attempt count."""
        where, args = _id_filter(ids)
        with self._tx() as db:
            db.execute(
                f"""INSERT INTO spans (trace_id, span_id, is_end, body, enqueued_at)
                    SELECT trace_id, span_id, json_extract(body, '$.end_timestamp') IS NOT NULL, body, enqueued_at
                    FROM dead WHERE {where} ORDER BY id
                    ON CONFLICT (trace_id, span_id) DO NOTHING""",
                args,
            )
            return int(db.execute(f"DELETE FROM dead WHERE {where}", args).rowcount)

    def dead_purge(self, ids: Sequence[int] | None = None, older_than: float | None = None) -> int:
        """Delete dead letters: by id, all (`ids` None), or failed more than `older_than` seconds ago."""
        where, args = _id_filter(ids)
        if older_than is not None:
            where, args = f"({where}) AND failed_at < ?", [*args, time.time() - older_than]
        with self._tx() as db:
            return int(db.execute(f"DELETE FROM dead WHERE {where}", args).rowcount)


def _id_filter(ids: Sequence[int] | None) -> tuple[str, list[Any]]:
    if ids is None:
        return "1", []
    return f"id IN ({','.join('?' * len(ids))})", list(ids)


@contextlib.contextmanager
def _read(db: sqlite3.Connection) -> Iterator[None]:
    """A read transaction, so several SELECTs see one snapshot."""
    db.execute("BEGIN")
    try:
        yield
    finally:
        db.execute("COMMIT")
