"""One claimed batch's way to the sink and back: a request's outcome as a value (`Delivery.request`: None, or the
`DeliveryError` it failed with), tenacity's attempts, and what each failure means for the rows.

Outcomes: delivered -> rows deleted (the versions sent); transient -> retried with backoff, then raised (the drainer
cools the rows down); rejected -> the batch is split until the bad item stands alone, which goes to the dead table
(first and last span probed alone: refused alike, it is the request that is refused, `RequestRefusedError`);
credentials refused or no API at the URL (404) -> raised at once (draining pauses; no attempt counted). Every failed
request sets `last_error`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ._claims import Claims, Lease, Next
from ._config import SpoolConfig
from ._dbthread import Workers
from ._errors import CredentialsError, DeliveryError, EndpointError, RejectedError, RequestRefusedError, TransientError
from ._formats import format_named
from ._policy import RoundPolicy
from ._retry import Sleep, retrying
from ._sink import Sink
from ._store import Claimed

__all__ = ["PAUSING", "Delivery", "Stopped", "unlinked"]

E = TypeVar("E", bound=BaseException)

log = logging.getLogger("spool")

PAUSING = (CredentialsError, EndpointError, RequestRefusedError)
"""Failures no retry can fix until someone fixes the configuration: draining pauses, rows are kept, no attempt is
counted."""


def unlinked(exc: E) -> E:
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


@dataclass(slots=True)
class Stopped:
    """Where the steady path stopped: the batch in hand (none: nothing left to claim), its lease, the failure of the
    request just made (None: not sent yet), the requests that went through, whether it stopped to hand its slot to a
    waiting worker."""

    rows: Sequence[Claimed]
    lease: Lease
    failed: DeliveryError | None = None
    requests: int = 0
    turn_over: bool = False


class Delivery:
    """Sends one drainer's batches through `sink` from its drain threads (`threads`), under `claims`' leases."""

    def __init__(
        self,
        sink: Sink,
        claims: Claims,
        threads: Workers,
        config: SpoolConfig,
        policy: RoundPolicy,
        counters: collections.Counter[str],
        sleep: Sleep,
    ) -> None:
        self.sink, self.claims, self.threads, self._config = sink, claims, threads, config
        self.policy, self.counters, self._sleep = policy, counters, sleep
        self._request_bytes = format_named(sink.format).request_bytes

    async def prepare(self) -> None:
        """The sink's set-up, before a batch is leased (a failing one surfaces in `send_blocking`, as a delivery
        error)."""
        with contextlib.suppress(Exception):
            await self.threads.run(self.sink.prepare)

    def request(self, rows: Sequence[Claimed]) -> DeliveryError | None:
        """One request (blocking: a drain thread), its outcome as a value: None when the sink took every row, else
        the failure. A sink that raises anything but a `DeliveryError` has a bug, which is no reason to lose or drop
        spans: a `TransientError`."""
        try:
            self.sink.send_blocking([r.body for r in rows], timeout=self._config.request_timeout)
        except DeliveryError as exc:
            return unlinked(exc)
        except Exception as exc:
            return TransientError(f"sink raised {type(exc).__name__}: {exc}")
        return None

    def abandoned(self, first: int, fut: concurrent.futures.Future[Stopped]) -> None:
        """The steady path was cancelled: record the failure of the request it made meanwhile, if it failed (the
        server saw that attempt), and give back the lease of the batch it had in hand when it stopped."""
        if fut.cancelled() or fut.exception() is not None:
            self.claims.give_back(first)
            return
        at = fut.result()
        failed = str(at.failed) if at.failed is not None else None
        self.claims.record_abandoned(at.lease.id, at.rows, failed, isinstance(at.failed, TransientError))

    def steady(
        self,
        rows: Sequence[Claimed],
        lease: Lease,
        nxt: Next,
        stop: threading.Event,
        hand: list[Lease],
        turn_over: Callable[[int], bool],
    ) -> Stopped:
        """The steady path (blocking: a drain thread): send `rows`, complete them with the claim of the next batch,
        and again, while requests go through at their first attempt; stop at `stop`, before a request the lease
        might not outlast, at a batch to split first, or (`turn_over`) to hand the slot over. `hand[0]`: the lease
        of the batch in hand."""
        requests = 0
        while rows:
            if requests and turn_over(nxt.size):
                return Stopped(rows, lease, None, requests, turn_over=True)
            if stop.is_set() or self.claims.short(lease) or self.too_big(rows):
                return Stopped(rows, lease, None, requests)
            failed = self.request(rows)
            if failed is not None:
                return Stopped(rows, lease, failed, requests)
            requests += 1
            going = not stop.is_set() and (nxt.force or not self.policy.paused())
            step = Next(nxt.size if going else 0, nxt.force)
            self.claims.complete_and_claim(rows, step)
            rows = step.rows
            if step.lease is not None:
                lease = hand[0] = step.lease
        return Stopped(rows, lease, None, requests)

    def too_big(self, rows: Sequence[Claimed]) -> bool:
        """A batch of several at least as big as one already refused with 413: split it before sending."""
        return self.policy.too_big(len(rows), self._request_bytes([r.body for r in rows]))

    def error_text(self, exc: DeliveryError) -> str:
        """What `last_error` says of a failure: a configuration failure (`PAUSING`) names the settings to check."""
        if isinstance(exc, CredentialsError):
            return f"credentials refused: {exc} (draining paused, spans kept)"
        if isinstance(exc, EndpointError):
            return f"{exc}; check {self.sink.endpoint_setting} (draining paused, spans kept)"
        if isinstance(exc, RequestRefusedError):
            where = f"{self.sink.credentials_setting} / {self.sink.endpoint_setting}"
            return f"requests refused: {exc}; check {where} (draining paused, spans kept)"
        return str(exc)

    async def deliver(
        self,
        rows: Sequence[Claimed],
        lease: Lease,
        *,
        known_bad: bool = False,
        nxt: Next | None = None,
        failed: DeliveryError | None = None,
        probe: bool = False,
    ) -> bool:
        """Deliver `rows`; when the sink rejects them, split them until each rejected item stands alone, and move
        those to the dead table. True when the sink took all of `rows` in one request. Raises `TransientError` when
        the attempts ran out, and the `PAUSING` errors.

        With `nxt`, rows that go through whole are completed together with the claim of the next batch into it.
        `failed`: the rows were just sent, and failed so (their first attempt). `known_bad`: a rejection is certain
        (the parent batch was rejected for its content and the other half went through whole), so a batch of several
        is split without being sent whole first; so is one at least as big as one already refused with 413. `probe`
        (a claimed batch, not a part of one): a rejection is first probed with single spans (`_probe_singles`).
        """
        if failed is None and len(rows) > 1 and (known_bad or self.too_big(rows)):
            await self._split(rows, lease, inferable=known_bad)
            return False
        sent, rejected = await self._send(rows, lease, failed)
        if not sent:
            return False  # every row went to another drainer meanwhile
        if rejected is None:
            await self.claims.complete(sent, lease, nxt)
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
        if await self.claims.to_dead(row, rejected.status, rejected.detail):
            self.counters["dead_lettered"] += 1
            log.warning("spool: span rejected (%s), moved to dead letters", rejected)

    async def _probe_singles(self, rows: Sequence[Claimed], lease: Lease, rejected: RejectedError) -> Sequence[Claimed]:
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
                await self.claims.complete(sent, lease)
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

    async def _split(self, rows: Sequence[Claimed], lease: Lease, *, inferable: bool) -> None:
        """Deliver the halves of a batch that cannot go whole. `inferable`: the batch as a whole is known to hold a
        rejected item, so when the first half goes through, the second half is split right away."""
        mid = len(rows) // 2
        first_whole = await self.deliver(rows[:mid], lease)
        await self.deliver(rows[mid:], lease, known_bad=inferable and first_whole)

    async def _send(
        self, rows: Sequence[Claimed], lease: Lease, failed: DeliveryError | None = None
    ) -> tuple[Sequence[Claimed], RejectedError | None]:
        """One batch, with tenacity's attempts for transient failures; every failure is recorded. Returns the rows
        sent (those still leased to us) and the rejection, if the sink rejected them; raises `TransientError` when
        the attempts ran out and the `PAUSING` errors at once. `failed`: tenacity's first attempt was made (by a
        drain thread), and failed so."""
        async for attempt in retrying(self._config, self._sleep):
            with attempt:
                try:
                    return await self._attempt(rows, lease, failed)
                finally:
                    failed = None  # once; and no frame -> error -> traceback -> frame cycle (see `_attempt`)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _attempt(
        self, rows: Sequence[Claimed], lease: Lease, failed: DeliveryError | None = None
    ) -> tuple[Sequence[Claimed], RejectedError | None]:
        """One request (with `failed`: the outcome of one already made), recorded; a rejection is returned."""
        if failed is None:
            if not await self.claims.hold(lease):
                return (), None
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

    async def _post(self, rows: Sequence[Claimed]) -> DeliveryError | None:
        """`request` from a drain thread, its outcome awaited for at most `request_timeout` (the lease is sized on
        that) whatever the sink does."""
        timeout = self._config.request_timeout
        try:
            async with asyncio.timeout(timeout):
                return await self.threads.run(self.request, rows)
        except TimeoutError:
            return TransientError(f"no answer within request_timeout ({timeout:g}s)")

    async def _failed(self, exc: DeliveryError, rows: Sequence[Claimed], lease: Lease) -> None:
        """Record a failed request: `last_error` (in the file, for every process's `stats`), a counted attempt on
        each row (transient failures only), and the server's `Retry-After`."""
        if isinstance(exc, CredentialsError):
            self.counters["credentials_refused"] += 1
        if isinstance(exc, TransientError):
            self.counters["retried"] += 1  # retried with backoff, or after a cooldown once attempts run out
            if exc.retry_after:
                self.policy.retry_after(exc.retry_after)
            await self.claims.attempt_failed(lease, rows)
        await self.claims.set_error(self.error_text(exc))
