"""`Spool`: the front. `put` on the hot path, a group-commit writer, and a drainer when there is a sink."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import warnings
from asyncio import _get_running_loop
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ._config import SpoolConfig, default_path
from ._dbthread import DbThread
from ._drainer import Drainer
from ._errors import SpoolClosedError
from ._items import Encoded, encode_item
from ._retry import Sleep
from ._sink import Sink
from ._stats import SpoolStats
from ._store import Store

__all__ = ["Spool"]

log = logging.getLogger("spool")


class Spool:
    """A durable buffer of span items in one SQLite file, drained to `sink` (None: store only).

    Durability: `put` returns once the item is validated and queued in memory; the group-commit writer writes
    everything queued within `commit_interval` in one transaction, and `await commit()` returns once every earlier
    `put` is on disk. Rows leave the file only when the sink has taken them (or as dead letters, or as counted
    overflow drops). The spool follows the running event loop: its tasks and HTTP client are re-created on a new
    loop, and puts made under a loop that died are committed on the next one. Use it from one loop at a time.

    The constructor opens (or creates) the file and may raise `SpoolError` subclasses or `OSError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        sink: Sink | None = None,
        config: SpoolConfig | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.config = config or SpoolConfig()
        self.path = Path(path) if path is not None else default_path()
        self._store = Store(self.path, self.config)
        self._db = DbThread()
        self._sink = sink
        self._drainer = Drainer(self._store, self._db, sink, self.config, sleep=sleep) if sink is not None else None
        self._max_item_bytes = self.config.max_item_bytes
        self._lock = threading.Lock()
        self._pending: list[Encoded] = []
        self._signaled = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake: asyncio.Event | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._since_kick = 0
        self._write_error: str | None = None
        self._dropped_unsaved = 0

    # -- the hot path -----------------------------------------------------------------------------------------

    def put(self, item: Mapping[str, Any]) -> None:
        """Queue one span item. Sync, non-blocking, thread-safe.

        Raises `ValueError` / `TypeError` (naming the key) for an invalid item, `SpoolClosedError` after close.
        """
        if self._closed:
            raise SpoolClosedError(f"spool {self.path} is closed")
        enc = encode_item(item, self._max_item_bytes)
        running = _get_running_loop()
        if running is not None and running is not self._loop:
            self._bind(running)
        with self._lock:
            self._pending.append(enc)
            if self._signaled:
                return
            self._signaled = True
        self._signal()

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
        while True:
            await wake.wait()
            if linger:
                await asyncio.sleep(linger)
            wake.clear()
            await self._commit_pending()

    async def _commit_pending(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._signaled = False
        # Submitted before any await: the DB thread runs commits in the order they were taken from the list.
        await asyncio.wrap_future(self._db.submit(self._write, batch))
        self._since_kick += len(batch)
        if self._drainer is not None and self._since_kick >= self.config.flush_trigger:
            self._since_kick = 0
            self._drainer.kick()

    def _write(self, batch: list[Encoded]) -> None:
        """On the DB thread: commit `batch`. A failing disk drops the batch (counted, reported), never raises."""
        if not batch and not self._dropped_unsaved:
            return
        try:
            if batch:
                self._store.append(batch)
            if self._dropped_unsaved:
                self._store.add_dropped(self._dropped_unsaved)
                self._dropped_unsaved = 0
            self._write_error = None
        except sqlite3.Error as exc:
            self._dropped_unsaved += len(batch)
            self._write_error = f"commit failed, {len(batch)} spans dropped: {exc}"
            log.error("spool: %s", self._write_error)

    # -- async API --------------------------------------------------------------------------------------------

    async def commit(self) -> None:
        """Return once every earlier `put` is on disk (or counted as dropped if the disk refused it)."""
        self._bound()
        await self._commit_pending()

    async def flush(self, timeout: float | None = 30.0, *, batch_size: int | None = None) -> bool:
        """Commit, then deliver until nothing is pending, trying cooled-down and paused rows at once.

        Returns True when the file holds no pending rows (dead letters do not count) at return; False when rows
        remain at `timeout` (leased by another live drainer, credentials refused, backend down). Never raises
        for delivery failures; without a sink it only commits.
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
                    await drainer.drain(force=True, batch_size=batch_size)
                    if await self._pending_rows() == 0:
                        return True
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
        except TimeoutError:
            return await self._pending_rows() == 0

    async def _pending_rows(self) -> int:
        return (await self._db(self._store.counts))[0]

    async def stats(self) -> SpoolStats:
        """A snapshot of the file (totals persist across restarts), including other processes' rows."""
        self._bound()
        st: SpoolStats = await self._db(self._store.stats, self._dropped_unsaved)
        if self._write_error is not None:
            from dataclasses import replace

            st = replace(st, last_error=self._write_error)
        return st

    def metrics(self) -> dict[str, int]:
        """This process's delivery counters since open (a plain dict for any metrics system)."""
        return dict(self._drainer.counters) if self._drainer is not None else {}

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
                await self._sink.aclose()
        finally:
            await asyncio.wrap_future(self._db.submit(self._store.close))
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
