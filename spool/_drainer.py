"""The drainer: claims batches, sends them, deletes what the sink took.

Outcomes per batch: delivered -> rows deleted (the versions sent); transient -> retried with backoff, then the rows
cool down (kept); rejected -> the batch is split until the bad item stands alone, which goes to the dead table;
credentials refused or no span API at the URL (404) -> draining pauses (rows kept, no attempt counted). Every
failed attempt sets `last_error`.

Leases: a claimed batch is leased for `lease_seconds`; before every request the drainer makes sure at least
`request_timeout` of the lease is left (renewing it when not), and every request is cut off at `request_timeout`
(the whole request: connect, write and read together, `spool._deadline`), so no other drainer can claim rows while
a request carrying them may still be on the wire.

Requests are made from drain threads (`Sink.send_blocking`), and a request's outcome is a value (`_request`: None,
or the `DeliveryError` it failed with). The steady path: each worker sends from a drain thread of its own and
completes each batch together with the claim of the next one, without a trip through the event loop, for as long as
requests go through at their first attempt. Anything else (a failed request, a lease to renew, a batch to pre-split)
goes back to the loop (`_deliver_claim`), with the outcome already known.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ParamSpec, TypeVar

from ._config import SpoolConfig
from ._dbthread import DbThread, Workers
from ._errors import (
    CredentialsError,
    DeliveryError,
    EndpointError,
    RejectedError,
    RequestRefusedError,
    TransientError,
)
from ._formats import format_named
from ._leases import new_owner
from ._policy import RoundPolicy
from ._retry import Sleep, retrying
from ._sink import Sink
from ._store import Claimed, Store

__all__ = ["Drainer"]

P = ParamSpec("P")
R = TypeVar("R")
E = TypeVar("E", bound=BaseException)

log = logging.getLogger("spool")

_PAUSING = (CredentialsError, EndpointError, RequestRefusedError)
"""Failures no retry can fix until someone fixes the configuration: draining pauses, rows are kept, no attempt is
counted."""


@dataclass(slots=True)
class _Lease:
    """One claim's lease: its id, when it ends (on the drainer's monotonic clock: an estimate taken before the store
    set it, so never later than the stored one, and no step of the wall clock moves it), whether it was lost (gone
    when we renewed it) or ended by a completion."""

    id: int
    until: float
    lost: bool = False
    ended: bool = False


_Done = tuple[int, list[Claimed]]


@dataclass(slots=True)
class _Next:
    """What a worker claims along with completing its batch: the next batch's size, whether the drain is forced,
    and the rows claimed with their lease estimate."""

    size: int
    force: bool
    rows: list[Claimed] = field(default_factory=list)
    until: float = 0.0


def _unlinked(exc: E) -> E:
    """`exc` alone: its message, without the traceback or the errors it chained (their frames cleared). A failed
    batch's error is handed between frames and threads and raised again, which puts it in reference cycles with
    frames that hold the batch's rows and request body (httpx's errors hold the request too); only the cyclic GC
    would free them, and under a steady producer it seldom runs: an outage kept ~50 request bodies alive."""
    seen: BaseException | None = exc
    while seen is not None:
        traceback.clear_frames(seen.__traceback__)
        seen.__traceback__ = None
        seen = seen.__cause__ or seen.__context__
    exc.__cause__ = exc.__context__ = None
    return exc


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
        self._store, self._db, self._sink, self._config, self._sleep = store, db, sink, config, sleep
        self._request_bytes = format_named(sink.format).request_bytes
        self.policy = policy or RoundPolicy(config)
        """When rounds run and how big a batch goes out (I/O-free; its clock and jitter can be given)."""
        self._delete_guard = hold  # entered around each deletion (`Spool._near_cap_hold`)
        self._clock = clock  # monotonic: a lease's end as this drainer estimates it (`_Lease.until`)
        self.owner = str(new_owner())  # unique to this drainer (`spool._leases.Owner`)
        self.counters: collections.Counter[str] = collections.Counter()
        """This drainer's counts, under their `spool._counters.COUNTERS` keys."""
        self.blocked: DeliveryError | None = None
        """The last round's failure when it was one of `_PAUSING` (a refused key, no span API at the URL); cleared
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
        self._threads = Workers("spool-drain")
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
        self.owner = str(new_owner())
        self.counters = collections.Counter()
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
            await self._db(self._store.release_owner, self.owner)
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

    # -- draining ---------------------------------------------------------------------------------------------

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
        while await self._db(self._store.reclaim):  # give freed space back in short steps (producers interleave)
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

    async def _prepare(self) -> None:
        with contextlib.suppress(Exception):  # a failing set-up surfaces in send_blocking, as a delivery error
            await self._threads.run(self._sink.prepare)

    async def _probe(self, batch_size: int) -> bool:
        """After a failed round, one batch goes first, alone: a backend that may still be down is not sent
        `max_inflight` batches at once, and an outage holds one batch in memory, not `max_inflight`. True when it
        went through (the round may go on), or when nothing was left to send."""
        assert self._slots is not None
        await self._prepare()
        async with self._slots:
            until = self._lease_end()
            rows = await self._claim(batch_size, False)
            return not rows or await self._deliver_claim(rows, _Lease(rows[0].lease, until))

    async def _worker(self, force: bool, batch_size: int) -> None:
        assert self._slots is not None
        await self._prepare()
        nxt = _Next(batch_size, force)  # the batch claimed with the previous one's completion, if any
        try:
            while force or not self.policy.paused():
                self._waiting[batch_size] = self._waiting.get(batch_size, 0) + 1
                try:
                    await self._slots.acquire()
                finally:
                    self._waiting[batch_size] -= 1
                try:
                    rows: Sequence[Claimed] = nxt.rows
                    lease_until, nxt.rows = nxt.until, []
                    if not rows:
                        lease_until = self._lease_end()
                        rows = await self._claim(batch_size, force)
                    if not rows:
                        return
                    lease, failed = _Lease(rows[0].lease, lease_until), None
                    rows, lease, failed, turn_over = await self._steady(rows, lease, nxt)
                    if not rows:
                        return
                    if turn_over:  # another worker waits for a slot (a flush, say): this batch waits its turn
                        nxt.rows, nxt.until = list(rows), lease.until
                        continue
                    if not await self._deliver_claim(rows, lease, nxt, failed):
                        return
                finally:
                    self._slots.release()
        finally:
            if nxt.rows:  # paused or cancelled before sending it: give it back
                self._give_back(nxt.rows[0].lease)

    async def _claim(self, batch_size: int, force: bool) -> list[Claimed]:
        fut = self._db.submit(self._store.claim, self.owner, batch_size, self._config.lease_seconds, force=force)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            # The claim still happens on the DB thread: give those rows back there, right after it.
            fut.add_done_callback(self._release_abandoned)
            raise

    def _give_back(self, lease: int) -> None:
        """Release `lease` without waiting (a batch cancelled, abandoned or not sent), queued on the DB thread from
        any thread (the connection is used from that one only). When the DB thread is shut down, the lease runs out
        by itself."""
        with contextlib.suppress(RuntimeError):
            self._db.submit(self._store.release, lease)

    def _release_abandoned(
        self, fut: concurrent.futures.Future[list[Claimed]] | concurrent.futures.Future[_Done]
    ) -> None:
        # Runs on the DB thread, or on the caller's when the claim had already finished: queue the release on the
        # DB thread either way (the connection must not be used from two threads at once).
        if fut.cancelled() or fut.exception() is not None:
            return
        res = fut.result()
        if rows := (res[1] if isinstance(res, tuple) else res):
            self._give_back(rows[0].lease)

    async def _steady(
        self, rows: Sequence[Claimed], lease: _Lease, nxt: _Next
    ) -> tuple[Sequence[Claimed], _Lease, DeliveryError | None, bool]:
        """The steady path (see the module's docstring), from a drain thread. Returns the batch in hand when it
        stopped, with its lease, the failure of the request just made (None: not sent yet) and whether it stopped to
        hand its slot to a waiting worker; no rows when nothing is left to claim. Cancelled, it gives the batch in
        hand back at once (as the async path does), and the thread stops after the request in progress."""
        stop, hand = threading.Event(), [lease]
        fut = self._threads.submit(self._steady_in_thread, rows, lease, nxt, stop, hand)
        try:
            rows, lease, failed, requests, turn_over = await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            stop.set()
            self._give_back(hand[0].id)
            fut.add_done_callback(partial(self._release_left, hand[0].id))
            raise
        if requests:
            self.counters["requests"] += requests
            self._round_went_through()
        return rows, lease, failed, turn_over

    def _release_left(
        self, first: int, fut: concurrent.futures.Future[tuple[Sequence[Claimed], _Lease, Any, int, bool]]
    ) -> None:
        """The steady path was cancelled: record the failure of the request it made meanwhile, if it failed (the
        server saw that attempt), and give back the lease of the batch it had in hand when it stopped."""
        rows: Sequence[Claimed] = ()
        failed, lease = None, first
        if not fut.cancelled() and fut.exception() is None:
            rows, held, failed, _, _ = fut.result()
            lease = held.id
        with contextlib.suppress(RuntimeError):  # the DB thread is shut down: the lease runs out by itself
            if isinstance(failed, TransientError) and rows:
                self._db.submit(self._store.attempt_failed, lease, [r.seq for r in rows], 0.0)
            if isinstance(failed, DeliveryError):
                self._db.submit(self._store.set_error, str(failed))
        self._give_back(lease)

    def _steady_in_thread(
        self, rows: Sequence[Claimed], lease: _Lease, nxt: _Next, stop: threading.Event, hand: list[_Lease]
    ) -> tuple[Sequence[Claimed], _Lease, DeliveryError | None, int, bool]:
        cfg = self._config
        requests = 0
        while rows:
            if requests and sum(self._waiting.values()) > self._waiting.get(nxt.size, 0):
                return rows, lease, None, requests, True
            if stop.is_set() or self._lease_short(lease) or self._too_big(rows):
                return rows, lease, None, requests, False
            failed = self._request(rows)
            if failed is not None:
                return rows, lease, failed, requests, False
            requests += 1
            until = self._lease_end()
            size = nxt.size if not stop.is_set() and (nxt.force or not self.policy.paused()) else 0
            done = self._db.submit(
                self._counted(self._store.complete_and_claim),
                self.owner,
                rows,
                size,
                cfg.lease_seconds,
                force=nxt.force,
            )
            rows = done.result()[1]
            if rows:
                lease = hand[0] = _Lease(rows[0].lease, until)
        return rows, lease, None, requests, False

    async def _deliver_claim(
        self, rows: Sequence[Claimed], lease: _Lease, nxt: _Next | None = None, failed: DeliveryError | None = None
    ) -> bool:
        """Deliver one claimed batch (splitting rejections); False if the round failed and the rows were kept.
        With `nxt`, a batch that goes through whole is completed together with the claim of the next one.
        `failed`: the batch was just sent, and failed so (its first attempt)."""
        try:
            await self._deliver(rows, lease, nxt=nxt, failed=failed, probe=True)
        except (TransientError, *_PAUSING) as exc:
            err = _unlinked(exc)
        except BaseException:
            self._give_back(lease.id)  # cancelled mid-send: give the rows back now
            raise
        else:
            if not lease.ended:  # split, or lost: rows left unsent (rejected, updated meanwhile) are free again
                await self._db(self._store.release, lease.id)
            self._round_went_through()
            return True
        if isinstance(err, _PAUSING):
            self.blocked = err
            pause = self._pause(None)
            await self._db(self._store.release, lease.id)
            if isinstance(
                err, RequestRefusedError
            ):  # (found by the probes, not by one request: `_failed` did not see it)
                await self._db(self._store.set_error, self._error_text(err))
            what = {CredentialsError: "credentials refused", EndpointError: "no span API"}.get(
                type(err), "requests refused"
            )
            said = str(err) if isinstance(err, EndpointError) else f"{what} ({err})"  # (a 404 names itself)
            self._log_once(what, f"spool: {said}; spans kept, probing in {pause:.0f}s")
            return False
        assert isinstance(err, TransientError)
        pause = self._pause(err.retry_after)
        self.counters["cooldowns"] += 1
        await self._db(self._store.release, lease.id, [r.seq for r in rows], time.time() + pause)
        kept = f"{len(rows)} span{'' if len(rows) == 1 else 's'} kept"
        self._log_once("transient", f"spool: delivery failing ({err}); {kept}, retry in {pause:.0f}s")
        return False

    def _round_went_through(self) -> None:
        """A round succeeded: the next failure pauses from the start again, and is logged again."""
        self.blocked = None
        if self.policy.went_through():
            self._logged.clear()

    def _lease_short(self, lease: _Lease) -> bool:
        """Less than `request_timeout` (plus a margin) of `lease` is left: renew it before the next request."""
        cfg = self._config
        margin = min(1.0, (cfg.lease_seconds - cfg.request_timeout) / 2)
        return lease.until - self._clock() < cfg.request_timeout + margin

    def _lease_end(self) -> float:
        """When a lease taken (or renewed) now ends, on this drainer's clock: read before the store sets it, so never
        later than the one it records."""
        return self._clock() + self._config.lease_seconds

    def _too_big(self, rows: Sequence[Claimed]) -> bool:
        """A batch of several at least as big as one already refused with 413: split it before sending."""
        return self.policy.too_big(len(rows), self._request_bytes([r.body for r in rows]))

    def _counted(self, complete: Callable[P, R]) -> Callable[P, R]:
        """`complete` (a `Store` completion returning the rows deleted, alone or first in a tuple), counting them in
        `counters["delivered"]` where it runs, on the DB thread: right even when the awaiting coroutine is cancelled
        after the rows were deleted (that key is only ever updated there).

        The deletion runs inside the constructor's `hold()`: near the disk cap, with no stats read of this process in
        progress (see `Spool._near_cap_hold`)."""

        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with self._delete_guard():
                result = complete(*args, **kwargs)
            self.counters["delivered"] += result[0] if isinstance(result, tuple) else result  # type: ignore[operator]
            return result

        return run

    async def _complete_claim(self, sent: Sequence[Claimed], lease: _Lease, nxt: _Next) -> None:
        """`Store.complete_and_claim` in one trip to the DB thread: ends `lease`, and the next batch (none while
        paused) goes to `nxt`. The completion happens even if we are cancelled (shielded); rows claimed by an
        abandoned call are given back."""
        until = self._lease_end()
        cfg = self._config
        fut = self._db.submit(
            self._counted(self._store.complete_and_claim),
            self.owner,
            sent,
            nxt.size if nxt.force or not self.policy.paused() else 0,
            cfg.lease_seconds,
            force=nxt.force,
        )
        lease.ended = True
        try:
            _, nxt.rows = await asyncio.shield(asyncio.wrap_future(fut))
        except asyncio.CancelledError:
            fut.add_done_callback(self._release_abandoned)
            raise
        nxt.until = until

    def _pause(self, retry_after: float | None) -> float:
        """Pause draining after a failed round (`RoundPolicy.failed`), and wake the background loop so it waits for
        the pause rather than `flush_interval`."""
        pause = self.policy.failed(retry_after)
        self.kick()
        return pause

    async def _deliver(
        self,
        rows: Sequence[Claimed],
        lease: _Lease,
        *,
        known_bad: bool = False,
        nxt: _Next | None = None,
        failed: DeliveryError | None = None,
        probe: bool = False,
    ) -> bool:
        """Deliver `rows`; when the sink rejects them, split them until each rejected item stands alone, and move
        those to the dead table. True when the sink took all of `rows` in one request.

        `known_bad`: a rejection is certain (the parent batch was rejected for its content and the other half went
        through whole), so a batch of several is split without being sent whole first. A batch at least as big as
        one already refused with 413 is split without being sent too. `probe` (a claimed batch, not a part of one):
        a rejection is first probed with single spans (`_probe_singles`), which may raise `RequestRefusedError`.
        """
        if failed is None and len(rows) > 1 and (known_bad or self._too_big(rows)):
            await self._split(rows, lease, inferable=known_bad)
            return False
        sent, rejected = await self._send(rows, lease, failed)
        if not sent:
            return False  # every row went to another drainer meanwhile
        if rejected is None:
            if nxt is not None:
                await self._complete_claim(sent, lease, nxt)
            else:
                await self._db(self._counted(self._store.complete), sent)
            return True
        self.counters["rejected"] += 1
        if rejected.status == 413:
            self.policy.refused_size(self._request_bytes([r.body for r in sent]))
        if len(sent) == 1:
            await self._to_dead(sent[0], rejected)
            return False
        if probe and rejected.status != 413:  # 413 is about size, not about the spans or the request
            sent = await self._probe_singles(sent, lease, rejected)
        await self._split(sent, lease, inferable=rejected.status != 413)
        return False

    async def _to_dead(self, row: Claimed, rejected: RejectedError) -> None:
        if await self._db(self._store.to_dead, row, rejected.status, rejected.detail):
            self.counters["dead_lettered"] += 1
            log.warning("spool: span rejected (%s), moved to dead letters", rejected)

    async def _probe_singles(
        self, rows: Sequence[Claimed], lease: _Lease, rejected: RejectedError
    ) -> Sequence[Claimed]:
        """A batch was rejected: is it the spans, or the request? Its first and last span are sent alone (2 more
        requests). Both refused exactly as the batch was (status and detail): the server refuses the request itself
        (a header it requires, say), and `RequestRefusedError` pauses draining with every row kept. Otherwise the
        rows left to split: a probe that went through is delivered, one refused for a reason of its own is a dead
        letter."""
        left = list(rows)
        for row in (rows[0], rows[-1]):
            sent, alone = await self._send([row], lease)
            if not sent:
                return ()  # the lease was lost: the rows are another drainer's now
            left.remove(row)
            if alone is None:
                await self._db(self._counted(self._store.complete), sent)
                return left
            self.counters["rejected"] += 1
            if (alone.status, alone.detail) != (rejected.status, rejected.detail):
                await self._to_dead(row, alone)
                return left
        raise RequestRefusedError(
            f"HTTP {rejected.status}: {rejected.detail} (every request is refused so, a batch and its spans alone;"
            " the server wants a setting the sink does not send)",
            status=rejected.status,
            detail=rejected.detail,
        )

    async def _split(self, rows: Sequence[Claimed], lease: _Lease, *, inferable: bool) -> None:
        """Deliver the halves of a batch that cannot go whole. `inferable`: the batch as a whole is known to hold a
        rejected item, so when the first half goes through, the second half is split right away."""
        mid = len(rows) // 2
        first_whole = await self._deliver(rows[:mid], lease)
        await self._deliver(rows[mid:], lease, known_bad=inferable and first_whole)

    async def _send(
        self, rows: Sequence[Claimed], lease: _Lease, failed: DeliveryError | None = None
    ) -> tuple[Sequence[Claimed], RejectedError | None]:
        """One batch, with tenacity's attempts for transient failures; every failure is recorded. Returns the rows
        sent (those still leased to us) and the rejection, if the sink rejected them. Raises `TransientError` when
        the attempts ran out and `CredentialsError` at once. `failed`: the first attempt was made (by a drain thread),
        and failed so; it is tenacity's first attempt. (Tenacity's set-up costs ~30 µs a batch: the steady path of a
        `BlockingSink` never comes here.)"""
        async for attempt in retrying(self._config, self._sleep):
            with attempt:
                try:
                    return await self._attempt(rows, lease, failed)
                finally:
                    failed = None  # once; and no frame -> error -> traceback -> frame cycle (see `_attempt`)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _attempt(
        self, rows: Sequence[Claimed], lease: _Lease, failed: DeliveryError | None = None
    ) -> tuple[Sequence[Claimed], RejectedError | None]:
        """One request (with `failed`: the outcome of one already made), recorded; a rejection is returned."""
        if failed is None:
            rows = await self._hold(rows, lease)
            if not rows:
                return rows, None
            failed = await self._post(rows)
            if failed is None:
                self.counters["requests"] += 1
                return rows, None
        await self._failed(failed, rows, lease)
        if isinstance(failed, RejectedError):
            return rows, failed
        try:
            raise failed
        finally:
            del failed  # frame -> error -> traceback -> frame: a cycle that would hold `rows` until the cyclic GC

    async def _hold(self, rows: Sequence[Claimed], lease: _Lease) -> Sequence[Claimed]:
        """Make sure the lease outlives the next request: renew it when less than `request_timeout` (plus a margin)
        is left. A lease that ran out and was taken over is lost: no rows are ours to send (returns empty)."""
        cfg = self._config
        if not lease.lost and self._lease_short(lease):
            until = self._lease_end()
            lease.lost = not await self._db(self._store.renew, lease.id, cfg.lease_seconds)
            lease.until = until
        return () if lease.lost else rows

    async def _post(self, rows: Sequence[Claimed]) -> DeliveryError | None:
        """`_request` from a drain thread, its outcome awaited for at most `request_timeout` (the lease is sized on
        that) whatever the sink does."""
        timeout = self._config.request_timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._threads.run(self._request, rows)
        except TimeoutError:
            return TransientError(f"no answer within request_timeout ({timeout:g}s)")

    def _request(self, rows: Sequence[Claimed]) -> DeliveryError | None:
        """One request (blocking: a drain thread), its outcome as a value: None when the sink took every row, else
        the failure. A sink that raises anything but a `DeliveryError` has a bug, which is no reason to lose or drop
        spans: a `TransientError`."""
        try:
            self._sink.send_blocking([r.body for r in rows], timeout=self._config.request_timeout)
        except DeliveryError as exc:
            return _unlinked(exc)
        except Exception as exc:
            return TransientError(f"sink raised {type(exc).__name__}: {exc}")
        return None

    def _error_text(self, exc: DeliveryError) -> str:
        """What `last_error` says of a failure: a configuration failure (`_PAUSING`) names the settings to check."""
        if isinstance(exc, CredentialsError):
            return f"credentials refused: {exc} (draining paused, spans kept)"
        if isinstance(exc, EndpointError):
            return f"{exc}; check {self._sink.endpoint_setting} (draining paused, spans kept)"
        if isinstance(exc, RequestRefusedError):
            where = f"{self._sink.credentials_setting} / {self._sink.endpoint_setting}"
            return f"requests refused: {exc}; check {where} (draining paused, spans kept)"
        return str(exc)

    async def _failed(self, exc: DeliveryError, rows: Sequence[Claimed], lease: _Lease) -> None:
        """Record a failed request: `last_error` (in the file, for every process's `stats`), a counted
        attempt on each row (transient failures only), and the server's `Retry-After`."""
        text = self._error_text(exc)
        if isinstance(exc, CredentialsError):
            self.counters["credentials_refused"] += 1
        if isinstance(exc, TransientError):
            self.counters["retried"] += 1  # retried with backoff, or after a cooldown once attempts run out
            if exc.retry_after:
                self.policy.retry_after(exc.retry_after)
            # Count the attempt and keep the lease through the backoff sleep and the next request.
            cfg = self._config
            await self._db(
                self._store.attempt_failed, lease.id, [r.seq for r in rows], cfg.lease_seconds + cfg.backoff_max
            )
        await self._db(self._store.set_error, text)

    def _log_once(self, kind: str, message: str) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning(message)
