"""The drainer: when rounds run, how many batches are on the wire, and what a round's outcome does to the rows.

A round runs `max_inflight` workers, each claiming a batch under a lease (`spool._claims`) and delivering it
(`spool._delivery`). The steady path: a worker sends from a drain thread of its own and completes each batch with the
claim of the next, without a trip through the event loop, while requests go through at their first attempt. Anything
else (a failed request, a lease to renew, a batch to pre-split) comes back to the loop (`_deliver_claim`) with the
outcome of the request already made: a failure ends the round (rows cool down, or draining pauses on a configuration
failure), a rejection is split out to the dead letters.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from typing import Any, TypeVar

from ._claims import Claims, Lease, Next
from ._config import SpoolConfig
from ._dbthread import DbThread, Workers
from ._delivery import PAUSING, Delivery, Stopped, unlinked
from ._errors import CredentialsError, DeliveryError, EndpointError, RequestRefusedError, TransientError
from ._policy import RoundPolicy
from ._retry import Sleep
from ._sink import Sink
from ._store import Claimed, Store

__all__ = ["Drainer"]

R = TypeVar("R")

log = logging.getLogger("spool")


class Drainer:
    """Delivers one store's rows through one sink. Bound to one event loop at a time (`bind`)."""

    def __init__(
        self,
        store: Store,
        db: DbThread,
        sink: Sink,
        config: SpoolConfig,
        *,
        sleep: Sleep = asyncio.sleep,
        policy: RoundPolicy | None = None,
        hold: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._config, self._sleep = config, sleep
        self.policy = policy or RoundPolicy(config)
        """When rounds run and how big a batch goes out (I/O-free; its clock and jitter can be given)."""
        self.counters: collections.Counter[str] = collections.Counter()
        """This drainer's counts, under their `spool._counters.COUNTERS` keys."""
        self.claims = Claims(store, db, config, self.counters, clock=clock, hold=hold)
        self._threads = Workers("spool-drain")
        self.delivery = Delivery(sink, self.claims, self._threads, config, self.policy, self.counters, sleep)
        self.blocked: DeliveryError | None = None
        """The last round's failure when it was one of `PAUSING` (a refused key, no span API at the URL); cleared
        by the next round that goes through. `Spool.flush(strict=True)` gives up on it at once."""
        self._wake: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None  # batches on the wire, shared by every caller of drain()
        # Workers waiting for a slot, by batch size: the steady path hands its slot over after a batch to a worker
        # that wants another size (a flush with larger batches), not to one that would do the same as it does.
        # Written on the loop, read from drain threads (`sum` of the values runs under the interpreter lock).
        self._waiting: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._logged: set[str] = set()
        self.store_error: str | None = None
        """Why the last drain round stopped on the file itself (a full or failing disk); None once one goes through."""
        self._store_fault: sqlite3.Error | None = None
        self._store_logged_at = -60.0
        self._backlog = store.has_rows()  # read on the caller's thread: the store's thread has not started using it

    # -- lifecycle --------------------------------------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the background task on `loop` (the previous loop's task, if any, is abandoned with its loop).

        The first task drains at once only when the file held rows at open (a backlog an earlier process left);
        otherwise what is put now waits for `flush_interval` or `flush_trigger`, as an in-memory queue's batches
        do. A task on a later loop drains at once: the loop before it may have ended before its interval did."""
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self._config.max_inflight)
        now, self._backlog = self._backlog, True
        self._task = loop.create_task(self._run(drain_now=now), name="spool-drainer")

    def forked(self) -> None:
        """In a fork child: an owner of its own, this process's counters from zero, no loop yet."""
        self.claims.forked()
        self.counters.clear()
        self._wake, self._slots, self._task, self._waiting = None, None, None, {}
        self._backlog = True

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
        with contextlib.suppress(sqlite3.Error):  # a failing disk: the leases run out by themselves
            await self.claims.release_all()
        self._threads.close()

    async def _run(self, drain_now: bool) -> None:
        assert self._wake is not None
        wake = self._wake
        while True:
            try:
                if drain_now:
                    await self.drain(force=False)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop delivery for good
                log.exception("spool drainer: unexpected error; will try again")
            drain_now = True
            try:
                async with asyncio.timeout(self.policy.idle_wait()):
                    await wake.wait()
            except TimeoutError:
                pass
            wake.clear()

    # -- rounds -----------------------------------------------------------------------------------------------

    async def drain(self, *, force: bool, batch_size: int | None = None) -> None:
        """Deliver until nothing is claimable or a round fails. `force` ignores pauses and cool-downs (ours), but
        not the server's: it first waits out a `Retry-After` still running."""
        if force:
            wait = self.policy.force()
            if wait > 0:
                await self._sleep(wait)
        elif self.policy.paused():
            return
        n = batch_size or self._config.batch_size
        self._store_fault = None
        go = not self.policy.probe_first(force) or await self._guarded(partial(self._probe, n), False)
        if go:
            async with asyncio.TaskGroup() as tg:  # unlike gather, waits for cancelled workers to give rows back
                for _ in range(self._config.max_inflight):
                    tg.create_task(self._guarded(partial(self._worker, force, n), None))
        if self._store_fault is not None:  # a full or failing disk: the round ended, the rows stay (leases run out)
            self._store_failed(self._store_fault)
            return
        if not go:
            return
        self.store_error = None
        while await self.claims.reclaim():  # give freed space back in short steps (producers interleave)
            pass

    async def _guarded(self, work: Callable[[], Coroutine[Any, Any, R]], failed: R) -> R:
        """`await work()`, or `failed` when the file refused it (kept in `_store_fault`): a worker's failure must not
        reach the task group, which would cancel its caller (and Python 3.11 leaves that caller cancelling)."""
        try:
            return await work()
        except sqlite3.Error as exc:
            self._store_fault = self._store_fault or exc
            return failed

    def _store_failed(self, exc: BaseException) -> None:
        """The file refused a claim or a delete: say so in `store_error` (the file may not take a `last_error`),
        count it, and log it at most once a minute."""
        self.store_error = f"the spool file failed while delivering (spans kept): {type(exc).__name__}: {exc}"
        self.counters["store_errors"] += 1
        now = time.monotonic()
        if now - self._store_logged_at >= 60.0:
            self._store_logged_at = now
            log.error("spool: %s; delivery goes on when the disk recovers", self.store_error)

    async def _probe(self, batch_size: int) -> bool:
        """After a failed round, one batch goes first, alone: a backend that may still be down is not sent
        `max_inflight` batches at once, and an outage holds one batch in memory, not `max_inflight`. True when it
        went through (the round may go on), or when nothing was left to send."""
        assert self._slots is not None
        await self.delivery.prepare()
        async with self._slots:
            rows, lease = await self.claims.claim(batch_size, False)
            return not rows or await self._deliver_claim(rows, lease)

    async def _worker(self, force: bool, batch_size: int) -> None:
        assert self._slots is not None
        await self.delivery.prepare()
        nxt = Next(batch_size, force)  # the batch claimed with the previous one's completion, if any
        try:
            while force or not self.policy.paused():
                self._waiting[batch_size] = self._waiting.get(batch_size, 0) + 1
                try:
                    await self._slots.acquire()
                finally:
                    self._waiting[batch_size] -= 1
                try:
                    if nxt.rows and nxt.lease is not None:
                        (rows, lease), nxt.rows, nxt.lease = (nxt.rows, nxt.lease), [], None
                    else:
                        rows, lease = await self.claims.claim(batch_size, force)
                    if not rows:
                        return
                    at = await self._steady(rows, lease, nxt)
                    if not at.rows:
                        return
                    if at.turn_over:  # another worker waits for a slot (a flush, say): this batch waits its turn
                        nxt.rows, nxt.lease = list(at.rows), at.lease
                        continue
                    if not await self._deliver_claim(at.rows, at.lease, nxt, at.failed):
                        return
                finally:
                    self._slots.release()
        finally:
            if nxt.rows and nxt.lease is not None:  # paused or cancelled before sending it: give it back
                self.claims.give_back(nxt.lease.id)

    def _turn_over(self, size: int) -> bool:
        """(From a drain thread.) A worker that wants another batch size waits for a slot (a flush, say)."""
        return sum(self._waiting.values()) > self._waiting.get(size, 0)

    async def _steady(self, rows: Sequence[Claimed], lease: Lease, nxt: Next) -> Stopped:
        """The steady path (see the module's docstring), from a drain thread. Cancelled, it gives the batch in hand
        back at once (as the loop's path does), and the thread stops after the request in progress."""
        stop, hand = threading.Event(), [lease]
        fut = self._threads.submit(self.delivery.steady, rows, lease, nxt, stop, hand, self._turn_over)
        try:
            at = await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            stop.set()
            self.claims.give_back(hand[0].id)
            fut.add_done_callback(partial(self.delivery.abandoned, hand[0].id))
            raise
        if at.requests:
            self.counters["requests"] += at.requests
            self._round_went_through()
        return at

    async def _deliver_claim(
        self, rows: Sequence[Claimed], lease: Lease, nxt: Next | None = None, failed: DeliveryError | None = None
    ) -> bool:
        """Deliver one claimed batch (`Delivery.deliver`); False if the round failed and the rows were kept: cooled
        down after a transient failure, or released with draining paused on a configuration failure."""
        try:
            await self.delivery.deliver(rows, lease, nxt=nxt, failed=failed, probe=True)
        except (TransientError, *PAUSING) as exc:
            err = unlinked(exc)
        except BaseException:
            self.claims.give_back(lease.id)  # cancelled mid-send: give the rows back now
            raise
        else:
            if not lease.ended:  # split, or lost: rows left unsent (rejected, updated meanwhile) are free again
                await self.claims.release(lease.id)
            self._round_went_through()
            return True
        if isinstance(err, PAUSING):
            self.blocked = err
            pause = self._pause(None)
            await self.claims.release(lease.id)
            if isinstance(err, RequestRefusedError):  # (found by the probes, not by one request: not recorded yet)
                await self.claims.set_error(self.delivery.error_text(err))
            what = {CredentialsError: "credentials refused", EndpointError: "no span API"}.get(
                type(err), "requests refused"
            )
            said = str(err) if isinstance(err, EndpointError) else f"{what} ({err})"  # (a 404 names itself)
            self._log_once(what, f"spool: {said}; spans kept, probing in {pause:.0f}s")
            return False
        assert isinstance(err, TransientError)
        pause = self._pause(err.retry_after)
        self.counters["cooldowns"] += 1
        await self.claims.release(lease.id, rows, cool_for=pause)
        kept = f"{len(rows)} span{'' if len(rows) == 1 else 's'} kept"
        self._log_once("transient", f"spool: delivery failing ({err}); {kept}, retry in {pause:.0f}s")
        return False

    def _round_went_through(self) -> None:
        """A round succeeded: the next failure pauses from the start again, and is logged again."""
        self.blocked = None
        if self.policy.went_through():
            self._logged.clear()

    def _pause(self, retry_after: float | None) -> float:
        """Pause draining after a failed round (`RoundPolicy.failed`), and wake the background loop so it waits for
        the pause rather than `flush_interval`."""
        pause = self.policy.failed(retry_after)
        self.kick()
        return pause

    def _log_once(self, kind: str, message: str) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning(message)
