"""Salvage a damaged spool: copy every row SQLite can still read into a fresh spool (`spool recover`).

The damaged file is only read (SQLite's `mode=ro`). Rows are read in key order, in pages; where a page cannot be
read, row by row, and past a damaged stretch by probing further and further ahead. The span table's unique index
(its own pages) then names every span the file held: those not read yet are tried one by one, and those that still
fail are counted as lost. Bytes, enqueue times and attempt counts are kept; `delivered_total` and `dropped_total`
are carried over.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._blobs import whole
from ._config import SpoolConfig
from ._errors import SpoolCorruptError, SpoolError
from ._store import Store, damage_error, readonly_uri, register_functions
from ._storebase import missing_dir

__all__ = ["Salvage", "recover"]

_SPAN_COLS = "trace_id, span_id, is_end, {body}, enqueued_at, attempts"
_DEAD_COLS = "trace_id, span_id, name, {body}, status, detail, attempts, enqueued_at, failed_at"
_CHUNK = 500
_TOTALS = ("delivered_total", "dropped_total")


@dataclass
class Salvage:
    """What `recover` saved, and what it could not read."""

    spans: int = 0
    dead: int = 0
    lost: int = 0
    """Rows known to exist (named by the span index) that could not be read."""
    uncounted: bool = False
    """Some damaged stretch held rows that nothing counts (the index, or the dead-letter table, was damaged too):
    `lost` is a lower bound."""
    lost_strings: set[tuple[str, str]] = field(default_factory=set)
    """Spans saved with their shared large string lost to the damage (`LOST` in its place)."""
    totals: dict[str, int] | None = None
    """The counters carried over; None when the meta table could not be read."""
    problems: list[str] = field(default_factory=list)
    """SQLite's words for each kind of damage met (de-duplicated)."""

    @property
    def complete(self) -> bool:
        return not self.problems and not self.lost_strings

    def met(self, exc: sqlite3.Error) -> None:
        if str(exc) not in self.problems:
            self.problems.append(str(exc))


def recover(src: Path, dst: Path) -> Salvage:
    """Copy what is readable of the spool at `src` into a new spool at `dst` (created 0600; never an existing file).

    Raises `SpoolError` when `dst` exists or nothing of `src` can be read, `SpoolCorruptError` when `src` is not a
    spool file; `dst` is created only once `src` has been opened and read.
    """
    if dst.exists() or dst.is_symlink():
        raise SpoolError(f"{dst} exists; recover writes a new spool file (choose another --out)")
    if not dst.parent.is_dir():
        raise SpoolError(f"cannot create {dst}: {missing_dir(dst.parent)}")
    try:
        db = sqlite3.connect(readonly_uri(src), uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot open {src}: {exc}") from exc
    out = Salvage()
    try:
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            if (err := damage_error(src, exc)).damage is None:
                raise err from None  # empty, or not an SQLite file
            raise SpoolError(f"nothing could be read from {src} ({exc})") from exc
        if "spans" not in tables:
            raise SpoolCorruptError(src)  # empty, or another program's database
        # Rows come out whole: a blob (schema 3) is put back into each row that references it, or `LOST` when it was
        # lost to the damage (read apart, so that one damaged blob costs its string, not the spans that share it).
        body = "recover_body(trace_id, span_id, body, blob_at, blob)" if "blobs" in tables else "body"
        span_cols, dead_cols = _SPAN_COLS.format(body=body), _DEAD_COLS.format(body=body)
        register_functions(db)
        blobs = sqlite3.connect(readonly_uri(src), uri=True, isolation_level=None)
        db.create_function("recover_body", 5, _BlobReader(blobs, out))
        store: Store | None = None
        try:
            store = Store(dst, SpoolConfig.defaults())
            store.claim_format(_format(db))  # before any row: the new file keeps the old one's format
            saved: set[int] = set()
            batch: list[tuple[Any, ...]] = []
            for row in _walk(db, "spans", "seq", span_cols, out):
                saved.add(row[0])
                batch.append(row[1:])
                if len(batch) >= _CHUNK:
                    out.spans += store.restore(batch, ())
                    batch = []
            for seq in _indexed(db, out):
                if seq not in saved:
                    late = _span_at(db, seq, out, span_cols)
                    if late is None:
                        out.lost += 1
                    else:
                        batch.append(late)
            out.spans += store.restore(batch, ())
            dead = [row[1:] for row in _walk(db, "dead", "id", dead_cols, out)]
            out.dead += store.restore((), dead)
            out.totals = _totals(db, out)
            store.add_totals(out.totals or {})
        finally:
            if store is not None:
                store.close()
            blobs.close()
    finally:
        db.close()
    return out


LOST = b'"[lost in damage]"'
"""What stands in a recovered span for a shared large string the damage took (a JSON string)."""


class _BlobReader:
    """`recover_body(trace_id, span_id, body, blob_at, blob)`: a row's whole bytes, with its shared string read on a
    connection of its own (each string once); `LOST` in its place when it cannot be read, the span counted in
    `Salvage.lost_strings`."""

    def __init__(self, db: sqlite3.Connection, out: Salvage) -> None:
        self._db, self._out = db, out
        self._data: dict[int, bytes | None] = {}

    def __call__(self, trace_id: str, span_id: str, body: bytes, at: int | None, key: int | None) -> bytes:
        if key is None or at is None:
            return body
        if key not in self._data:
            try:
                row = self._db.execute("SELECT data FROM blobs WHERE key = ?", (key,)).fetchone()
            except sqlite3.DatabaseError as exc:
                self._out.met(exc)
                row = None
            self._data[key] = None if row is None else bytes(row[0])
        data = self._data[key]
        if data is None:
            self._out.lost_strings.add((trace_id, span_id))
            data = LOST
        return whole(body, at, data)


def _format(db: sqlite3.Connection) -> str | None:
    """The damaged file's format, from its meta (None when unreadable or not recorded: `sgp`)."""
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


def _walk(db: sqlite3.Connection, table: str, key: str, cols: str, out: Salvage) -> Iterator[tuple[Any, ...]]:
    """`(key, *cols)` of every readable row of `table`, in key order, skipping what raises (the rows of a skipped
    stretch are uncounted, except in the span table, whose index counts them)."""
    page = f"SELECT {key}, {cols} FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?"
    last = -(2**63)
    top = _max_key(db, table, key)
    while True:
        limit = _CHUNK
        try:
            rows = db.execute(page, (last, limit)).fetchall()
        except sqlite3.DatabaseError as exc:
            out.met(exc)
            limit = 1  # the damage is in this page of rows: one at a time up to it
            try:
                rows = db.execute(page, (last, limit)).fetchall()
            except sqlite3.DatabaseError:
                out.uncounted |= table != "spans"
                skipped = _skip(db, page, last, top)
                if skipped is None:
                    return
                last = skipped
                continue
        yield from rows
        if len(rows) < limit:
            return
        last = rows[-1][0]


def _skip(db: sqlite3.Connection, page: str, last: int, top: int | None) -> int | None:
    """A key past the damage after `last` from which the table reads again (probing 1, 2, 4, ... keys ahead), or
    None when none is found up to the largest key (`top`, when readable)."""
    step = 1
    limit = top if top is not None else 2**62
    while last + step <= limit:
        probe = last + step
        try:
            db.execute(page, (probe, 1)).fetchall()
        except sqlite3.DatabaseError:
            step *= 2
            continue
        return probe
    return None


def _max_key(db: sqlite3.Connection, table: str, key: str) -> int | None:
    try:
        row = db.execute(f"SELECT max({key}) FROM {table}").fetchone()
    except sqlite3.DatabaseError:
        return None
    return None if row is None or row[0] is None else int(row[0])


def _indexed(db: sqlite3.Connection, out: Salvage) -> Iterator[int]:
    """Every `seq` the span table's unique index names, as far as the index reads."""
    try:
        for (seq,) in db.execute("SELECT seq FROM spans INDEXED BY sqlite_autoindex_spans_1"):
            yield seq
    except sqlite3.DatabaseError as exc:
        out.met(exc)
        out.uncounted = True


def _span_at(db: sqlite3.Connection, seq: int, out: Salvage, cols: str) -> tuple[Any, ...] | None:
    """The span row at `seq` (a direct look-up, past any damaged stretch), or None when it cannot be read."""
    try:
        row: tuple[Any, ...] | None = db.execute(f"SELECT {cols} FROM spans WHERE seq = ?", (seq,)).fetchone()
    except sqlite3.DatabaseError as exc:
        out.met(exc)
        return None
    return row


def _totals(db: sqlite3.Connection, out: Salvage) -> dict[str, int] | None:
    try:
        rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as exc:
        out.met(exc)
        return None
    return {k: int(rows.get(k) or 0) for k in _TOTALS}
