"""The spool file's schema: tables, triggers and indexes, the SQL functions a connection needs, the header checks and
the migrations from older files (`SCHEMA_VERSION`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ._blobs import key64, whole
from ._errors import SpoolConfigError, SpoolCorruptError, SpoolError, SpoolSchemaError
from ._formats import SGP, format_named
from ._otlpwire import span_name
from ._storebase import StoreBase

__all__ = ["FORGET_BLOB", "SCHEMA_VERSION", "WHOLE_BODY", "Schema", "register_functions", "span_key"]

"""What a spool file's rows hold, fixed when it is created: `sgp` (Scale GP span JSON) or `otlp` (OTLP protobuf)."""

SCHEMA_VERSION = 3


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

_APP_ID = 0x5350_4F4C  # "SPOL": marks the file as a spool

_ENDED_TABLE = """
CREATE TABLE IF NOT EXISTS ended_keys (id INTEGER PRIMARY KEY, key INTEGER NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ended_keys_key ON ended_keys (key);
"""
"""Delivered ends (the last hour's, at most `Store.ended_keep`), by `span_key`: a start of one of them is never stored
again. Rows are appended in time order (the oldest are a prefix, forgotten in bulk) and the index holds 8-byte keys:
~4x less disk and WAL traffic per delivered end than the ids themselves."""

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

FORGET_BLOB = """DELETE FROM blobs WHERE key = {key} AND NOT EXISTS (SELECT 1 FROM spans WHERE blob = {key})
    AND NOT EXISTS (SELECT 1 FROM dead WHERE blob = {key})"""


_UNUSED = FORGET_BLOB.format(key="old.blob") + ";"

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


def _spool_body(body: bytes, at: int, data: bytes | None) -> bytes:
    if data is None:
        raise ValueError("a span references a blob that is not in the file")
    return whole(body, at, data)


def span_key(trace_id: str, span_id: str) -> int:
    """A span's key in the record of delivered ends: 64 bits of BLAKE2b of its ids (stable across processes). Two
    spans share a key with probability ~3e-10 among 100,000 remembered; such a start would be taken as ended."""
    return key64(f"{trace_id}\0{span_id}".encode(errors="surrogatepass"))


def register_functions(db: sqlite3.Connection) -> None:
    """The SQL functions a spool's statements use (`span_key`, `spool_body` of `WHOLE_BODY`, and `otlp_name`: the
    name in an `otlp` row, for its dead letter)."""
    db.create_function("span_key", 2, span_key, deterministic=True)
    db.create_function("otlp_name", 1, span_name, deterministic=True)
    db.create_function("spool_body", 3, _spool_body, deterministic=True)


_ATTEMPTED_INDEX = "CREATE INDEX IF NOT EXISTS spans_attempted ON spans (attempts) WHERE attempts > 0"


class Schema(StoreBase):
    """Creating, checking and migrating the file (run by `Store` at open)."""

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

    def file_format(self) -> str:
        """The file's storage format (`spool._formats.FORMATS`): fixed in its meta when the first spool opened it
        with a sink; a file with none recorded holds `sgp` items (the only format before there were two)."""
        return str(self.meta("format") or SGP.name)

    def claim_format(self, wanted: str | None) -> str:
        """The file's format, recording `wanted` (default `sgp`) in a file that has none and holds no rows. Raises
        `SpoolConfigError` naming both when `wanted` is not the file's."""
        if wanted is not None:
            format_named(wanted)  # (raises for an unknown one)
        have = self.meta("format")
        if have is None:
            with self._tx() as db:
                have = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
                if have is None:
                    empty = not db.execute(
                        "SELECT EXISTS (SELECT 1 FROM spans) OR EXISTS (SELECT 1 FROM dead)"
                    ).fetchone()[0]
                    have = (wanted or SGP.name) if empty else SGP.name
                    db.execute("INSERT INTO meta (key, value) VALUES ('format', ?)", (have,))
                else:
                    have = have[0]
        self.records_ends = format_named(str(have)).has_starts
        if wanted is not None and wanted != have:
            raise SpoolConfigError(
                f"{self.path} holds {have} spans; a sink for {wanted} cannot deliver them"
                f" (use {format_named(have).sink_name}, or another file)"
            )
        return str(have)

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
