"""The SQLite WAL store: plain, synchronous, one connection per `Store`.

Every method is one transaction and may block (disk, other processes' locks); the async layer runs them on the
connection's own thread. Rows are keyed by `(trace_id, span_id)`; each update bumps `version`, and delivery deletes
only the version that was sent. Nothing is deleted except by `complete` (delivered), `to_dead` (moved to the dead
table), `dead_purge` and the overflow policy (counted in `dropped_total`).

Leases: a claim takes up to `limit` deliverable rows from the first run of `seq`s that no live lease covers, and
records one row in `leases` (owner, the claim's first and last `seq`, `until`): the span rows themselves are not
rewritten, which halves the cost of a claim. Other drainers skip every `seq` inside a live lease's range until it
ends (completed, released, or expired; expired leases are deleted by the next claim, and a lease that is gone cannot
be renewed, so its holder drops the rows it had not sent yet).
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import functools
import itertools
import operator
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, ParamSpec, TypeAlias, TypeVar

from ._blobs import Split, key64, whole
from ._config import SpoolConfig
from ._errors import SpoolCorruptError, SpoolError, SpoolSchemaError
from ._items import Encoded
from ._stats import SpoolStats

Row: TypeAlias = Encoded | Split
"""A row to append: an encoded item, whole or with its large repeated string apart."""

__all__ = [
    "SCHEMA_VERSION",
    "STATS_SQL",
    "WHOLE_BODY",
    "Claimed",
    "DeadLetter",
    "Store",
    "body_bytes",
    "damage_error",
    "has_sqlite_header",
    "is_busy",
    "is_damage",
    "readonly_uri",
    "register_functions",
    "row_cost",
    "split_rows",
    "spool_files",
    "stats_of",
    "wal_limit",
]

SCHEMA_VERSION = 3
P = ParamSpec("P")
R = TypeVar("R")


def _v1_to_v2(db: sqlite3.Connection) -> None:
    """Schema 2 leases ranges of rows (table `leases`) instead of writing `lease_owner`/`lease_until` into each row.
    The two old columns stay (dropping them rewrites the table) but are no longer read; leases held in them by a
    drainer of schema 1 are not honoured after the upgrade (at worst a batch is sent twice)."""
    db.execute(
        "CREATE TABLE leases (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,"
        " until REAL NOT NULL)"
    )
    db.execute("DROP INDEX IF EXISTS spans_leased")


def _v2_to_v3(db: sqlite3.Connection) -> None:
    """Schema 3 stores a large repeated string once (`blobs`, see `spool._blobs`): rows of spans and dead letters
    may reference one. Rows written before keep their whole bytes (`blob` NULL)."""
    for table in ("spans", "dead"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN blob INTEGER")
        db.execute(f"ALTER TABLE {table} ADD COLUMN blob_at INTEGER")
    for stmt in _BLOBS_DDL:
        db.execute(stmt)


_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3}
"""`_MIGRATIONS[n]` turns a schema-`n` file into schema `n + 1`; `Store` runs the chain in one transaction."""
TOP_TRACES_MAX_ROWS = 100_000
"""Above this many pending rows, `Store.stats_detail` skips counting the top traces unless asked (time budget)."""
_MAX_SEQ = 2**63 - 1
_APP_ID = 0x5350_4F4C  # "SPOL": marks the file as a spool

_ENDED_TABLE = """
CREATE TABLE IF NOT EXISTS ended_keys (id INTEGER PRIMARY KEY, key INTEGER NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ended_keys_key ON ended_keys (key);
"""
"""Delivered ends (the last hour's, at most `Store.ended_keep`), by `span_key`: a start of one of them is never stored
again. Rows are appended in time order (the oldest are a prefix, forgotten in bulk) and the index holds 8-byte keys:
~4x less disk and WAL traffic per delivered end than the ids themselves."""
ENDED_SECONDS = 3600.0
ENDED_MAX = 100_000

_SCHEMA = (
    """
CREATE TABLE spans (
    seq INTEGER PRIMARY KEY,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    is_end INTEGER NOT NULL,
    body BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    blob INTEGER,
    blob_at INTEGER,
    UNIQUE (trace_id, span_id)
);
CREATE INDEX spans_cooling ON spans (next_attempt_at) WHERE next_attempt_at > 0;
CREATE INDEX spans_attempted ON spans (attempts) WHERE attempts > 0;
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
    failed_at REAL NOT NULL,
    blob INTEGER,
    blob_at INTEGER
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;
CREATE TABLE leases (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    until REAL NOT NULL);
"""
    + _ENDED_TABLE
)

_FORGET_BLOB = """DELETE FROM blobs WHERE key = {key} AND NOT EXISTS (SELECT 1 FROM spans WHERE blob = {key})
    AND NOT EXISTS (SELECT 1 FROM dead WHERE blob = {key})"""
_UNUSED = _FORGET_BLOB.format(key="old.blob") + ";"
_BLOBS_DDL = (
    "CREATE TABLE blobs (key INTEGER PRIMARY KEY, data BLOB NOT NULL)",
    "CREATE INDEX spans_blob ON spans (blob) WHERE blob IS NOT NULL",
    "CREATE INDEX dead_blob ON dead (blob) WHERE blob IS NOT NULL",
    f"CREATE TRIGGER spans_blob_gone AFTER DELETE ON spans WHEN old.blob IS NOT NULL BEGIN {_UNUSED} END",
    f"""CREATE TRIGGER spans_blob_moved AFTER UPDATE OF blob ON spans
        WHEN old.blob IS NOT NULL AND old.blob IS NOT new.blob BEGIN {_UNUSED} END""",
    f"CREATE TRIGGER dead_blob_gone AFTER DELETE ON dead WHEN old.blob IS NOT NULL BEGIN {_UNUSED} END",
)
"""Large repeated strings, stored once (`spool._blobs`): a row with `blob` holds its bytes with `""` at `blob_at`
where `blobs.data` goes. A blob no row references any more is deleted with the last reference (the triggers), on
every path: delivery, the cap's evictions, dead letters purged, an end replacing a start."""
WHOLE_BODY = (
    "CASE WHEN blob IS NULL THEN body ELSE spool_body(body, blob_at, (SELECT data FROM blobs WHERE key = blob)) END"
)
"""A row's whole bytes (of `spans` or `dead`), exactly as `put` encoded them."""


STATS_SQL = """SELECT (SELECT count(*) FROM spans),
    (SELECT count(*) FROM leases AS l JOIN spans AS s ON s.seq BETWEEN l.lo AND l.hi WHERE l.until > ?1),
    (SELECT enqueued_at FROM spans ORDER BY seq LIMIT 1),
    (SELECT count(*) FROM dead),
    (SELECT value FROM meta WHERE key = 'delivered_total'),
    (SELECT value FROM meta WHERE key = 'dropped_total'),
    (SELECT value FROM meta WHERE key = 'last_error')"""
"""`SpoolStats`' numbers from the file, in one statement (one snapshot; ?1 is now). Live leases never overlap (a
claim takes only rows no live lease covers), so the in-flight count is a sum over them."""


def stats_of(row: Sequence[Any], now: float, db_bytes: int, extra_dropped: int = 0) -> SpoolStats:
    """`SpoolStats` from a row of `STATS_SQL` read at `now`."""
    pending, inflight, oldest, dead, delivered, dropped, last_error = row
    return SpoolStats(
        pending=pending,
        inflight=inflight,
        dead=dead,
        oldest_age_s=None if oldest is None else max(0.0, now - oldest),
        db_bytes=db_bytes,
        delivered_total=int(delivered or 0),
        dropped_total=int(dropped or 0) + extra_dropped,
        last_error=last_error,
    )


def _spool_body(body: bytes, at: int, data: bytes | None) -> bytes:
    if data is None:
        raise ValueError("a span references a blob that is not in the file")
    return whole(body, at, data)


def register_functions(db: sqlite3.Connection) -> None:
    """The SQL functions a spool's statements use (`span_key`, and `spool_body` of `WHOLE_BODY`)."""
    db.create_function("span_key", 2, span_key, deterministic=True)
    db.create_function("spool_body", 3, _spool_body, deterministic=True)


_ATTEMPTED_INDEX = "CREATE INDEX IF NOT EXISTS spans_attempted ON spans (attempts) WHERE attempts > 0"

_REPLACE_ROW = """SET body = excluded.body, is_end = excluded.is_end, version = version + 1, blob = excluded.blob,
        blob_at = excluded.blob_at"""
"""What an upsert that wins writes: the new bytes (and blob reference), one version up."""
_ON_CONFLICT = f"""
ON CONFLICT (trace_id, span_id) DO UPDATE
    {_REPLACE_ROW}
    WHERE (excluded.is_end OR NOT spans.is_end)
        AND (spans.body != excluded.body OR spans.blob IS NOT excluded.blob OR spans.blob_at IS NOT excluded.blob_at)
"""
# (identical bytes are not an update: a repeated put or re-import does not bump `version`, so a batch in flight
# with those bytes is still deleted once delivered instead of being sent again)
_INSERT = "INSERT INTO spans (trace_id, span_id, is_end, body, enqueued_at) SELECT column1, column2, column3, column4, "
_NOT_ENDED = """ AS v WHERE column3 OR NOT EXISTS
    (SELECT 1 FROM ended_keys WHERE key = span_key(v.column1, v.column2))"""
"""A start whose end was delivered (see `ended`) is not stored: sent after its end, it would undo it."""
_UPSERT_SPLIT = (
    "INSERT INTO spans (trace_id, span_id, is_end, body, blob, blob_at, enqueued_at)"
    " SELECT column1, column2, column3, column4, column5, column6, ?7 FROM (VALUES (?1, ?2, ?3, ?4, ?5, ?6))"
    + _NOT_ENDED
    + _ON_CONFLICT
)
"""`_UPSERT` of a `Split` row: its bytes with the blob cut out, the blob's key and place."""
_UPSERT = _INSERT + "?5 FROM (VALUES (?1, ?2, ?3, ?4))" + _NOT_ENDED + _ON_CONFLICT
_BLOCK = 64
_UPSERT_BLOCK = (
    _INSERT
    + "?1 FROM (VALUES "
    + ", ".join(f"(?{i + 2}, ?{i + 3}, ?{i + 4}, ?{i + 5})" for i in range(0, 4 * _BLOCK, 4))
    + ")"
    + _NOT_ENDED
    + _ON_CONFLICT
)
"""`_UPSERT` of `_BLOCK` rows in one statement: ?1 is `enqueued_at`, then the 4 fields of each `Encoded`. SQLite takes
the rows of a VALUES list one at a time, as it takes those of an `executemany`, so a later row of a span meets an
earlier one in the same statement as a conflict, exactly as it would in the next execution. One statement per 64 rows
costs ~25% fewer instructions than 64 executions of one row (measured: 2,000 rows of ~1 KB, SQLite 3.40)."""
_add = operator.add


def spool_files(path: str | os.PathLike[str]) -> list[Path]:
    """The database file and its `-wal` / `-shm` companions."""
    p = Path(path)
    return [p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")]


_KiB = 1024
_MiB = 1024 * _KiB
_SHM_RESERVE = 32 * _KiB  # the WAL index: 32 KiB per 4096 WAL frames, and our WAL stays far below that
_HEADROOM = 256 * _KiB  # filesystem space the producers leave to the drain side (see `Store._room`)
_RECLAIM_MIN = 4 * _MiB  # free pages kept for reuse before `reclaim` gives them back
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT})


def wal_limit(max_bytes: int) -> int:
    """WAL bytes between checkpoints (and what the WAL file is truncated back to): 1/16 of the disk cap, 64 KiB
    to 16 MiB. Each checkpoint syncs the files: at 4 MiB (SQLite's default) appending and draining together ran
    ~25% slower. `reclaim` truncates a WAL above 4 MiB once a drain ends, so an idle spool stays small."""
    return max(64 * _KiB, min(16 * _MiB, max_bytes // 16))


def row_cost(row: Row) -> int:
    """A generous estimate of the disk bytes one row takes (body, ids in the row and in the unique index, page
    slack); measured ~1.46 KB for a 1,073-byte body, estimated 1.54 KB. Only used for the cap's arithmetic."""
    return len(row.body) + (len(row.body) >> 3) + 4 * (len(row.trace_id) + len(row.span_id)) + 96


_trace_of, _span_of, _body_of = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(3)


def body_bytes(rows: Sequence[Row]) -> int:
    """The bytes of the bodies of `rows`, with no Python step per row."""
    return sum(map(len, map(_body_of, rows)))


def rows_cost(rows: Sequence[Row]) -> int:
    """`sum(row_cost(r) for r in rows)`, up to 7/8 byte a row above (the eighth is taken of the bodies' sum), with
    no Python step per row: it runs on every commit."""
    body = body_bytes(rows)
    ids = sum(map(len, map(_trace_of, rows))) + sum(map(len, map(_span_of, rows)))
    return body + (body >> 3) + 4 * ids + 96 * len(rows)


def split_rows(rows: Sequence[Row], max_bytes: int, cost: int | None = None) -> list[Sequence[Row]]:
    """`rows` cut into runs of at most `max_bytes` estimated (`row_cost`) bytes each (at least one row per run),
    so that one commit never grows the WAL far beyond its checkpoint size. `cost`: `rows_cost(rows)`, if known."""
    if (rows_cost(rows) if cost is None else cost) <= max_bytes:
        return [rows] if rows else []
    out: list[Sequence[Row]] = []
    start, size = 0, 0
    for i, r in enumerate(rows):
        c = row_cost(r)
        if size and size + c > max_bytes:
            out.append(rows[start:i])
            start, size = i, 0
        size += c
    if start < len(rows):
        out.append(rows[start:])
    return out


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


def _within(rows: list[Any], max_bytes: int) -> list[Any]:
    """The first of `rows` (claimed: the body is the fourth column) whose bodies fit `max_bytes`; at least one."""
    total = 0
    for i, row in enumerate(rows):
        total += len(row[3])
        if total > max_bytes and i:
            return rows[:i]
    return rows


def span_key(trace_id: str, span_id: str) -> int:
    """A span's key in the record of delivered ends: 64 bits of BLAKE2b of its ids (stable across processes). Two
    spans share a key with probability ~3e-10 among 100,000 remembered; such a start would be taken as ended."""
    return key64(f"{trace_id}\0{span_id}".encode(errors="surrogatepass"))


def _fs_free(path: Path) -> int:
    """Bytes the filesystem holding `path` gives an unprivileged writer (very large when it cannot be read)."""
    try:
        st = os.statvfs(path.parent)
    except (OSError, AttributeError):  # no statvfs (Windows), or the directory is gone
        return 1 << 62
    return st.f_bavail * st.f_frsize


def _files_size(path: Path) -> int:
    return sum(map(_file_size, spool_files(path)))


def _file_size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


class Claimed(NamedTuple):
    """One leased row: what was sent, which version of it, and the lease (a row of `leases`) that holds it. (A
    NamedTuple: a claim builds one per row, on the store's thread, holding the GIL; a frozen dataclass costs ~4x as
    much to make.)"""

    seq: int
    version: int
    attempts: int
    body: bytes
    lease: int


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


def _heals(method: Callable[P, R]) -> Callable[P, R]:
    """A `Store` method a running `Spool` calls: when SQLite reports the file damaged and the store has an
    `on_damage` healer, the healer moves the file aside and reopens the store on a fresh file, and the call is made
    once more there (an append lands in the fresh file; a claim finds nothing; a completion deletes nothing)."""

    @functools.wraps(method)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        store: Store = args[0]  # type: ignore[assignment]
        try:
            return method(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if store.on_damage is None or not is_damage(exc):
                raise
            store.on_damage(store, exc)
        return method(*args, **kwargs)

    return run


class Store:
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
        if not self.path.exists():
            if not create or readonly:
                raise FileNotFoundError(str(self.path))
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        self._wal_path, self._shm_path = spool_files(self.path)[1:]
        # The WAL is sized on what the spool can really grow to: the cap, or the filesystem when that is smaller.
        self._wal_limit = wal_limit(min(self.config.max_bytes, _fs_free(self.path) + _files_size(self.path)))
        self.chunk_bytes = self._wal_limit // 2
        """Estimated bytes per commit: a checkpoint runs once the WAL passes half its limit, so a commit of this size
        still ends inside the limit (see `split_rows`)."""
        self.ended_keep = min(ENDED_MAX, self.config.max_bytes // 16 // 64)
        """Delivered ends remembered (each ~50 bytes on disk): the last 100,000 (fewer under a cap below 100 MiB: the
        record takes at most 1/16 of it), and those of the last `ENDED_SECONDS`, whichever are fewer. Up to a 16th
        more wait to be forgotten in bulk (`_forget_ends`)."""
        self._ended_new, self._ended_forgot_at = 0, 0.0
        self.claim_bytes = self.chunk_bytes // 2
        """Body bytes one claim takes at most (and at least one row): deleting rows writes about twice their bytes
        to the WAL (their pages, the index's), so a batch's delete also ends inside the WAL's limit."""
        self.mark_clean_on_close = False
        """Set by the `Spool`'s opener: `close()` then records a clean close (the next open skips the check)."""
        self.on_damage: Callable[[Store, sqlite3.DatabaseError], None] | None = None
        """Set by the `Spool`'s opener: called when a query finds the file damaged; it moves the file aside and
        `reopen`s this store on a fresh one, and the call that met the damage is made once more (`_heals`)."""
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

    # -- set-up ---------------------------------------------------------------------------------------------

    def _setup(self) -> None:
        db, cfg = self._db, self.config
        db.execute("PRAGMA busy_timeout = 30000")
        # 1 MiB of page cache (SQLite's default is 2): a spool touches the two ends of the table and a few index
        # pages, and the rest comes from the OS page cache. Measured: appends and drains within run-to-run noise,
        # ~1.5 MB less RSS.
        db.execute("PRAGMA cache_size = -1024")
        fresh = self._check_header()
        if self.readonly:
            self._setup_readonly(fresh)
            return
        if fresh:
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {cfg.synchronous}")
        # Keep the WAL inside the disk cap: checkpoint once it passes half of `wal_limit` (a commit of `chunk_bytes`
        # then ends inside the limit), truncate the file back to the limit.
        self._page_size = page_size = db.execute("PRAGMA page_size").fetchone()[0]
        db.execute(f"PRAGMA wal_autocheckpoint = {max(8, self._wal_limit // 2 // page_size)}")
        db.execute(f"PRAGMA journal_size_limit = {self._wal_limit}")
        if fresh:
            with self._tx():
                if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:  # no other process was first
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            db.execute(stmt)
                    for stmt in _BLOBS_DDL:
                        db.execute(stmt)
                    db.execute(f"PRAGMA application_id = {_APP_ID}")
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._check_header()
        self._migrate()
        self._check_tables()
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'spans_attempted'").fetchone() is None:
            # Migration note: index added within schema 1 (for `spool stats` attempts buckets). Files made before it
            # get it on first open (one scan of the table, ~1.5 s per 1M rows); older span-spools read them as is.
            with self._tx():
                db.execute(_ATTEMPTED_INDEX)
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'ended_keys'").fetchone() is None:
            # Migration note: table added within schema 2 (the record of delivered ends). Older span-spools ignore
            # it: their drainers do not record ends, which only shortens the record. A first version kept the ids
            # themselves in `ended`: its ends carry over by key.
            with self._tx():
                for stmt in _ENDED_TABLE.split(";")[:-1]:
                    db.execute(stmt)
                if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'ended'").fetchone() is not None:
                    db.execute(
                        "INSERT INTO ended_keys (key, at) SELECT span_key(trace_id, span_id), at FROM ended ORDER BY id"
                    )
                    db.execute("DROP TABLE ended")

    def _setup_readonly(self, fresh: bool) -> None:
        if fresh:
            raise SpoolCorruptError(self.path)  # an empty file: a reader must not make it a spool
        self._page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            raise SpoolError(
                f"{self.path} has schema version {version}, from an older span-spool; it is upgraded when a Spool or"
                f" `spool flush` opens it (this command only reads)"
            )
        self._check_tables()

    def _check_tables(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if missing := {"spans", "dead", "meta", "leases"} - tables:
            raise SpoolCorruptError(self.path, f"no table {', '.join(sorted(missing))}")

    def _check_header(self) -> bool:
        """True for an empty file. Raises `SpoolCorruptError` for a database that is not a spool and
        `SpoolSchemaError` for one from a newer span-spool."""
        # One statement, so one snapshot: read one by one, another process creating the file could commit in
        # between, and an application_id read before its commit with tables read after looks like a foreign file.
        version, app_id, objects = self._db.execute(
            "SELECT (SELECT user_version FROM pragma_user_version), (SELECT application_id FROM pragma_application_id),"
            " (SELECT count(*) FROM sqlite_master)"
        ).fetchone()
        if version == 0 and objects == 0:
            return True
        if app_id != _APP_ID:
            raise SpoolCorruptError(self.path)  # another program's SQLite database
        if version > SCHEMA_VERSION:
            raise SpoolSchemaError(
                f"{self.path} has schema version {version}, newer than this span-spool's {SCHEMA_VERSION}; "
                "upgrade span-spool to read it (the file was left untouched)"
            )
        return False

    def _migrate(self) -> None:
        """Bring an older file to `SCHEMA_VERSION` in one transaction (all steps, or none on error)."""
        db = self._db
        if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        with self._tx():
            version = db.execute("PRAGMA user_version").fetchone()[0]  # again under the lock: maybe done meanwhile
            while version < SCHEMA_VERSION:
                step = _MIGRATIONS.get(version)
                if step is None:
                    raise SpoolCorruptError(self.path, f"schema version {version}, which no span-spool wrote")
                step(db)
                version += 1
            db.execute(f"PRAGMA user_version = {version}")

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

    @_heals
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

    @_heals
    def set_meta(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- producer side ----------------------------------------------------------------------------------------

    @_heals
    def append(
        self,
        rows: Sequence[Row],
        now: float | None = None,
        *,
        dropped: int = 0,
        dropped_memory: int = 0,
        cost: int | None = None,
    ) -> int:
        """Commit `rows` in one transaction. An end replaces a pending start; a start never replaces an end.

        Within the disk cap (`max_bytes`: live database pages, free pages excluded, + WAL + SHM, measured once per
        call): over it, `drop_newest` refuses rows for spans not stored yet and `drop_oldest` first deletes the
        oldest pending rows not in flight, then the oldest rows of `rows`. An update of a stored span is always
        taken. Returns how many spans the cap refused or evicted; they and `dropped` (drops not yet recorded) are
        added to `dropped_total` in the same transaction (`dropped_memory`, spans `put` dropped at
        `max_pending_bytes`, to `dropped_memory` too). Raises `sqlite3.Error` (nothing written) on a failing disk.
        `cost`: `rows_cost(rows)`, when the caller has it already.
        """
        t = time.time() if now is None else now
        with self._tx():
            room = self._room()
            lost = 0
            if (rows_cost(rows) if cost is None else cost) > room:
                rows, lost = self._make_room(rows, [row_cost(r) for r in rows], room, t)
            if Split in map(type, rows):
                self._append_split(rows, t)
            else:
                self._upsert(rows, t)  # type: ignore[arg-type]  # (no Split among them)
            self._bump("dropped_total", dropped + dropped_memory + lost)
            self._bump("dropped_memory", dropped_memory)
        return lost

    def _upsert(self, rows: Sequence[Encoded], t: float) -> None:
        db = self._db
        full = len(rows) - len(rows) % _BLOCK
        for i in range(0, full, _BLOCK):
            db.execute(_UPSERT_BLOCK, [t, *itertools.chain.from_iterable(rows[i : i + _BLOCK])])
        if full < len(rows):
            db.executemany(_UPSERT, map(_add, rows[full:], itertools.repeat((t,))))  # (*row, t): plain tuples

    def _append_split(self, rows: Sequence[Row], t: float) -> None:
        """`_upsert` of rows some of which are `Split`: their blobs first (each once; a key whose row holds other
        bytes, a hash collision, makes its rows whole), then the rows in their order."""
        db = self._db
        blobs = {r.key: r.data for r in rows if type(r) is Split}
        clash = set()
        for key, data in blobs.items():
            same = db.execute("SELECT data = ? FROM blobs WHERE key = ?", (data, key)).fetchone()
            if same is None:
                db.execute("INSERT INTO blobs (key, data) VALUES (?, ?)", (key, data))
            elif not same[0]:
                clash.add(key)
        for split, run in itertools.groupby(rows, lambda r: type(r) is Split and r.key not in clash):
            if split:
                db.executemany(_UPSERT_SPLIT, [(*r[:6], t) for r in run])
            else:
                self._upsert([_whole_row(r) for r in run], t)
        # A blob only a start refused by `ended` would have used: gone again.
        db.executemany(_FORGET_BLOB.format(key="?1"), [(k,) for k in blobs])

    def outcomes(self, rows: Sequence[Row]) -> collections.Counter[str]:
        """What `append(rows)` would do with each row, by the coalescing rule (`_ON_CONFLICT`), read now: counts of
        "new" (no row for the span), "updated" (the row's bytes would be replaced) and "unchanged" (the same bytes,
        or a start meeting a stored or a delivered end). Rows of one span within `rows` meet each other as they would
        in the file."""
        seen: dict[tuple[str, str], tuple[bytes, bool]] = {}
        out: collections.Counter[str] = collections.Counter()
        find = f"SELECT {WHOLE_BODY}, is_end FROM spans WHERE trace_id = ? AND span_id = ?"
        ended = "SELECT 1 FROM ended_keys WHERE key = span_key(?, ?)"
        for r in rows:
            key = (r.trace_id, r.span_id)
            if key not in seen:
                row = self._db.execute(find, key).fetchone()
                if row is not None:
                    seen[key] = (bytes(row[0]), bool(row[1]))
                elif not r.is_end and self._db.execute(ended, key).fetchone() is not None:
                    out["unchanged"] += 1  # its end was delivered: the start is not stored
                    continue
            stored = seen.get(key)
            body = _bytes_of(r)
            if stored is None:
                out["new"] += 1
            elif stored[0] != body and (r.is_end or not stored[1]):
                out["updated"] += 1
            else:
                out["unchanged"] += 1
                continue
            seen[key] = (body, bool(r.is_end))
        return out

    def restore(self, spans: Iterable[Sequence[Any]], dead: Iterable[Sequence[Any]]) -> int:
        """Insert rows salvaged from another spool file (`spool recover`), in one transaction, keeping their bytes,
        enqueue times and attempts: `spans` as (trace_id, span_id, is_end, body, enqueued_at, attempts), `dead` as
        the dead table's columns after `id`. A span already here is kept. Returns the rows inserted."""
        with self._tx() as db:
            before = db.total_changes
            db.executemany(
                "INSERT INTO spans (trace_id, span_id, is_end, body, enqueued_at, attempts) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (trace_id, span_id) DO NOTHING",
                spans,
            )
            db.executemany(
                "INSERT INTO dead (trace_id, span_id, name, body, status, detail, attempts, enqueued_at, failed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                dead,
            )
            return db.total_changes - before

    def add_totals(self, totals: dict[str, int]) -> None:
        """Add to the persistent totals (`delivered_total`, `dropped_total`, ...)."""
        with self._tx():
            for key, n in totals.items():
                self._bump(key, n)

    def _room(self) -> int:
        """Bytes new rows may take now. Under `max_bytes`, which counts pages in use, the WAL (at least 1.5x its
        limit: measured peaks stay below that) and the SHM; and under what the filesystem can still give: its free
        space, less the growth already due (the database file up to its pages, the WAL up to that) and `_HEADROOM`, kept
        for the drain side (a claim's lease, a delete) once producers are refused. Free pages count as room."""
        db, ps = self._db, self._page_size
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
        free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
        wal, shm = _file_size(self._wal_path), _file_size(self._shm_path)
        wal_peak = self._wal_limit * 3 // 2  # one transaction's pages (index, interior, freelist) past the estimate
        used = (pages - free) * ps + max(wal, wal_peak) + max(shm, _SHM_RESERVE)
        due = max(0, pages * ps - _file_size(self.path)) + max(0, wal_peak - wal) + max(0, _SHM_RESERVE - shm)
        fs_free = _fs_free(self.path)
        cap_room, fs_room = self.config.max_bytes - used, fs_free - due - _HEADROOM + free * ps
        if cap_room <= fs_room:
            self.full = f"disk cap max_bytes={self.config.max_bytes} reached"
        else:
            self.full = f"the filesystem is full ({fs_free} bytes free, kept for the spool's WAL and delivery)"
        return min(cap_room, fs_room)

    def _make_room(self, rows: Sequence[Row], costs: list[int], room: int, now: float) -> tuple[Sequence[Row], int]:
        """The cap's policy, inside `append`'s transaction: the rows to write and how many spans were dropped."""
        db = self._db

        def stored(r: Row) -> bool:
            found = db.execute("SELECT 1 FROM spans WHERE trace_id = ? AND span_id = ?", (r.trace_id, r.span_id))
            return found.fetchone() is not None

        if self.config.overflow == "drop_newest":
            keep: list[Row] = []
            taken: set[tuple[str, str]] = set()
            for r, c in zip(rows, costs, strict=True):
                key = (r.trace_id, r.span_id)
                if key in taken or stored(r):
                    keep.append(r)  # an update (an end replacing its start): always taken
                elif c <= room:
                    keep.append(r)
                    taken.add(key)
                    room -= c
            return keep, len(rows) - len(keep)
        # drop_oldest: evict the oldest pending rows that no drainer holds, then the oldest of `rows` if need be.
        short = sum(costs) - room
        victims: list[tuple[int]] = []
        live = self._live(now)
        cur = db.execute(
            """SELECT seq, length(body) + (length(body) >> 3) + 4 * (length(trace_id) + length(span_id)) + 96
               FROM spans ORDER BY seq"""
        )
        for seq, cost in cur:
            if short <= 0:
                break
            if not _covered(live, seq):
                victims.append((seq,))
                short -= cost
        cur.close()
        db.executemany("DELETE FROM spans WHERE seq = ?", victims)
        lost = len(victims)
        if short <= 0:
            return rows, lost
        keep = []
        for r, c in zip(rows, costs, strict=True):
            if short > 0 and not stored(r):
                short -= c
                lost += 1
            else:
                keep.append(r)
        return keep, lost

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
            keep = min(_RECLAIM_MIN, self.config.max_bytes // 8) // self._page_size
            if free <= keep:
                if _file_size(self._wal_path) > _RECLAIM_MIN:
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

    def check_cheap(self) -> list[str]:
        """A look for damage that stays fast on any size (unlike `check`): `quick_check` of the `meta` table and a
        read of both ends of the span and dead-letter tables. Returns the problems found; empty when none."""
        db = self._db
        try:
            rows = db.execute("PRAGMA quick_check(meta)").fetchall()
            for table, key in (("spans", "seq"), ("dead", "id")):
                for order in ("ASC", "DESC"):
                    db.execute(f"SELECT * FROM {table} ORDER BY {key} {order} LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            return [f"check failed: {exc}"]
        problems = [str(r[0]) for r in rows]
        return [] if problems == ["ok"] else problems

    # -- drainer side -----------------------------------------------------------------------------------------

    def _live(self, now: float) -> list[tuple[int, int]]:
        """The `seq` ranges of live leases, sorted, overlaps merged."""
        out: list[tuple[int, int]] = []
        for lo, hi in self._db.execute("SELECT lo, hi FROM leases WHERE until > ? ORDER BY lo", (now,)):
            if out and lo <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(out[-1][1], hi))
            else:
                out.append((lo, hi))
        return out

    @_heals
    def claim(self, owner: str, limit: int, lease_seconds: float, *, force: bool = False) -> list[Claimed]:
        """Lease up to `limit` deliverable rows, oldest first, from the first run of rows no live lease covers.
        `force` ignores cool-downs (not others' leases)."""
        with self._tx():
            return self._claim(owner, limit, lease_seconds, force)

    def _claim(self, owner: str, limit: int, lease_seconds: float, force: bool) -> list[Claimed]:
        db, now = self._db, time.time()
        if limit <= 0:
            return []
        db.execute("DELETE FROM leases WHERE until <= ?", (now,))  # their rows are free again
        live = self._live(now)
        lease = random.getrandbits(62) + 1  # never reused: a holder whose lease expired cannot renew another's
        cooled = "" if force else " AND next_attempt_at <= :now"
        sql = f"""SELECT seq, version, attempts, {WHOLE_BODY}, :lease FROM spans
                  WHERE seq > :after AND seq < :before{cooled} ORDER BY seq LIMIT :n"""
        after = -_MAX_SEQ - 1
        for lo, hi in [*live, (_MAX_SEQ, _MAX_SEQ)]:
            if lo > after + 1:
                args = {"after": after, "before": lo, "now": now, "n": limit, "lease": lease}
                if rows := _within(db.execute(sql, args).fetchall(), self.claim_bytes):
                    db.execute(
                        "INSERT INTO leases (id, owner, lo, hi, until) VALUES (?, ?, ?, ?, ?)",
                        (lease, owner, rows[0][0], rows[-1][0], now + lease_seconds),
                    )
                    return list(map(Claimed._make, rows))
            after = max(after, hi)
        return []

    @_heals
    def attempt_failed(self, lease: int, seqs: Iterable[int], lease_seconds: float) -> None:
        """Count one failed attempt on each row and renew the lease for the next one."""
        with self._tx() as db:
            db.executemany("UPDATE spans SET attempts = attempts + 1 WHERE seq = ?", [(s,) for s in seqs])
            db.execute("UPDATE leases SET until = ? WHERE id = ?", (time.time() + lease_seconds, lease))

    @_heals
    def renew(self, lease: int, lease_seconds: float) -> bool:
        """Extend `lease` to `lease_seconds` from now. False when it is gone (it expired and another drainer's claim
        removed it): its rows may be another drainer's now."""
        with self._tx() as db:
            return (
                db.execute("UPDATE leases SET until = ? WHERE id = ?", (time.time() + lease_seconds, lease)).rowcount
                > 0
            )

    @_heals
    def complete(self, sent: Sequence[Claimed]) -> int:
        """The sink took `sent`: delete exactly the versions sent (rows updated meanwhile stay, and are sent again
        once their lease ends) and clear `last_error` (a success, whichever process had it).

        Returns how many rows were deleted (added to `delivered_total` in the same transaction).
        """
        with self._tx():
            return self._complete(sent)

    @_heals
    def complete_and_claim(
        self, owner: str, sent: Sequence[Claimed], limit: int, lease_seconds: float, *, force: bool = False
    ) -> tuple[int, list[Claimed]]:
        """`complete(sent)`, end the lease of `sent`, then `claim(owner, limit, lease_seconds, force=force)` (none when
        `limit` is 0), in one transaction: one trip to the store's thread per batch on the steady path. Returns
        (rows deleted, rows claimed)."""
        with self._tx() as db:
            deleted = self._complete(sent)
            db.execute("DELETE FROM leases WHERE id = ?", (sent[0].lease,))
            return deleted, self._claim(owner, limit, lease_seconds, force)

    def _complete(self, sent: Sequence[Claimed]) -> int:
        db, now = self._db, time.time()
        keys = [(c.seq, c.version) for c in sent]
        self._ended_new += db.executemany(
            """INSERT INTO ended_keys (key, at)
               SELECT span_key(trace_id, span_id), ?3 FROM spans WHERE seq = ?1 AND version = ?2 AND is_end""",
            [(*k, now) for k in keys],
        ).rowcount
        # (`rowcount`, not `total_changes`: a blob deleted with its last reference, by a trigger, is not a span)
        deleted = db.executemany("DELETE FROM spans WHERE seq = ? AND version = ?", keys).rowcount
        if self._ended_new > self.ended_keep // 16 or now > self._ended_forgot_at + 60:
            self._forget_ends(now)
        self._bump("delivered_total", deleted)
        db.execute("DELETE FROM meta WHERE key IN ('last_error', 'last_error_at')")
        return deleted

    def _forget_ends(self, now: float) -> None:
        """Forget the ends past the record's bounds, in bulk (once a 16th of `ended_keep` more were recorded, or a
        minute passed): the oldest are a prefix of `ended_keys`, and one pass over the index costs far less than a
        deletion per recorded end."""
        db = self._db
        db.execute("DELETE FROM ended_keys WHERE id <= (SELECT max(id) FROM ended_keys) - ?", (self.ended_keep,))
        db.execute(
            """DELETE FROM ended_keys WHERE id < coalesce(
                (SELECT id FROM ended_keys WHERE at >= ? ORDER BY id LIMIT 1), (SELECT max(id) + 1 FROM ended_keys))""",
            (now - ENDED_SECONDS,),
        )
        self._ended_new, self._ended_forgot_at = 0, now

    @_heals
    def release(self, lease: int, seqs: Sequence[int] = (), next_attempt_at: float | None = None) -> None:
        """End `lease`: its rows are free again; with `next_attempt_at`, `seqs` cool down until then."""
        with self._tx() as db:
            if next_attempt_at is not None:
                db.executemany(
                    "UPDATE spans SET next_attempt_at = ? WHERE seq = ?", [(float(next_attempt_at), s) for s in seqs]
                )
            db.execute("DELETE FROM leases WHERE id = ?", (lease,))

    @_heals
    def release_owner(self, owner: str) -> None:
        """End every lease `owner` holds (on close)."""
        with self._tx() as db:
            db.execute("DELETE FROM leases WHERE owner = ?", (owner,))

    @_heals
    def to_dead(self, row: Claimed, status: int | None, detail: str | None) -> bool:
        """Move the sent version of a rejected row to the dead table. False if the row changed meanwhile (its newer
        version is tried once the lease ends)."""
        with self._tx() as db:
            moved = db.execute(
                """INSERT INTO dead (trace_id, span_id, name, body, status, detail, attempts, enqueued_at, failed_at,
                                     blob, blob_at)
                   SELECT trace_id, span_id, json_extract(body, '$.name'), body, ?, ?, attempts + 1, enqueued_at, ?,
                          blob, blob_at
                   FROM spans WHERE seq = ? AND version = ?""",
                (status, detail, time.time(), row.seq, row.version),
            ).rowcount
            if moved:
                db.execute("DELETE FROM spans WHERE seq = ?", (row.seq,))
                self._bump("dead_total", 1)
        return bool(moved)

    # -- reading ----------------------------------------------------------------------------------------------

    def db_bytes(self) -> int:
        total = 0
        for f in spool_files(self.path):
            with contextlib.suppress(OSError):
                total += f.stat().st_size
        return total

    @_heals
    def has_rows(self) -> bool:
        """Any pending row (one index step, unlike `counts`)."""
        return self._db.execute("SELECT 1 FROM spans LIMIT 1").fetchone() is not None

    @_heals
    def counts(self) -> tuple[int, int, float | None]:
        """(pending, inflight, oldest enqueue time), read in one statement."""
        pending, inflight, oldest = self._db.execute(STATS_SQL, (time.time(),)).fetchone()[:3]
        return pending, inflight, oldest

    @_heals
    def stats(self, extra_dropped: int = 0) -> SpoolStats:
        """What `spool stats` shows, read in one statement (`STATS_SQL`); `extra_dropped`: drops not yet recorded."""
        now = time.time()
        return stats_of(self._db.execute(STATS_SQL, (now,)).fetchone(), now, self.db_bytes(), extra_dropped)

    def stats_detail(
        self, pending: int, top: int = 5, top_max_rows: int | None = TOP_TRACES_MAX_ROWS
    ) -> dict[str, Any]:
        """What `spool stats` shows beyond `SpoolStats`, in one read transaction.

        `attempts_buckets`: pending rows by failed attempts ("0", "1", "2-3", "4+"; "0" is `pending` minus the rest,
        read from the partial `spans_attempted` index). `top_traces`: up to `top` `{"trace_id", "pending"}` with the
        most pending rows; counting them scans the whole `(trace_id, span_id)` index (~150-400 ms per 1M rows), so
        it is None when `pending` exceeds `top_max_rows` (None: no limit). `last_error_at`: epoch seconds or None.
        `moved_aside`: what happened the last time a corrupt file at this path was moved aside, or None.
        `dropped_memory`: of `dropped_total`, the spans `put` dropped at `max_pending_bytes` (the disk was behind).
        """
        db = self._db
        with _read(db):
            tried = dict(
                db.execute(
                    """SELECT CASE WHEN attempts = 1 THEN '1' WHEN attempts <= 3 THEN '2-3' ELSE '4+' END, count(*)
                       FROM spans WHERE attempts > 0 GROUP BY 1"""
                ).fetchall()
            )
            traces = None
            if top_max_rows is None or pending <= top_max_rows:
                traces = db.execute(
                    "SELECT trace_id, count(*) AS n FROM spans GROUP BY trace_id ORDER BY n DESC, trace_id LIMIT ?",
                    (top,),
                ).fetchall()
            at = db.execute("SELECT value FROM meta WHERE key = 'last_error_at'").fetchone()
            moved = db.execute("SELECT value FROM meta WHERE key = 'moved_aside'").fetchone()
            memory = db.execute("SELECT value FROM meta WHERE key = 'dropped_memory'").fetchone()
        buckets = {k: int(tried.get(k, 0)) for k in ("1", "2-3", "4+")}
        return {
            "attempts_buckets": {"0": max(0, pending - sum(buckets.values())), **buckets},
            "top_traces": None if traces is None else [{"trace_id": t, "pending": int(n)} for t, n in traces],
            "last_error_at": None if at is None else float(at[0]),
            "moved_aside": None if moved is None else str(moved[0]),
            "dropped_memory": 0 if memory is None else int(memory[0]),
        }

    def iter_bodies(self, dead: bool = False, trace_id: str | None = None, chunk: int = 1000) -> Iterator[bytes]:
        """The stored bytes of pending rows (by `seq`) or, with `dead`, of dead letters (by `id`), oldest first,
        optionally of one trace. Reads `chunk` rows per query (keyset paging), so memory stays flat on any size
        and no read transaction is held between chunks: rows delivered or added meanwhile may or may not appear."""
        table, key = ("dead", "id") if dead else ("spans", "seq")
        where = "" if trace_id is None else " AND trace_id = ?"
        sql = f"SELECT {key}, {WHOLE_BODY} FROM {table} WHERE {key} > ?{where} ORDER BY {key} LIMIT ?"
        extra: tuple[str, ...] = () if trace_id is None else (trace_id,)
        last = -(2**63)
        while True:
            rows = self._db.execute(sql, (last, *extra, chunk)).fetchall()
            for _, body in rows:
                yield bytes(body)
            if len(rows) < chunk:
                return
            last = rows[-1][0]

    def check(self, full: bool = False) -> list[str]:
        """SQLite's `PRAGMA quick_check` (`full`: `integrity_check`, slower, also checks index contents).
        Returns the problems found; empty when the file is sound. A file too damaged to run the check is one
        problem (the error's text), not an exception."""
        pragma = "integrity_check" if full else "quick_check"
        try:
            rows = self._db.execute(f"PRAGMA {pragma}").fetchall()
        except sqlite3.DatabaseError as exc:
            return [f"{pragma} failed: {exc}"]
        problems = [str(r[0]) for r in rows]
        return [] if problems == ["ok"] else problems

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

    def dead_retry(self, ids: Sequence[int] | None) -> tuple[int, int]:
        """Move dead letters (all when `ids` is None) back to pending with a fresh attempt count. Where the span is
        pending again meanwhile, the coalescing rule decides: a dead end replaces a pending start, otherwise the
        pending row stays (it is newer). A dead start whose end was delivered (see `ended`) is removed instead: the
        server has the whole span, and the start sent now would undo its end. Returns (moved, removed)."""
        where, args = _id_filter(ids)
        with self._tx() as db:
            stale = f"""({where}) AND json_extract(body, '$.end_timestamp') IS NULL AND EXISTS
                        (SELECT 1 FROM ended_keys WHERE key = span_key(dead.trace_id, dead.span_id))"""
            removed = int(db.execute(f"DELETE FROM dead WHERE {stale}", args).rowcount)
            db.execute(
                f"""INSERT INTO spans (trace_id, span_id, is_end, body, enqueued_at, blob, blob_at)
                    SELECT trace_id, span_id, json_extract(body, '$.end_timestamp') IS NOT NULL, body, enqueued_at,
                           blob, blob_at
                    FROM dead WHERE {where} ORDER BY id
                    ON CONFLICT (trace_id, span_id) DO UPDATE {_REPLACE_ROW}
                        WHERE excluded.is_end AND NOT spans.is_end""",
                args,
            )
            return int(db.execute(f"DELETE FROM dead WHERE {where}", args).rowcount), removed

    def dead_purge(self, ids: Sequence[int] | None = None, older_than: float | None = None) -> int:
        """Delete dead letters: by id, all (`ids` None), or failed more than `older_than` seconds ago."""
        where, args = _id_filter(ids)
        if older_than is not None:
            where, args = f"({where}) AND failed_at < ?", [*args, time.time() - older_than]
        with self._tx() as db:
            return int(db.execute(f"DELETE FROM dead WHERE {where}", args).rowcount)


def _whole_row(r: Row) -> Encoded:
    return Encoded(r.trace_id, r.span_id, r.is_end, _bytes_of(r)) if isinstance(r, Split) else r


def _bytes_of(r: Row) -> bytes:
    return whole(r.body, r.at, r.data) if isinstance(r, Split) else r.body


def _covered(live: Sequence[tuple[int, int]], seq: int) -> bool:
    """`seq` lies in one of `live`'s sorted, disjoint ranges."""
    i = bisect.bisect_right(live, (seq, _MAX_SEQ)) - 1
    return i >= 0 and live[i][0] <= seq <= live[i][1]


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
