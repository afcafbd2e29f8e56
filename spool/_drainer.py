"""The drainer: claims batches, sends them, deletes what the sink took.

Outcomes per batch: delivered -> rows deleted (the versions sent); transient -> retried with backoff, then the rows
cool down (kept); rejected -> the batch is split until the bad item stands alone, which goes to the dead table;
credentials -> draining pauses (rows kept, no attempt counted). Every failed attempt sets `last_error`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence

from ._config import SpoolConfig
from ._dbthread import DbThread
from ._errors import CredentialsError, DeliveryError, RejectedError, TransientError
from ._retry import Sleep, cooldown, retrying
from ._sink import Sink
from ._store import Claimed, Store

__all__ = ["Drainer"]

log = logging.getLogger("spool")


class Drainer:
    """Delivers one store's rows through one sink. Bound to one event loop at a time (`bind`)."""

    def __init__(self, store: Store, db: DbThread, sink: Sink, config: SpoolConfig, *, sleep: Sleep = asyncio.sleep):
        self._store, self._db, self._sink, self._config, self._sleep = store, db, sink, config, sleep
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.counters: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None
        self._failed_rounds = 0
        self._paused_until = 0.0  # monotonic
        self._wake: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None  # batches on the wire, shared by every caller of drain()
        self._task: asyncio.Task[None] | None = None
        self._logged: set[str] = set()

    # -- lifecycle --------------------------------------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the background task on `loop` (the previous loop's task, if any, is abandoned with its loop)."""
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self._config.max_inflight)
        self._task = loop.create_task(self._run(), name="spool-drainer")

    def kick(self) -> None:
        """Ask for a drain now (call from the bound loop's thread)."""
        if self._wake is not None:
            self._wake.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._db(self._store.release_owner, self.owner)

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        while True:
            try:
                await self.drain(force=False)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop delivery for good
                log.exception("spool drainer: unexpected error; will try again")
            wait = self._config.flush_interval
            paused = self._paused_until - time.monotonic()
            if paused > 0:
                wait = paused
            try:
                async with asyncio.timeout(wait):
                    await wake.wait()
            except TimeoutError:
                pass
            wake.clear()

    # -- draining ---------------------------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return time.monotonic() < self._paused_until

    async def drain(self, *, force: bool, batch_size: int | None = None) -> None:
        """Deliver until nothing is claimable or a round fails. `force` ignores pauses and cool-downs."""
        if force:
            self._paused_until = 0.0
        elif self.paused:
            return
        n = batch_size or self._config.batch_size
        async with asyncio.TaskGroup() as tg:  # unlike gather, waits for cancelled workers to give their rows back
            for _ in range(self._config.max_inflight):
                tg.create_task(self._worker(force, n))

    async def _worker(self, force: bool, batch_size: int) -> None:
        assert self._slots is not None
        while force or not self.paused:
            async with self._slots:
                rows = await self._claim(batch_size, force)
                if not rows or not await self._deliver_claim(rows):
                    return

    async def _claim(self, batch_size: int, force: bool) -> list[Claimed]:
        fut = self._db.submit(self._store.claim, self.owner, batch_size, self._config.lease_seconds, force=force)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            # The claim still happens on the DB thread: give those rows back there, right after it.
            fut.add_done_callback(self._release_abandoned)
            raise

    def _release_abandoned(self, fut: concurrent.futures.Future[list[Claimed]]) -> None:
        if not fut.cancelled() and fut.exception() is None and (rows := fut.result()):
            self._store.release(self.owner, [r.seq for r in rows])  # runs on the DB thread

    async def _deliver_claim(self, rows: Sequence[Claimed]) -> bool:
        """Deliver one claimed batch (splitting rejections); False if the round failed and the rows were kept."""
        seqs = [r.seq for r in rows]
        try:
            await self._deliver(rows)
        except TransientError as exc:
            self._failed_rounds += 1
            pause = cooldown(self._failed_rounds, self._config, exc.retry_after)
            self._paused_until = time.monotonic() + pause
            self.counters["cooldowns"] += 1
            await self._db(self._store.release, self.owner, seqs, time.time() + pause)
            self._log_once(
                "transient", f"spool: delivery failing ({exc}); {len(rows)} spans kept, retry in {pause:.0f}s"
            )
            return False
        except CredentialsError as exc:
            self._failed_rounds += 1
            pause = cooldown(self._failed_rounds, self._config)
            self._paused_until = time.monotonic() + pause
            await self._db(self._store.release, self.owner, seqs)
            self._log_once("credentials", f"spool: credentials refused ({exc}); draining paused, spans kept")
            return False
        except BaseException:
            self._db.submit(self._store.release, self.owner, seqs)  # cancelled mid-send: give the rows back now
            raise
        if self._failed_rounds or self.last_error is not None:
            self._failed_rounds = 0
            self._logged.clear()
            self.last_error = None
            await self._db(self._store.set_error, None)
        return True

    async def _deliver(self, rows: Sequence[Claimed]) -> None:
        try:
            await self._send(rows)
        except RejectedError as exc:
            self.counters["rejected_requests"] += 1
            if len(rows) == 1:
                if await self._db(self._store.to_dead, self.owner, rows[0], exc.status, exc.detail):
                    self.counters["dead"] += 1
                    log.warning("spool: span rejected (%s), moved to dead letters", exc)
                return
            mid = len(rows) // 2
            await self._deliver(rows[:mid])
            await self._deliver(rows[mid:])
            return
        delivered = await self._db(self._store.complete, self.owner, rows)
        self.counters["delivered"] += delivered

    async def _send(self, rows: Sequence[Claimed]) -> None:
        """One batch, with tenacity's attempts for transient failures. Every failure is recorded."""
        cfg = self._config
        bodies = [r.body for r in rows]
        async for attempt in retrying(cfg, self._sleep):
            with attempt:
                try:
                    try:
                        await self._sink.send(bodies, timeout=cfg.request_timeout)
                    except DeliveryError:
                        raise
                    except Exception as exc:  # a sink bug is not a reason to lose or drop spans
                        raise TransientError(f"sink raised {type(exc).__name__}: {exc}") from exc
                except DeliveryError as exc:
                    await self._failed(exc, rows)
                    raise
                self.counters["requests"] += 1

    async def _failed(self, exc: DeliveryError, rows: Sequence[Claimed]) -> None:
        self.last_error = str(exc)
        self.counters["failed_requests"] += 1
        if isinstance(exc, TransientError):
            # Count the attempt and keep the lease through the backoff sleep and the next request.
            cfg = self._config
            await self._db(
                self._store.attempt_failed, self.owner, [r.seq for r in rows], cfg.lease_seconds + cfg.backoff_max
            )
        await self._db(self._store.set_error, self.last_error)

    def _log_once(self, kind: str, message: str) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning(message)
