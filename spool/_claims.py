"""A drainer's side of the store: batches claimed under leases, and everything done under a lease (renew, complete
with the next claim, release, a failed attempt, a dead letter), each one call on the store's DB thread.

A lease's end is estimated on the drainer's monotonic clock, read before the store sets it, so the estimate is never
later than the stored end and no step of the wall clock moves it. The calls that await are safe to cancel: rows a
cancelled claim took are given back, and a completion is made whether or not its caller still waits.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._config import SpoolConfig
from ._dbthread import DbThread
from ._leases import new_owner
from ._store import Claimed, Store

__all__ = ["Claims", "Lease", "Next"]


@dataclass(slots=True)
class Lease:
    """One claim's lease: its id, when it ends (the drainer's estimate), whether it was lost (gone when we renewed
    it) or ended by a completion."""

    id: int
    until: float
    lost: bool = False
    ended: bool = False


@dataclass(slots=True)
class Next:
    """What a worker claims along with completing its batch: the next batch's size (0: none), whether the drain is
    forced, and the rows claimed with their lease."""

    size: int
    force: bool
    rows: list[Claimed] = field(default_factory=list)
    lease: Lease | None = None

    def take(self, rows: list[Claimed], until: float) -> None:
        """The rows claimed for it, leased until `until` (none: no lease)."""
        self.rows, self.lease = rows, Lease(rows[0].lease, until) if rows else None


class Claims:
    """The leases of one drainer (`owner`) in one store. `delivered` counts rows deleted, where they are deleted
    (on the DB thread: right even when the awaiting coroutine was cancelled after the deletion); every deletion runs
    inside `hold()` (`Spool._near_cap_hold`)."""

    def __init__(
        self,
        store: Store,
        db: DbThread,
        config: SpoolConfig,
        counters: collections.Counter[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        hold: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        self._store, self._db, self._config, self.counters = store, db, config, counters
        self._clock, self._hold = clock, hold
        self.owner = str(new_owner())  # unique to this drainer (`spool._leases.Owner`)

    def forked(self) -> None:
        """In a fork child: an owner of its own."""
        self.owner = str(new_owner())

    def _end(self) -> float:
        return self._clock() + self._config.lease_seconds

    def short(self, lease: Lease) -> bool:
        """Less than `request_timeout` (plus a margin) of `lease` is left: renew it before the next request."""
        cfg = self._config
        margin = min(1.0, (cfg.lease_seconds - cfg.request_timeout) / 2)
        return lease.until - self._clock() < cfg.request_timeout + margin

    async def claim(self, size: int, force: bool) -> tuple[list[Claimed], Lease]:
        """The next run of claimable rows (none: nothing to claim) and its lease."""
        until = self._end()
        fut = self._db.submit(self._store.claim, self.owner, size, self._config.lease_seconds, force=force)
        try:
            rows = await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(self._abandoned)  # the claim still happens: give its rows back right after it
            raise
        return rows, Lease(rows[0].lease if rows else 0, until)

    def complete_and_claim(self, sent: Sequence[Claimed], nxt: Next) -> None:
        """Blocking (a drain thread): complete `sent` and claim `nxt.size` rows into `nxt`, in one transaction."""
        until = self._end()
        nxt.take(self._db.submit(self._completing, sent, nxt.size, nxt.force).result(), until)

    async def complete(self, sent: Sequence[Claimed], lease: Lease, nxt: Next | None = None) -> None:
        """The sink took `sent`: delete them (ending `lease` when `nxt` is given, and claiming the next batch into
        it). Made even if the caller is cancelled; rows it claimed for an abandoned caller are given back."""
        if nxt is None:
            await self._db(self._completing, sent, None, False)
            return
        until = self._end()
        fut = self._db.submit(self._completing, sent, nxt.size, nxt.force)
        lease.ended = True
        try:
            rows = await asyncio.shield(asyncio.wrap_future(fut))
        except asyncio.CancelledError:
            fut.add_done_callback(self._abandoned)
            raise
        nxt.take(rows, until)

    def _completing(self, sent: Sequence[Claimed], size: int | None, force: bool) -> list[Claimed]:
        """On the DB thread: `Store.complete` (`size` None) or `complete_and_claim`, counted."""
        rows: list[Claimed] = []
        with self._hold():
            if size is None:
                deleted = self._store.complete(sent)
            else:
                deleted, rows = self._store.complete_and_claim(
                    self.owner, sent, size, self._config.lease_seconds, force=force
                )
        self.counters["delivered"] += deleted
        return rows

    def _abandoned(self, fut: concurrent.futures.Future[list[Claimed]]) -> None:
        # Runs on the DB thread, or on the caller's when the call had already finished: the release is queued on
        # the DB thread either way (the connection must not be used from two threads at once).
        if not fut.cancelled() and fut.exception() is None and (rows := fut.result()):
            self.give_back(rows[0].lease)

    async def hold(self, lease: Lease) -> bool:
        """Make sure `lease` outlives the next request: renew it when it runs short. False when it was lost (it ran
        out and was taken over): no rows are ours to send."""
        if not lease.lost and self.short(lease):
            until = self._end()
            lease.lost = not await self._db(self._store.renew, lease.id, self._config.lease_seconds)
            lease.until = until
        return not lease.lost

    def give_back(self, lease: int) -> None:
        """Release `lease` without waiting (a batch cancelled, abandoned or not sent), from any thread. When the DB
        thread is shut down, the lease runs out by itself."""
        with contextlib.suppress(RuntimeError):
            self._db.submit(self._store.release, lease)

    async def release(self, lease: int, rows: Sequence[Claimed] = (), cool_for: float = 0.0) -> None:
        """End `lease`; `rows` of it cool down for `cool_for` seconds (wall clock: the file's)."""
        if rows:
            await self._db(self._store.release, lease, [r.seq for r in rows], time.time() + cool_for)
        else:
            await self._db(self._store.release, lease)

    async def attempt_failed(self, lease: Lease, rows: Sequence[Claimed]) -> None:
        """Count an attempt on `rows` and keep the lease through the backoff and the next request."""
        cfg = self._config
        await self._db(self._store.attempt_failed, lease.id, [r.seq for r in rows], cfg.lease_seconds + cfg.backoff_max)

    async def to_dead(self, row: Claimed, status: int | None, detail: str | None) -> bool:
        return bool(await self._db(self._store.to_dead, row, status, detail))

    async def set_error(self, text: str) -> None:
        await self._db(self._store.set_error, text)

    def record_abandoned(self, lease: int, rows: Sequence[Claimed], failed: str | None, attempted: bool) -> None:
        """Without waiting, from any thread: a cancelled batch's last request failed (`failed`; `attempted`: an
        attempt to count on `rows`); then give the lease back."""
        with contextlib.suppress(RuntimeError):  # the DB thread is shut down: the lease runs out by itself
            if attempted and rows:
                self._db.submit(self._store.attempt_failed, lease, [r.seq for r in rows], 0.0)
            if failed is not None:
                self._db.submit(self._store.set_error, failed)
        self.give_back(lease)

    async def release_all(self) -> None:
        """Give back every lease of this owner (a drainer stopping)."""
        await self._db(self._store.release_owner, self.owner)

    async def reclaim(self) -> bool:
        """Give a step of freed space back; True while there is more."""
        return bool(await self._db(self._store.reclaim))
