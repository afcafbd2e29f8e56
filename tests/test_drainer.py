"""`spool._drainer.Drainer` on its own: a real store file, the drainer's own DB thread, a `MemorySink` that takes or
fails batches on command, and a clock the test moves (no real waits for leases)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pytest
from conftest import FAST, span

from spool import CredentialsError, EndpointError, Sink, TransientError
from spool._dbthread import DbThread
from spool._drainer import Drainer
from spool._items import encode_item
from spool._store import Store
from spool.testing import MemorySink


class Clock:
    """A monotonic clock the test moves; `step` is added at each backoff sleep (time passing in a retry)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.step = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += self.step


@dataclass
class Rig:
    path: Path
    store: Store
    db: DbThread
    clock: Clock
    drainers: list[Drainer]

    def drainer(self, sink: Sink) -> Drainer:
        """A drainer of the file through `sink`, bound to the running loop; its background rounds never come (the
        test drains)."""
        config = replace(FAST, batch_size=4, max_inflight=1, flush_interval=3600.0, backoff_max=3.0)
        d = Drainer(self.store, self.db, sink, config, sleep=self.clock.sleep, clock=self.clock)
        d.bind(asyncio.get_running_loop())
        self.drainers.append(d)
        return d

    async def put(self, ids: range) -> None:
        await self.db(self.store.append, [encode_item(span(i, end=True), FAST.max_item_bytes) for i in ids])

    async def counts(self) -> tuple[int, int]:
        """(pending, dead)."""
        st = await self.db(self.store.stats, 0)
        return st.pending, st.dead

    async def last_error(self) -> str | None:
        return (await self.db(self.store.stats, 0)).last_error


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    path = tmp_path / "spool.db"
    store, db = Store(path, FAST), DbThread()
    r = Rig(path, store, db, Clock(), [])
    yield r
    for d in r.drainers:
        await d.stop()
    await db(store.close)
    db.close()


def _lease_untils(path: Path) -> list[float]:
    with sqlite3.connect(path) as db:
        return [u for (u,) in db.execute("SELECT until FROM leases ORDER BY id")]


@pytest.mark.anyio
async def test_every_row_is_delivered_in_batches_and_deleted(rig: Rig) -> None:
    sink = MemorySink()
    drainer = rig.drainer(sink)
    await rig.put(range(10))
    await drainer.drain(force=True)
    assert sorted(i["id"] for i in sink.items()) == sorted(f"span-{i}" for i in range(10))
    assert [len(b) for b in sink.batches] == [4, 4, 2]
    assert await rig.counts() == (0, 0)
    assert drainer.counters["delivered"] == 10 and drainer.counters["requests"] == 3


@pytest.mark.anyio
async def test_a_transient_failure_is_retried_after_a_backoff_and_cleared_from_last_error(rig: Rig) -> None:
    sink = MemorySink()
    drainer = rig.drainer(sink)
    await rig.put(range(10))
    sink.fail(TransientError("HTTP 503: try later", status=503), times=2)
    await drainer.drain(force=True)
    assert await rig.counts() == (0, 0)
    assert drainer.counters["retried"] == 2 and sink.requests == 5
    assert len(rig.clock.sleeps) == 2  # tenacity's backoff, through the injected sleep
    assert await rig.last_error() is None  # cleared by the success that followed


@pytest.mark.anyio
async def test_a_bad_span_is_split_out_to_the_dead_letters_and_its_batch_mates_delivered(rig: Rig) -> None:
    sink = MemorySink()
    drainer = rig.drainer(sink)
    await rig.put(range(10))
    sink.reject_if(lambda body: orjson.loads(body)["id"] == "span-5")
    await drainer.drain(force=True)
    assert {i["id"] for i in sink.items()} == {f"span-{i}" for i in range(10)} - {"span-5"}
    assert await rig.counts() == (0, 1)
    assert drainer.counters["dead_lettered"] == 1


@pytest.mark.anyio
async def test_refused_configuration_pauses_with_every_row_kept_and_names_the_sinks_settings(rig: Rig) -> None:
    class Keyed(MemorySink):
        credentials_setting = "ACME_TRACE_KEY"
        endpoint_setting = "ACME_TRACE_URL"

    sink = Keyed()
    drainer = rig.drainer(sink)
    await rig.put(range(10))
    sink.fail(CredentialsError("HTTP 401: bad key", status=401, detail="bad key"))
    await drainer.drain(force=True)
    assert isinstance(drainer.blocked, CredentialsError)
    assert await rig.counts() == (10, 0) and sink.bodies == []
    assert "credentials refused" in (await rig.last_error() or "")
    sink.fail(EndpointError("no span API at http://x (HTTP 404: nope)", status=404, detail="nope"))
    await drainer.drain(force=True)
    assert isinstance(drainer.blocked, EndpointError) and await rig.counts() == (10, 0)
    assert "check ACME_TRACE_URL" in (await rig.last_error() or "")
    await drainer.drain(force=True)
    assert await rig.counts() == (0, 0)


@pytest.mark.anyio
async def test_a_lease_is_renewed_before_a_retry_once_the_clock_says_it_runs_short(rig: Rig) -> None:
    """The drainer's clock, not the wall clock, says when a lease runs short: with 8 s passing (on it) in the backoff
    after a failed request, 2 s of a 10 s lease are left, less than `request_timeout` (5 s): the retry renews the lease
    first. With no time passing, the retry goes out on the lease as the failed attempt left it."""
    seen: list[list[float]] = []

    class Watching(MemorySink):
        def send_blocking(self, bodies: Sequence[bytes], *, timeout: float) -> None:
            seen.append(_lease_untils(rig.path))
            super().send_blocking(bodies, timeout=timeout)

    for step in (0.0, 8.0):
        seen.clear()
        rig.clock.step = step
        sink = Watching()
        drainer = rig.drainer(sink)
        await rig.put(range(10))
        sink.fail(TransientError("HTTP 503", status=503))
        await drainer.drain(force=True, batch_size=10)
        assert await rig.counts() == (0, 0) and len(seen) == 2
        # A failed attempt keeps the lease for `lease_seconds + backoff_max` (3 s more here); a renewal sets it to
        # `lease_seconds` from then.
        grew = seen[1][0] - seen[0][0]
        assert grew > 2.5 if step == 0 else grew < 1.0, grew


@pytest.mark.anyio
async def test_a_sink_that_raises_anything_else_fails_transiently_and_loses_nothing(rig: Rig) -> None:
    class Buggy(Sink):
        calls = 0

        def send_blocking(self, bodies: Sequence[bytes], *, timeout: float) -> None:
            Buggy.calls += 1
            if Buggy.calls == 1:
                raise KeyError("oops")

    drainer = rig.drainer(Buggy())
    await rig.put(range(10))
    await drainer.drain(force=True, batch_size=10)
    assert await rig.counts() == (0, 0) and drainer.counters["retried"] == 1
    assert Buggy.calls == 2
