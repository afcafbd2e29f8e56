"""`Reader`: `Spool.stats()` on a read-only connection of its own, through aiosqlite, so that a reader never waits
behind a commit and a commit never waits behind a reader (in WAL mode SQLite lets one writer and readers run at once;
the writes keep `DbThread`, where a whole transaction is one call).

Why aiosqlite here and not for writes: a stats read is one statement (`STATS_SQL`), exactly aiosqlite's one hop per
statement; a cancelled await leaves nothing half-done. A write transaction is several statements, and a cancelled
await between two of them must never leave it open.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosqlite

from ._errors import SpoolClosedError
from ._stats import SpoolStats
from ._store import STATS_SQL, readonly_uri, spool_files, stats_of

__all__ = ["HOLD_WAIT", "Reader"]

HOLD_WAIT = 1.0
"""How long a writer near the disk cap waits for a read in progress (`Reader.holding`); one takes ~0.1 s on 1M rows."""

_FORK_WAIT = 5.0


class Reader:
    """A lazily opened read-only aiosqlite connection to the spool at `path`, re-opened when the file at `path` was
    replaced (healed onto a fresh file) or after a fork. Usable from any event loop, several at once (aiosqlite
    answers each call on the loop that made it). Raises `sqlite3.Error` when the file cannot be read,
    `SpoolClosedError` once closed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._ino = 0
        self._closed = False
        # Fork safety (see `spool._fork`): a fork waits for the reads in progress, so the child never inherits
        # SQLite half-way through one (its locks held by a thread that is gone), and no read starts meanwhile.
        self._calls = threading.Condition()
        self._active = 0
        self._held = 0  # `holding` calls in progress
        self._forking = False

    async def stats(self, extra_dropped: int = 0) -> SpoolStats:
        now = time.time()
        row = await self._one(STATS_SQL, (now,))
        assert row is not None  # (one row, always)
        return stats_of(row, now, sum(_size(f) for f in spool_files(self.path)), extra_dropped)

    async def dropped_total(self) -> int:
        """The file's `dropped_total` alone (one index step)."""
        row = await self._one("SELECT value FROM meta WHERE key = 'dropped_total'")
        return 0 if row is None else int(row[0])

    async def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        """The first row of `sql`, counted as a read in progress for `before_fork`."""
        while True:  # a fork or a writer near the cap (`holding`) goes first: wait without blocking the loop
            with self._calls:
                if not (self._forking or self._held):
                    self._active += 1
                    break
            await asyncio.sleep(0.001)
        try:
            db = await self._connection()
            # One hop: the statement runs to its end and is reset in aiosqlite's thread, so the read transaction
            # never stays open between two hops of a busy loop (an open read stops a checkpoint: the WAL would grow).
            rows = await db.execute_fetchall(sql, args)
            return next(iter(rows), None)
        finally:
            with self._calls:
                self._active -= 1
                self._calls.notify_all()

    @contextlib.contextmanager
    def holding(self, timeout: float) -> Iterator[None]:
        """Inside, no read is in progress: the reads in progress end first (waited for at most `timeout` s) and new
        ones wait, on their loop without blocking it (a read holds a snapshot of the WAL, so no checkpoint could start
        the WAL over meanwhile). From any thread but an event loop's."""
        with self._calls:
            self._held += 1
            self._calls.wait_for(lambda: self._active == 0, timeout)
        try:
            yield
        finally:
            with self._calls:
                self._held -= 1
                self._calls.notify_all()

    def before_fork(self) -> None:
        """Wait (at most `_FORK_WAIT` s: a fork from the loop thread cannot let a read finish) for reads in
        progress."""
        with self._calls:
            self._forking = True
            self._calls.wait_for(lambda: self._active == 0, _FORK_WAIT)

    def after_fork(self, child: bool) -> None:
        if child:  # the connection's thread stayed in the parent: forget it, the next read opens another
            self._calls, self._active, self._held, self._db = threading.Condition(), 0, 0, None
        with self._calls:
            self._forking = False
            self._calls.notify_all()

    async def _connection(self) -> aiosqlite.Connection:
        if self._closed:
            raise SpoolClosedError(f"spool {self.path} is closed")
        ino = os.stat(self.path).st_ino
        if self._db is not None and ino != self._ino:
            await self.aclose(final=False)
        if self._db is None:
            conn = aiosqlite.connect(readonly_uri(self.path), uri=True, timeout=30.0)
            # aiosqlite's thread is not a daemon: a spool never closed would keep the interpreter from exiting.
            conn._thread.daemon = True
            opened = await conn
            if self._db is not None:  # another loop (`Spool.metrics` from a thread) opened one meanwhile
                await opened.close()
            else:
                self._db, self._ino = opened, ino
        return self._db

    async def aclose(self, *, final: bool = True) -> None:
        """Close the connection; `final`: for good (`stats` then raises `SpoolClosedError`). Idempotent."""
        self._closed |= final
        db, self._db = self._db, None
        if db is not None:
            # (closed already, or its thread is gone)
            with contextlib.suppress(sqlite3.Error, ValueError, TimeoutError, RuntimeError):
                await asyncio.wait_for(db.close(), 5.0)


def _size(f: Path) -> int:
    try:
        return f.stat().st_size
    except OSError:
        return 0
