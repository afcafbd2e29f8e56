"""The rows' way through the file: append (coalescing by span, the disk cap), claim under a lease, complete, release,
dead letters and back. Every method is one transaction.

Rows are keyed by `(trace_id, span_id)`; each update bumps `version`, and delivery deletes only the version that was
sent. Nothing is deleted except by `complete` (delivered), `to_dead` (moved to the dead table), `dead_purge` and the
overflow policy (counted in `dropped_total`).

Leases: a claim takes up to `limit` deliverable rows from the first run of `seq`s that no live lease covers, and
records one row in `leases` (owner, the claim's first and last `seq`, `until`): the span rows themselves are not
rewritten, which halves the cost of a claim. Other drainers skip every `seq` inside a live lease's range until it
ends (completed, released, or expired; expired leases are deleted by the next claim, and a lease that is gone cannot
be renewed, so its holder drops the rows it had not sent yet).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import operator
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from ._blobs import Split
from ._formats import row_sql
from ._items import Encoded
from ._schema import FORGET_BLOB, WHOLE_BODY, span_key
from ._storebase import (
    HEADROOM,
    MAX_SEQ,
    SHM_RESERVE,
    Row,
    StoreBase,
    bytes_of,
    file_size,
    fs_free,
    heals,
    id_filter,
    whole_row,
)

__all__ = [
    "ENDED_MAX",
    "ENDED_SECONDS",
    "Claimed",
    "Queue",
    "body_bytes",
    "coalesce",
    "row_cost",
    "rows_cost",
    "split_rows",
]


ENDED_SECONDS = 3600.0

ENDED_MAX = 100_000

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


def coalesce(stored: tuple[bytes, bool] | None, body: bytes, is_end: bool, end_delivered: bool) -> str:
    """The coalescing rule, as `append` runs it in SQL (`_NOT_ENDED`, then `_ON_CONFLICT`), for one row of a span
    (`stored`: the span's row as (bytes, is_end), None if none): "new", "updated" (its bytes replace the row's, one
    `version` up) or "unchanged". An end always wins; a start wins only over a start; the same bytes are no update;
    a start whose end was already delivered is not stored (sent after its end, it would undo it)."""
    if end_delivered and not is_end:
        return "unchanged"
    if stored is None:
        return "new"
    if stored[0] != body and (is_end or not stored[1]):
        return "updated"
    return "unchanged"


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


def row_cost(row: Row) -> int:
    """A generous estimate of the disk bytes one row takes (body, ids in the row and in the unique index, page
    slack); measured ~1.46 KB for a 1,073-byte body, estimated 1.54 KB. Only used for the cap's arithmetic."""
    return len(row.body) + (len(row.body) >> 3) + 4 * (len(row.trace_id) + len(row.span_id)) + 96


_trace_of, _span_of, _body_of = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(3)


# What a dead letter's body says, in SQL: an `sgp` body is JSON (it starts with `{`); an `otlp` body is protobuf,
# which SQLite's JSON functions refuse (`otlp_name` reads its name), and is always a finished span.
_NAME = row_sql(lambda f: f.name_sql)
_ENDED = row_sql(lambda f: f.ended_sql)


def body_bytes(rows: Sequence[Any]) -> int:
    """The bytes of the bodies of `rows` (anything with its body at index 3: rows, and the spool's `Later`), with no
    Python step per row."""
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


def _within(rows: list[Any], max_bytes: int) -> list[Any]:
    """The first of `rows` (claimed: the body is the fourth column) whose bodies fit `max_bytes`; at least one."""
    total = 0
    for i, row in enumerate(rows):
        total += len(row[3])
        if total > max_bytes and i:
            return rows[:i]
    return rows


class Claimed(NamedTuple):
    """One leased row: what was sent, which version of which span, and the lease (a row of `leases`) that holds it.
    (A NamedTuple: a claim builds one per row, on the store's thread, holding the GIL; a frozen dataclass costs ~4x as
    much to make.)"""

    seq: int
    version: int
    attempts: int
    body: bytes
    lease: int
    trace_id: str
    span_id: str
    is_end: int


def _covered(live: Sequence[tuple[int, int]], seq: int) -> bool:
    """`seq` lies in one of `live`'s sorted, disjoint ranges."""
    i = bisect.bisect_right(live, (seq, MAX_SEQ)) - 1
    return i >= 0 and live[i][0] <= seq <= live[i][1]


class Queue(StoreBase):
    """The rows' way through the file: append (the coalescing rule, the disk cap), claim under a lease, complete,
    release, dead letters and back."""

    @heals
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
            if dropped_memory or lost:
                self._name_drops(dropped_memory, lost)
        return lost

    def _name_drops(self, dropped_memory: int, lost: int) -> None:
        """Drops at the disk cap or at `max_pending_bytes` are named in `last_error` (not only counted), in the
        transaction that counts them. (Drops of a failing disk were named while it failed: see `Spool.stats`.)"""
        why = [
            f"{lost} by the {self.config.overflow} policy ({self.full})" if lost else "",
            f"{dropped_memory} at max_pending_bytes={self.config.max_pending_bytes} (the disk did not keep up)"
            if dropped_memory
            else "",
        ]
        self._record_error(f"{dropped_memory + lost} spans dropped: " + "; ".join(filter(None, why)))

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
                self._upsert([whole_row(r) for r in run], t)
        # A blob only a start refused by `ended` would have used: gone again.
        db.executemany(FORGET_BLOB.format(key="?1"), [(k,) for k in blobs])

    def outcomes(self, rows: Sequence[Row]) -> collections.Counter[str]:
        """What `append(rows)` would do with each row (`coalesce`), read now: counts of "new", "updated" and
        "unchanged". Rows of one span within `rows` meet each other as they would in the file."""
        seen: dict[tuple[str, str], tuple[bytes, bool] | None] = {}
        out: collections.Counter[str] = collections.Counter()
        find = f"SELECT {WHOLE_BODY}, is_end FROM spans WHERE trace_id = ? AND span_id = ?"
        ended = "SELECT 1 FROM ended_keys WHERE key = span_key(?, ?)"
        for r in rows:
            key = (r.trace_id, r.span_id)
            if key not in seen:
                row = self._db.execute(find, key).fetchone()
                seen[key] = None if row is None else (bytes(row[0]), bool(row[1]))
            delivered = not r.is_end and self._db.execute(ended, key).fetchone() is not None
            body = bytes_of(r)
            outcome = coalesce(seen[key], body, bool(r.is_end), delivered)
            out[outcome] += 1
            if outcome != "unchanged":
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
        space, less the growth already due (the database file up to its pages, the WAL up to that) and `HEADROOM`, kept
        for the drain side (a claim's lease, a delete) once producers are refused. Free pages count as room."""
        db, ps = self._db, self._page_size
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
        free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
        wal, shm = file_size(self._wal_path), file_size(self._shm_path)
        wal_peak = self._wal_limit * 3 // 2  # one transaction's pages (index, interior, freelist) past the estimate
        used = (pages - free) * ps + max(wal, wal_peak) + max(shm, SHM_RESERVE)
        due = max(0, pages * ps - file_size(self.path)) + max(0, wal_peak - wal) + max(0, SHM_RESERVE - shm)
        free_bytes = fs_free(self.path)
        cap_room, fs_room = self.config.max_bytes - used, free_bytes - due - HEADROOM + free * ps
        if cap_room <= fs_room:
            self.full = f"disk cap max_bytes={self.config.max_bytes} reached"
        else:
            self.full = f"the filesystem is full ({free_bytes} bytes free, kept for the spool's WAL and delivery)"
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

    def _live(self, now: float) -> list[tuple[int, int]]:
        """The `seq` ranges of live leases, sorted, overlaps merged; void leases (`LeaseBook.void`) are deleted first:
        their rows are free again."""
        db = self._db
        leases = db.execute("SELECT id, owner, until FROM leases").fetchall()
        if void := self.leases.void(leases, now, self.lease_bound):
            db.executemany("DELETE FROM leases WHERE id = ?", [(v,) for v in void])
        out: list[tuple[int, int]] = []
        for lo, hi in db.execute("SELECT lo, hi FROM leases ORDER BY lo"):
            if out and lo <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(out[-1][1], hi))
            else:
                out.append((lo, hi))
        return out

    @heals
    def claim(self, owner: str, limit: int, lease_seconds: float, *, force: bool = False) -> list[Claimed]:
        """Lease up to `limit` deliverable rows, oldest first, from the first run of rows no live lease covers.
        `force` ignores cool-downs (not others' leases)."""
        with self._tx():
            return self._claim(owner, limit, lease_seconds, force)

    def _claim(self, owner: str, limit: int, lease_seconds: float, force: bool) -> list[Claimed]:
        db, now = self._db, time.time()
        if limit <= 0:
            return []
        live = self._live(now)
        lease = random.getrandbits(62) + 1  # never reused: a holder whose lease expired cannot renew another's
        # (a cool-down further ahead than `cooldown_max` was set by a clock that was ahead: it counts as over)
        cooled = "" if force else " AND (next_attempt_at <= :now OR next_attempt_at > :now + :cool)"
        sql = f"""SELECT seq, version, attempts, {WHOLE_BODY}, :lease, trace_id, span_id, is_end FROM spans
                  WHERE seq > :after AND seq < :before{cooled} ORDER BY seq LIMIT :n"""
        after = -MAX_SEQ - 1
        for lo, hi in [*live, (MAX_SEQ, MAX_SEQ)]:
            if lo > after + 1:
                args = {
                    "after": after,
                    "before": lo,
                    "now": now,
                    "n": limit,
                    "lease": lease,
                    "cool": self.config.cooldown_max,
                }
                if rows := _within(db.execute(sql, args).fetchall(), self.claim_bytes):
                    db.execute(
                        "INSERT INTO leases (id, owner, lo, hi, until) VALUES (?, ?, ?, ?, ?)",
                        (lease, owner, rows[0][0], rows[-1][0], now + lease_seconds),
                    )
                    return list(map(Claimed._make, rows))
            after = max(after, hi)
        return []

    @heals
    def attempt_failed(self, lease: int, seqs: Iterable[int], lease_seconds: float) -> None:
        """Count one failed attempt on each row and renew the lease for the next one (nothing, when the lease is no
        longer ours: its rows may be another drainer's)."""
        with self._tx() as db:
            if db.execute("UPDATE leases SET until = ? WHERE id = ?", (time.time() + lease_seconds, lease)).rowcount:
                db.executemany("UPDATE spans SET attempts = attempts + 1 WHERE seq = ?", [(s,) for s in seqs])

    @heals
    def renew(self, lease: int, lease_seconds: float) -> bool:
        """Extend `lease` to `lease_seconds` from now. False when it is gone (it expired and another drainer's claim
        removed it): its rows may be another drainer's now."""
        with self._tx() as db:
            return (
                db.execute("UPDATE leases SET until = ? WHERE id = ?", (time.time() + lease_seconds, lease)).rowcount
                > 0
            )

    @heals
    def complete(self, sent: Sequence[Claimed]) -> int:
        """The sink took `sent`: delete exactly the versions sent (rows updated meanwhile stay, and are sent again
        once their lease ends) and clear `last_error` (a success, whichever process had it).

        Returns how many rows were deleted (added to `delivered_total` in the same transaction).
        """
        with self._tx():
            return self._complete(sent)

    @heals
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

    def _holds(self, lease: int) -> bool:
        """`lease` is still in the file, so its rows are still ours: a claim deletes a void lease before it takes the
        rows that lease held, and a lease id is never used twice."""
        return self._db.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone() is not None

    def _complete(self, sent: Sequence[Claimed]) -> int:
        db = self._db
        db.execute("DELETE FROM meta WHERE key IN ('last_error', 'last_error_at')")
        if not sent or not self._holds(sent[0].lease):
            return 0  # answered after its lease was given back or taken over: the rows may be another's now
        # (by seq, version and identity: a freed seq may be reused, and is never enough to match; `rowcount`, not
        # `total_changes`: a blob deleted with its last reference, by a trigger, is not a span)
        deleted = db.executemany(
            "DELETE FROM spans WHERE seq = ? AND version = ? AND trace_id = ? AND span_id = ?",
            [(c.seq, c.version, c.trace_id, c.span_id) for c in sent],
        ).rowcount
        if self.records_ends:
            self._record_ends(sent)
        self._bump("delivered_total", deleted)
        return deleted

    def _record_ends(self, sent: Sequence[Claimed]) -> None:
        """Every end sent is now delivered, its row deleted or not (one updated meanwhile by a later end): its start
        must not be sent after it."""
        db = self._db
        at = self._ended_at()
        ended = [(span_key(c.trace_id, c.span_id), at) for c in sent if c.is_end]
        db.executemany("INSERT INTO ended_keys (key, at) VALUES (?, ?)", ended)
        self._ended_new += len(ended)
        mono = time.monotonic()
        if self._ended_new > self.ended_keep // 16 or mono > self._ended_forgot_at + 60:
            self._forget_ends(at)
            self._ended_new, self._ended_forgot_at = 0, mono

    def _ended_at(self) -> float:
        """The time an end delivered now is recorded at: this process's clock, but never before the record's newest
        entry (so its oldest entries stay a prefix) and never further past it than this process has itself seen time
        pass (monotonic) since it last recorded one: a clock hours ahead cannot age the record by hours."""
        row = self._db.execute("SELECT at FROM ended_keys ORDER BY id DESC LIMIT 1").fetchone()
        mono, last = time.monotonic(), self._ended_looked
        self._ended_looked = mono
        if row is None:
            return time.time()
        newest = float(row[0])
        return newest if last is None else max(newest, min(time.time(), newest + (mono - last)))

    def _forget_ends(self, newest: float) -> None:
        """Forget the ends past the record's bounds, in bulk (once a 16th of `ended_keep` more were recorded, or a
        minute passed): beyond the last `ended_keep`, and older than `ENDED_SECONDS` before the record's `newest`
        entry (never by one process's clock). The oldest are a prefix of `ended_keys`, and one pass over the index
        costs far less than a deletion per recorded end."""
        db = self._db
        db.execute("DELETE FROM ended_keys WHERE id <= (SELECT max(id) FROM ended_keys) - ?", (self.ended_keep,))
        db.execute(
            """DELETE FROM ended_keys WHERE id < coalesce(
                (SELECT id FROM ended_keys WHERE at >= ? ORDER BY id LIMIT 1), (SELECT max(id) + 1 FROM ended_keys))""",
            (newest - ENDED_SECONDS,),
        )

    @heals
    def release(self, lease: int, seqs: Sequence[int] = (), next_attempt_at: float | None = None) -> None:
        """End `lease`: its rows are free again; with `next_attempt_at`, `seqs` cool down until then (only while the
        lease was ours: its rows may be another drainer's once it is gone)."""
        with self._tx() as db:
            held = db.execute("DELETE FROM leases WHERE id = ?", (lease,)).rowcount
            if held and next_attempt_at is not None:
                db.executemany(
                    "UPDATE spans SET next_attempt_at = ? WHERE seq = ?", [(float(next_attempt_at), s) for s in seqs]
                )

    @heals
    def release_owner(self, owner: str) -> None:
        """End every lease `owner` holds (on close)."""
        with self._tx() as db:
            db.execute("DELETE FROM leases WHERE owner = ?", (owner,))

    @heals
    def to_dead(self, row: Claimed, status: int | None, detail: str | None) -> bool:
        """Move the sent version of a rejected row to the dead table. False if the row changed meanwhile (its newer
        version is tried once the lease ends), or the lease is no longer ours."""
        with self._tx() as db:
            if not self._holds(row.lease):
                return False
            moved = db.execute(
                f"""INSERT INTO dead (trace_id, span_id, name, body, status, detail, attempts, enqueued_at, failed_at,
                                     blob, blob_at)
                   SELECT trace_id, span_id, {_NAME}, body, ?, ?, attempts + 1, enqueued_at, ?,
                          blob, blob_at
                   FROM spans WHERE seq = ? AND version = ? AND trace_id = ? AND span_id = ?""",
                (status, detail, time.time(), row.seq, row.version, row.trace_id, row.span_id),
            ).rowcount
            if moved:
                db.execute("DELETE FROM spans WHERE seq = ?", (row.seq,))
                self._bump("dead_total", 1)
        return bool(moved)

    def dead_retry(self, ids: Sequence[int] | None) -> tuple[int, int]:
        """Move dead letters (all when `ids` is None) back to pending with a fresh attempt count. Where the span is
        pending again meanwhile, the coalescing rule decides: a dead end replaces a pending start, otherwise the
        pending row stays (it is newer). A dead start whose end was delivered (see `ended`) is removed instead: the
        server has the whole span, and the start sent now would undo its end. Returns (moved, removed)."""
        where, args = id_filter(ids)
        with self._tx() as db:
            stale = f"""({where}) AND NOT {_ENDED} AND EXISTS
                        (SELECT 1 FROM ended_keys WHERE key = span_key(dead.trace_id, dead.span_id))"""
            removed = int(db.execute(f"DELETE FROM dead WHERE {stale}", args).rowcount)
            db.execute(
                f"""INSERT INTO spans (trace_id, span_id, is_end, body, enqueued_at, blob, blob_at)
                    SELECT trace_id, span_id, {_ENDED}, body, enqueued_at,
                           blob, blob_at
                    FROM dead WHERE {where} ORDER BY id
                    ON CONFLICT (trace_id, span_id) DO UPDATE {_REPLACE_ROW}
                        WHERE excluded.is_end AND NOT spans.is_end""",
                args,
            )
            return int(db.execute(f"DELETE FROM dead WHERE {where}", args).rowcount), removed
