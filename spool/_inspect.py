"""Reading a spool file: statistics (`STATS_SQL`, also run by `Spool.stats` on a connection of its own), the
detail, bodies, checks and dead letters.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ._leases import LeaseBook, Owner
from ._schema import WHOLE_BODY
from ._stats import SpoolStats
from ._storebase import StoreBase, heals, id_filter, reading, spool_files

__all__ = ["STATS_SQL", "TOP_TRACES_MAX_ROWS", "DeadLetter", "Inspection", "stats_of"]

TOP_TRACES_MAX_ROWS = 100_000
"""Above this many pending rows, `Store.stats_detail` skips counting the top traces unless asked (time budget)."""

STATS_SQL = """SELECT (SELECT count(*) FROM spans),
    (SELECT count(*) FROM leases AS l JOIN spans AS s ON s.seq BETWEEN l.lo AND l.hi WHERE l.until > ?1),
    (SELECT enqueued_at FROM spans ORDER BY seq LIMIT 1),
    (SELECT count(*) FROM dead),
    (SELECT value FROM meta WHERE key = 'delivered_total'),
    (SELECT value FROM meta WHERE key = 'dropped_total'),
    (SELECT value FROM meta WHERE key = 'last_error'),
    (SELECT value FROM meta WHERE key = 'format')"""
"""`SpoolStats`' numbers from the file, in one statement (one snapshot; ?1 is now). Live leases never overlap (a
claim takes only rows no live lease covers), so the in-flight count is a sum over them."""


def stats_of(row: Sequence[Any], now: float, db_bytes: int, extra_dropped: int = 0) -> SpoolStats:
    """`SpoolStats` from a row of `STATS_SQL` read at `now`."""
    pending, inflight, oldest, dead, delivered, dropped, last_error, fmt = row
    return SpoolStats(
        pending=pending,
        inflight=inflight,
        dead=dead,
        oldest_age_s=None if oldest is None else max(0.0, now - oldest),
        db_bytes=db_bytes,
        delivered_total=int(delivered or 0),
        dropped_total=int(dropped or 0) + extra_dropped,
        last_error=last_error,
        format=fmt or "sgp",
    )


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


class Inspection(StoreBase):
    """Reading the file for people and tools: stats, the detail `spool stats` shows, bodies for export, checks, dead
    letters (listing and purging)."""

    def db_bytes(self) -> int:
        total = 0
        for f in spool_files(self.path):
            with contextlib.suppress(OSError):
                total += f.stat().st_size
        return total

    @heals
    def has_rows(self) -> bool:
        """Any pending row (one index step, unlike `counts`)."""
        return self._db.execute("SELECT 1 FROM spans LIMIT 1").fetchone() is not None

    @heals
    def counts(self) -> tuple[int, int, float | None]:
        """(pending, inflight, oldest enqueue time), read in one statement."""
        pending, inflight, oldest = self._db.execute(STATS_SQL, (time.time(),)).fetchone()[:3]
        return pending, inflight, oldest

    def leased(self) -> list[dict[str, Any]]:
        """Who holds pending rows now, by owner: `{"host", "pid", "spans", "until"}` (`until`: epoch seconds), most
        spans first; leases of processes of this host that no longer run are left out (they are void)."""
        book = LeaseBook()
        out = []
        for owner, spans, until in self._db.execute(
            """SELECT l.owner, count(*), max(l.until) FROM leases AS l JOIN spans AS s ON s.seq BETWEEN l.lo AND l.hi
               GROUP BY l.owner ORDER BY count(*) DESC"""
        ):
            parsed = Owner.parse(owner)
            if parsed is not None and book.state(owner) == "gone":
                continue
            host, pid = (parsed.host, parsed.pid) if parsed is not None else (owner.split(":")[0], None)
            out.append({"host": host, "pid": pid, "spans": spans, "until": until})
        return out

    @heals
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
        with reading(db):
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

    def check_quick(self) -> list[str]:
        """SQLite's `quick_check` of every table and index: each page's structure, over the whole file (what a write
        command runs before its first write: a write into a damaged page can spread the damage). Returns the problems
        found; empty when none. Reads the whole file: 0.5-0.8 s for 1 GB here (`scripts/check_cost.py`)."""
        try:
            problems = [" ".join(str(r[0]).split()) for r in self._db.execute("PRAGMA quick_check(10)")]
        except sqlite3.DatabaseError as exc:
            return [f"check failed: {exc}"]
        return [] if problems == ["ok"] else problems  # (each on one line: they end up in one `Error:` line)

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

    def dead_purge(self, ids: Sequence[int] | None = None, older_than: float | None = None) -> int:
        """Delete dead letters: by id, all (`ids` None), or failed more than `older_than` seconds ago."""
        where, args = id_filter(ids)
        if older_than is not None:
            where, args = f"({where}) AND failed_at < ?", [*args, time.time() - older_than]
        with self._tx() as db:
            return int(db.execute(f"DELETE FROM dead WHERE {where}", args).rowcount)
