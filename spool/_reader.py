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
import time
from pathlib import Path

import aiosqlite

from ._errors import SpoolClosedError
from ._stats import SpoolStats
from ._store import STATS_SQL, readonly_uri, spool_files, stats_of

__all__ = ["Reader"]


class Reader:
    """A lazily opened read-only aiosqlite connection to the spool at `path`, re-opened when the file at `path` was
    replaced (healed onto a fresh file) or after a fork. Raises `sqlite3.Error` when the file cannot be read,
    `SpoolClosedError` once closed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._ino = 0
        self._pid = os.getpid()
        self._closed = False

    async def stats(self, extra_dropped: int = 0) -> SpoolStats:
        db = await self._connection()
        now = time.time()
        async with db.execute(STATS_SQL, (now,)) as cur:
            row = await cur.fetchone()
        assert row is not None  # (one row, always)
        return stats_of(row, now, sum(_size(f) for f in spool_files(self.path)), extra_dropped)

    async def dropped_total(self) -> int:
        """The file's `dropped_total` alone (one index step)."""
        db = await self._connection()
        async with db.execute("SELECT value FROM meta WHERE key = 'dropped_total'") as cur:
            row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    async def _connection(self) -> aiosqlite.Connection:
        if self._closed:
            raise SpoolClosedError(f"spool {self.path} is closed")
        ino = os.stat(self.path).st_ino
        if self._db is not None and (ino != self._ino or os.getpid() != self._pid):
            await self.aclose(final=False)
        if self._db is None:
            conn = aiosqlite.connect(readonly_uri(self.path), uri=True, timeout=30.0)
            # aiosqlite's thread is not a daemon: a spool never closed would keep the interpreter from exiting.
            conn._thread.daemon = True
            self._db = await conn
            self._ino, self._pid = ino, os.getpid()
        return self._db

    async def aclose(self, *, final: bool = True) -> None:
        """Close the connection (a fork child only forgets it: its thread stayed in the parent); `final`: for good
        (`stats` then raises `SpoolClosedError`). Idempotent."""
        self._closed |= final
        db, self._db = self._db, None
        if db is not None and os.getpid() == self._pid:
            # (closed already, or its thread is gone)
            with contextlib.suppress(sqlite3.Error, ValueError, TimeoutError, RuntimeError):
                await asyncio.wait_for(db.close(), 5.0)


def _size(f: Path) -> int:
    try:
        return f.stat().st_size
    except OSError:
        return 0
