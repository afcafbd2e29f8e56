"""`Spool`: the front. `put` on the hot path, a group-commit writer, and a drainer when there is a sink."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import sqlite3
import threading
import time
import warnings
from asyncio import _get_running_loop
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self, cast

import orjson

from ._blobs import MIN_BODY, Blobs, Split
from ._config import SpoolConfig, default_path
from ._counters import COUNTERS, DROP_REASONS
from ._dbthread import DbThread
from ._drainer import Drainer
from ._errors import DeliveryError, SpoolClosedError
from ._fork import watch_fork
from ._formats import format_named
from ._heal import open_store_healing
from ._items import Encoded, encode_checked, encode_fast
from ._reader import HOLD_WAIT, Reader
from ._retry import Sleep
from ._sink import Sink
from ._stats import SpoolStats
from ._store import Store, body_bytes, is_busy, rows_cost, split_rows
from ._trim import Trimmer
from .redact import Redactor

__all__ = ["LATER_BYTES", "Later", "Spool"]

log = logging.getLogger("spool")

LATER_BYTES = 1024
"""What a `put_later` row counts against `max_pending_bytes` before it is encoded (an estimate: one shared object)."""
_LATER_BODY = bytes(LATER_BYTES)


class Later(NamedTuple):
    """A queued row encoded on the database thread just before its commit (`Spool.put_later`)."""

    trace_id: str
    span_id: str
    is_end: bool
    body: bytes  # what stands for the row in `body_bytes` (`_LATER_BODY` when not known yet)
    obj: Any
    encode: Callable[[Any], Encoded | None]  # None: the row is dropped (counted by `encode`)


class Spool:
    """A durable buffer of span items in one SQLite file, drained to `sink` (None: store only).

    Durability: `put` returns once the item is validated and queued in memory; the group-commit writer writes
    everything queued within `commit_interval` in one transaction, and `await commit()` returns once every earlier
    `put` is on disk. Rows leave the file only when the sink has taken them (or as dead letters, or as counted
    overflow drops). The spool follows the running event loop: its writer and drainer tasks are re-created on a new
    loop (the sink is not bound to a loop), and puts made under a loop that died are committed on the next one. Use
    it from one loop at a time.

    A file that is not a usable spool, at open or when a query later finds it damaged, is moved aside
    (`<name>.corrupt-<time>`, kept for `spool recover`) and the spool goes on with a fresh file, reporting it in
    `last_error`; `heal=False` raises `SpoolCorruptError` instead and never moves the file (for tools).

    `redact` (`spool.redact`): each item as it is stored and sent is what `redact` returns for it (None drops it,
    counted as `dropped_redacted`); it runs on the database thread before the commit, never raising into `put`.

    A file holds one storage format (`format`: `sgp`, or `otlp` for OpenTelemetry spans), fixed when it is created:
    the sink's `format`, else `sgp`. The constructor opens (or creates) the file and may
    raise `SpoolError` subclasses (`SpoolConfigError` for a sink of the other format) or `OSError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        sink: Sink | None = None,
        config: SpoolConfig | None = None,
        sleep: Sleep = asyncio.sleep,
        heal: bool = True,
        redact: Callable[[Mapping[str, Any]], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.config = config or SpoolConfig()
        self.path = Path(path) if path is not None else default_path()
        self._store: Store = open_store_healing(self.path, self.config, heal=heal)[0]
        try:
            self.format: str = self._store.claim_format(sink.format if sink is not None else None)
        except BaseException:
            self._store.close()
            raise
        self._takes_items = format_named(self.format).takes_items  # (else OpenTelemetry spans, by `put_later`)
        self._db = DbThread()
        self._sink = sink
        self._reader = Reader(self.path)
        self._drainer = (
            Drainer(self._store, self._db, sink, self.config, sleep=sleep, hold=self._near_cap_hold)
            if sink is not None
            else None
        )
        self._max_item_bytes = self.config.max_item_bytes
        self.redact = redact
        """Applied to each item before it is stored (`spool.redact`); None: items are stored as given."""
        self._screen = redact.screen if isinstance(redact, Redactor) else None
        self._redact_logged: set[str] = set()
        self._lock = threading.Lock()
        self._pending: list[Encoded | Split | Later] = []
        self._later = False  # a `put_later` was made: commits look for rows to encode
        # Uncommitted bytes: in `_pending` (give or take the one a concurrent put is adding), and in batches taken
        # from it whose commit has not returned (changed on the loop's thread only).
        self._pending_bytes = self._committing_bytes = 0
        self._max_pending_bytes = self.config.max_pending_bytes
        self._memory_drops = self._memory_drops_saved = 0  # puts dropped at `max_pending_bytes`; recorded in the file
        self._signaled = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake: asyncio.Event | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._since_kick = 0
        self._write_error: str | None = None
        self._dropped_unsaved = 0
        self._dropped: collections.Counter[str] = collections.Counter()  # spans dropped here, by reason
        self._drops_logged_at = -60.0  # monotonic time of the last "dropped" log line
        self._drops_unlogged = 0
        self._trim = Trimmer()
        self._blobs = Blobs()
        self._saving = 0  # bumped before and after each append (see `_read_stats`)
        watch_fork(self)

    # -- the hot path -----------------------------------------------------------------------------------------

    def put(self, item: Mapping[str, Any]) -> None:
        """Queue one span item. Sync, non-blocking, thread-safe.

        When the bytes queued and not yet committed (waiting, or in a commit not yet done) would pass
        `max_pending_bytes` (the disk is slower than the producers), the item is dropped and counted
        (`dropped_memory`), logged at most once a minute.
        Raises `ValueError` / `TypeError` (naming the key) for an invalid item or an `otlp` spool,
        `SpoolClosedError` after close.
        """
        if self._closed or not self._takes_items:
            self._refuse()
        # A burst (or a stalled disk): keep waiting bodies at their size, not orjson's 4+ KiB (`compact`).
        compact = len(self._pending) > 512
        # `encode_item`, unrolled (one call less): the common case, else every check and its error message.
        enc = encode_fast(item, self._max_item_bytes, None, compact) if type(item) is dict else None
        if enc is None:
            enc = encode_checked(item, self._max_item_bytes, compact=compact)
        if self.redact is not None:
            if len(enc.body) < MIN_BODY:  # redacted on the database thread, just before its commit
                self._later = True
                self._enqueue(Later(enc.trace_id, enc.span_id, enc.is_end, enc.body, enc, self._redact_encoded))
                return
            redacted = self.redact_item(item)  # (a large item is split below, from the item as redacted)
            if redacted is None:
                return
            item = redacted
            enc = encode_checked(item, self._max_item_bytes, compact=compact)
        row: Encoded | Split = enc
        if len(enc.body) >= MIN_BODY:  # a large item: its repeated string (a system prompt) is kept once
            row = self._blobs.split(enc, item)
        self._enqueue(row)

    def _redact_encoded(self, enc: Encoded) -> Encoded | None:
        """On the database thread: `enc` as `redact` leaves its item (None: dropped, counted). A `Redactor`'s
        `screen` passes most items untouched; the others are redacted from their stored JSON and encoded again."""
        if self._screen is not None and not self._screen(enc.body):
            return enc
        item = self.redact_item(orjson.loads(enc.body))
        if item is None:
            return None
        try:
            return encode_checked(item, self._max_item_bytes)
        except (TypeError, ValueError) as exc:
            self._dropped["redacted"] += 1
            log.error("spool: the redactor returned an item that cannot be stored (%s); dropped", exc)
            return None

    def redact_item(self, obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """`obj` as `redact` leaves it; None when it is dropped: by the redactor, or because it raised (counted in
        `dropped_redacted`, the first failure of each kind logged). Never raises."""
        assert self.redact is not None
        try:
            out = self.redact(obj)
        except Exception as exc:
            self._dropped["redacted"] += 1
            kind = type(exc).__name__
            if kind not in self._redact_logged:
                self._redact_logged.add(kind)
                log.error("spool: the redactor raised %s: %s; the item was dropped (dropped_redacted)", kind, exc)
            return None
        if out is None:
            self._dropped["redacted"] += 1
        return out

    def _refuse(self) -> None:
        if self._closed:
            raise SpoolClosedError(f"spool {self.path} is closed")
        raise ValueError(
            f"{self.path} is an otlp spool: it takes OpenTelemetry spans (spool.otel.SpoolSpanProcessor), not SGP items"
        )

    def put_rows(self, rows: Sequence[Encoded]) -> None:
        """Queue rows encoded and validated already (the spans of a request `spool serve` took), as `put` queues an
        item's: the same commit, the same `max_pending_bytes` (a row past it is dropped and counted). Sync,
        non-blocking, thread-safe; raises `SpoolClosedError` after close."""
        if self._closed:
            raise SpoolClosedError(f"spool {self.path} is closed")
        for row in rows:
            self._enqueue(row)

    @property
    def blocked(self) -> DeliveryError | None:
        """Why delivery is paused on configuration (credentials refused, no API at the URL, every request refused
        alike); None while it is not."""
        return self._drainer.blocked if self._drainer is not None else None

    @property
    def write_error(self) -> str | None:
        """Why the last commit failed (a full or failing disk); None once one succeeds."""
        return self._write_error

    def put_later(self, obj: Any, encode: Callable[[Any], Encoded | None]) -> None:
        """Queue `obj`, to be encoded by `encode(obj)` on the database thread just before its commit (an
        OpenTelemetry span: encoding costs more than the caller should wait). `obj` must not change afterwards.
        Counted as `LATER_BYTES` against `max_pending_bytes`. Sync, non-blocking, thread-safe; raises
        `SpoolClosedError` after close. An `encode` that raises loses the span: logged, counted as `unencodable`."""
        if self._closed:
            raise SpoolClosedError(f"spool {self.path} is closed")
        self._later = True
        self._enqueue(Later("", "", True, _LATER_BODY, obj, encode))

    def _enqueue(self, row: Encoded | Split | Later) -> None:
        running = _get_running_loop()
        if running is not None and running is not self._loop and not self._owner_alive():
            self._bind(running)
        size = len(row.body)
        if self._pending_bytes + self._committing_bytes + size > self._max_pending_bytes:
            self._memory_drops += 1
            self._note_drops(1, f"max_pending_bytes={self._max_pending_bytes} reached: the disk is behind")
            return
        self._pending_bytes += size
        # No lock (it cost ~100 ns a put): `list.append` is atomic, and `_commit_pending` lowers the flag before it
        # takes the list's items, so an item it missed was appended after that, and its put finds the flag down.
        self._pending.append(row)
        if not self._signaled:
            self._signaled = True
            self._signal()

    def _owner_alive(self) -> bool:
        """The bound loop still runs (in another thread): puts from elsewhere signal it rather than take over."""
        return self._loop is not None and self._loop.is_running() and not self._loop.is_closed()

    def _signal(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return  # committed when a loop next binds
        if threading.get_ident() == self._loop_thread:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wake.set)

    # -- loop binding and the writer --------------------------------------------------------------------------

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._writer_task = loop.create_task(self._writer(self._wake), name="spool-writer")
        if self._drainer is not None:
            self._drainer.bind(loop)
        with self._lock:
            self._signaled = bool(self._pending)
        if self._signaled:
            self._wake.set()

    def _bound(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        return loop

    async def _writer(self, wake: asyncio.Event) -> None:
        linger = self.config.commit_interval
        try:
            while True:
                await wake.wait()
                if linger:
                    await asyncio.sleep(linger)
                wake.clear()
                await self._commit_pending()
        except asyncio.CancelledError:
            # The loop is ending (asyncio.run returning) or the spool is closing: commit what is queued, and close
            # this loop's connections, which must not outlive it.
            with contextlib.suppress(RuntimeError):  # closed already: `aclose` committed before it closed
                await self._commit_pending()
            if self._sink is not None:
                self._sink.close()
            raise

    async def _commit_pending(self) -> None:
        with self._lock:  # one taker at a time; `put` appends without it (see there)
            self._signaled = False
            pending = self._pending
            batch = pending[:]
            del pending[: len(batch)]  # only takers remove items, and only from the front
            # Counted again, not decremented: a put racing this (its `+=` against this store) is off by one item
            # until the next commit, never more.
            self._pending_bytes = body_bytes(pending)
            taken = body_bytes(batch)
            self._committing_bytes += taken
        # Submitted before any await: the DB thread runs commits in the order they were taken from the list.
        try:
            await self._db(self._write, batch)
        finally:
            self._committing_bytes -= taken
        self._since_kick += len(batch)
        del batch  # freed before a trim
        if self._trim.due(idle=not self._pending):
            self._db.submit(self._trim.trim)
        if self._drainer is not None and self._since_kick >= self.config.flush_trigger:
            self._since_kick = 0
            self._drainer.kick()

    def _write(self, batch: list[Encoded | Split | Later]) -> None:
        """On the DB thread: commit `batch`, in transactions of at most the WAL's checkpoint size. Never raises.

        Spans the disk cap refuses or evicts, and the spans of a commit a failing disk (full, I/O error, read-only)
        did not take, are dropped: counted in `dropped_total` (drops the disk refused are kept in memory and
        recorded by the next commit that succeeds), logged at most once a minute; a disk failure also sets
        `last_error` until a commit succeeds. A lock held by another process is waited out, never a drop.
        Near the disk cap, the commit runs with no stats read of this process in progress (`_near_cap_hold`).
        """
        memory = self._memory_drops - self._memory_drops_saved
        if not batch and not self._dropped_unsaved and not memory:
            return
        rows = self._encode_later(batch) if self._later else cast("list[Encoded | Split]", batch)
        cost = rows_cost(rows)  # once: the split, the cap check and the trimmer share it
        chunks = split_rows(rows, self._store.chunk_bytes, cost) or [rows]
        with self._near_cap_hold():
            lost, error = self._write_chunks(chunks, cost, memory)
        if error is None:
            self._write_error = None
            self._trim.committed(cost)
            return
        self._dropped_unsaved += lost
        self._dropped["disk_error"] += lost
        self._write_error = f"commit failed ({self._dropped_unsaved} spans dropped): {type(error).__name__}: {error}"
        self._note_drops(lost, self._write_error, logging.ERROR)

    def _encode_later(self, batch: list[Encoded | Split | Later]) -> list[Encoded | Split]:
        """`batch` with each `Later` encoded; one whose `encode` raises is dropped (counted, logged), one it gives
        None for was dropped by it (the redactor)."""
        out: list[Encoded | Split] = []
        for row in batch:
            if type(row) is not Later:
                out.append(row)  # type: ignore[arg-type]
                continue
            try:
                enc = row.encode(row.obj)
            except Exception as exc:
                self._dropped_unsaved += 1
                self._dropped["unencodable"] += 1
                self._note_drops(1, f"a span could not be encoded: {type(exc).__name__}: {exc}", logging.ERROR)
                continue
            if enc is not None:
                out.append(enc)
        return out

    def _near_cap_hold(self) -> contextlib.AbstractContextManager[object]:
        """Entered around every commit and every delete (on the DB thread): near the disk cap, no stats read of this
        process is in progress inside (`Reader.holding`). A read holds the WAL, so no checkpoint can start it over, and
        the write would grow it past the cap; it waits for one read at most (~0.1 s on 1M rows). Far from the cap
        nothing waits."""
        return self._reader.holding(HOLD_WAIT) if self._store.near_cap() else contextlib.nullcontext()

    def _write_chunks(
        self, chunks: list[Sequence[Encoded | Split]], cost: int, memory: int
    ) -> tuple[int, sqlite3.Error | None]:
        """`_write`'s transactions, one per chunk; returns the spans lost and the error that lost them."""
        error: sqlite3.Error | None = None
        lost = 0
        n = 0
        while n < len(chunks):
            chunk = chunks[n]
            n += 1
            if error is None:
                try:
                    if n > 1:  # a big commit: each chunk starts the WAL over (see `Store.checkpoint`), never grows it
                        self._store.checkpoint()
                    refused = self._append(chunk, cost if len(chunks) == 1 else None, memory)
                    memory = 0
                except sqlite3.Error as exc:
                    error = exc
                else:
                    if refused:
                        self._dropped["overflow"] += refused
                        self._note_drops(refused, f"{self._store.full}, {self.config.overflow}")
                    if refused == len(chunk) and n < len(chunks) and self.config.overflow == "drop_newest":
                        # The cap refused the whole chunk, and will the rest: one transaction records it, not one each
                        chunks[n:] = [list(itertools.chain.from_iterable(chunks[n:]))]
                    continue
            lost += len(chunk)
        return lost, error

    def _append(self, rows: Sequence[Encoded | Split], cost: int | None, memory: int) -> int:
        """`Store.append`, retried while another connection holds the lock; records the unsaved drop counts
        (`memory`: puts dropped at `max_pending_bytes` since the last record)."""
        delay = 0.01
        while True:
            self._saving += 1  # odd while the drop counts may be in the file and in memory at once (see `stats`)
            try:
                refused = self._store.append(rows, dropped=self._dropped_unsaved, dropped_memory=memory, cost=cost)
            except sqlite3.Error as exc:
                if not is_busy(exc):
                    raise
                if delay == 0.01:
                    log.warning("spool: %s is locked by another connection (%s); retrying the commit", self.path, exc)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            else:
                self._dropped_unsaved = 0
                self._memory_drops_saved += memory
                return refused
            finally:
                self._saving += 1

    def _unsaved_drops(self) -> int:
        return self._dropped_unsaved + self._memory_drops - self._memory_drops_saved

    def _file_stats(self) -> SpoolStats:
        """On the DB thread, so the unsaved drop count is read in step with the commits that save it."""
        return self._store.stats(self._unsaved_drops())

    def _note_drops(self, n: int, why: str, level: int = logging.WARNING) -> None:
        """Log dropped spans at most once a minute, with the count since the previous line."""
        self._drops_unlogged += n
        now = time.monotonic()
        if now - self._drops_logged_at >= 60.0:
            log.log(level, "spool: %d spans dropped (%s); see dropped_total", self._drops_unlogged, why)
            self._drops_logged_at, self._drops_unlogged = now, 0

    # -- fork -------------------------------------------------------------------------------------------------

    def _before_fork(self) -> None:
        self._reader.before_fork()  # (the database thread pauses itself)

    def _after_fork(self, child: bool) -> None:
        """In a fork child: a connection of its own (opened first on the new database thread), no loop until one
        binds, and an empty queue: what the parent had put but not committed is the parent's to commit."""
        self._reader.after_fork(child)
        if not child or self._closed:
            return
        self._lock = threading.Lock()
        self._pending, self._signaled, self._since_kick = [], False, 0
        self._pending_bytes = self._committing_bytes = 0
        self._memory_drops = self._memory_drops_saved = 0
        self._blobs = Blobs()  # (its lock may have been held by a thread of the parent)
        self._saving = 0
        self._loop, self._loop_thread, self._wake, self._writer_task = None, 0, None, None
        self._write_error, self._dropped_unsaved, self._dropped = None, 0, collections.Counter()
        self._db.submit(self._store.reopen)
        if self._drainer is not None:
            self._drainer.forked()

    # -- async API --------------------------------------------------------------------------------------------

    async def commit(self) -> None:
        """Return once every earlier `put` is on disk (or counted as dropped if the disk refused it)."""
        self._bound()
        await self._commit_pending()

    async def flush(self, timeout: float | None = 30.0, *, batch_size: int | None = None, strict: bool = False) -> bool:
        """Commit, then deliver until nothing is pending, trying cooled-down and paused rows at once.

        Returns True when the file holds no pending rows (dead letters do not count) at return; False when rows
        remain at `timeout` (leased by another live drainer, backend down), and False at once when only
        configuration blocks delivery (credentials refused, no span API at the URL, every request refused alike):
        found by this call, or already in force, in which case no request goes out before the pause it set has run
        (one probe per pause period).
        Never raises for delivery failures; without a sink it only commits. `strict=True` (what `spool flush` uses)
        raises the `CredentialsError` (401/403), `EndpointError` (404) or `RequestRefusedError` (every request refused
        alike) that stopped delivery instead; the rows stay pending.
        """
        loop = self._bound()
        await self.commit()
        if self._drainer is None:
            return await self._pending_rows() == 0
        drainer = self._drainer
        deadline = None if timeout is None else loop.time() + timeout
        delay = 0.02
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    if drainer.blocked is None or not drainer.policy.paused():  # at most one probe per pause period
                        await drainer.drain(force=True, batch_size=batch_size)
                    if drainer.blocked is not None:  # only configuration can unblock it: no use waiting
                        if strict:
                            raise drainer.blocked
                        return await self._pending_rows() == 0
                    if await self._pending_rows() == 0:
                        return True
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
        except TimeoutError:
            return await self._pending_rows() == 0

    async def _pending_rows(self) -> int:
        """Rows pending in the file; -1 when it cannot be read (a failing disk): not known to be empty."""
        try:
            return (await self._db(self._store.counts))[0]
        except sqlite3.Error:
            return -1

    async def stats(self) -> SpoolStats:
        """A snapshot of the file (totals persist across restarts), including other processes' rows.

        Read on a connection of its own (`Reader`): it never waits behind a commit, nor a commit behind it (near the
        disk cap, a commit waits for one read in progress: see `_write`). When that read fails (a damaged file), the
        store's own connection reads, and heals the file as a commit would."""
        self._bound()
        try:
            st = await self._read_stats()
        except sqlite3.Error:
            st = await self._db(self._file_stats)
        error = self._write_error or (self._drainer.store_error if self._drainer is not None else None)
        if error is not None:
            from dataclasses import replace

            st = replace(st, last_error=error)
        return st

    async def _read_stats(self) -> SpoolStats:
        """`Reader.stats`, its `dropped_total` read again with the drops not recorded yet, in step with the commit
        that records them: retried while a commit that may record them ran meanwhile (a seqlock on `_saving`)."""
        from dataclasses import replace

        st = await self._reader.stats()
        for _ in range(10):  # (one quick statement: a commit rarely runs meanwhile)
            before = self._saving
            dropped = await self._reader.dropped_total()
            unsaved = self._unsaved_drops()
            if before % 2 == 0 and self._saving == before:
                break
        return replace(st, dropped_total=dropped + unsaved)

    def metrics(self, *, gauges: bool = True) -> dict[str, int | float | None]:
        """A flat, plain dict for any metrics system (see also `spool.otel.instrument`).

        Counters, this process since open: every key of `spool._counters.COUNTERS` (`spool.otel.COUNTERS` gives each
        one's unit and description), with the sink's `counters()` added in, and `dropped` (spans lost: never
        committed) with `dropped_<reason>` for each of `DROP_REASONS` (`overflow`: the disk cap; `disk_error`: a
        commit failed; `memory`: `put` past `max_pending_bytes`).
        Gauges (`gauges=True`): the file's `SpoolStats` numbers under their own names (`pending`, `inflight`,
        `dead`, `oldest_age_s`, `db_bytes`, `delivered_total`, `dropped_total`), every process included.

        Reading the gauges blocks the calling thread for one read of the file (milliseconds; tens on a 1M-row
        backlog), on a connection of its own when called outside an event loop: call it from a metrics thread, or
        use `await stats()` on the event loop. After close, or with
        `gauges=False`, only the counters. Never raises.
        """
        counts = collections.Counter(self._drainer.counters if self._drainer is not None else ())
        counts.update(self._sink.counters() if self._sink is not None else {})
        out: dict[str, int | float | None] = {key: counts[key] for key in {**COUNTERS, **counts}}
        dropped = {reason: self._dropped[reason] for reason in sorted({*DROP_REASONS, *self._dropped})}
        dropped["memory"] += self._memory_drops
        out["dropped"] = sum(dropped.values())
        out.update({f"dropped_{reason}": n for reason, n in dropped.items()})
        if gauges and not self._closed:
            try:
                if _get_running_loop() is None:  # a metrics thread: read beside the store's thread, as `stats` does
                    st = asyncio.run(self._read_stats())
                else:  # (called on a loop, which must not be blocked on another)
                    st = self._db.submit(self._file_stats).result()
            except Exception:  # closed meanwhile, or the file is unreadable: counters only
                return out
            out.update({k: v for k, v in st.to_dict().items() if k not in ("last_error", "format")})
        return out

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop accepting, commit, deliver for up to `timeout` (default `shutdown_timeout`), release leases, close.

        What was not delivered stays in the file. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._bound()
            await self.commit()
            if self._drainer is not None:
                wait = self.config.shutdown_timeout if timeout is None else timeout
                if wait > 0:
                    await self.flush(wait)
                await self._drainer.stop()
            if self._writer_task is not None and self._writer_task.get_loop() is asyncio.get_running_loop():
                self._writer_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer_task
            if self._sink is not None:
                self._sink.close()
        finally:
            await self._reader.aclose()
            with contextlib.suppress(sqlite3.Error):  # a failing disk: what was not written is counted already
                await self._db(self._store.close)
            self._db.close()

    async def __aenter__(self) -> Self:
        self._bound()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"Spool {self.path} was never closed (await spool.aclose())", ResourceWarning, stacklevel=1)

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r}, sink={self._sink!r})"
