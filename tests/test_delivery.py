"""Delivery semantics: coalescing, versions in flight, poison isolation, 413 splits, credentials, transient
cooldowns, flush() contract, leases. Real SQLite files, the real receiver, the real SGPSink/httpx stack."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import itertools
import math
import random
import socket
import sqlite3
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, RecordingSleep, span, store_items, until

from spool import SGPSink, Spool, SpoolConfig
from spool._items import encode_item
from spool._retry import cooldown
from spool._store import Store
from spool.testing import Receiver

# Drains only on flush() (and once when the drainer starts): tests decide when batches leave.
QUIET = replace(FAST, flush_interval=60.0, flush_trigger=1_000_000)


@contextlib.contextmanager
def open_store(path: Path) -> Iterator[Store]:
    store = Store(path, FAST)
    try:
        yield store
    finally:
        store.close()


LEASE_OWNER = "SELECT owner FROM leases WHERE spans.seq BETWEEN lo AND hi AND until > ?"


def rows(path: Path) -> list[dict[str, Any]]:
    """Every pending row's bookkeeping, by seq (`lease_owner`: the owner of a live lease covering it, or None)."""
    with open_store(path) as store:
        cur = store._db.execute(
            f"SELECT span_id, version, is_end, attempts, ({LEASE_OWNER}) AS lease_owner, next_attempt_at"
            " FROM spans ORDER BY seq",
            (time.time(),),
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def padded(i: int, size: int, **kw: Any) -> dict[str, Any]:
    return span(i, metadata={"pad": "x" * size}, **kw)


def mk_sink(rx: Receiver, key: str = "test-key") -> SGPSink:
    return SGPSink(api_key=key, account_id="test-account", base_url=rx.url)


# -- coalescing -----------------------------------------------------------------------------------------------


def test_100_starts_then_100_ends_make_100_ended_writes(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=QUIET) as sp:
            assert await sp.flush(timeout=5)  # the drainer's first round ran; from here on only flush() sends
            for i in range(100):
                sp.put(span(i))
            await sp.commit()
            for i in range(100):
                sp.put(span(i, end=True))
            await sp.commit()
            assert receiver.requests == 0
            assert {(r["version"], r["is_end"]) for r in rows(spool_path)} == {(2, 1)}
            assert await sp.flush(timeout=10)

    asyncio.run(main())
    assert receiver.writes == 100
    assert receiver.ended == 100
    assert all(is_end for _, _, is_end in receiver.received_ids)


def test_end_then_start_stays_ended(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=QUIET) as sp:
            assert await sp.flush(timeout=5)
            for i in range(100):
                sp.put(span(i, end=True))
            await sp.commit()
            for i in range(100):
                sp.put(span(i))  # late starts: must not overwrite the ends
            await sp.commit()
            assert {(r["version"], r["is_end"]) for r in rows(spool_path)} == {(1, 1)}
            assert await sp.flush(timeout=10)

    asyncio.run(main())
    assert receiver.writes == 100 and receiver.ended == 100
    assert not any(not is_end for _, _, is_end in receiver.received_ids)


def test_row_updated_in_flight_is_sent_again(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=QUIET) as sp:
            assert await sp.flush(timeout=5)
            receiver.hang = True
            sp.put(span(1))
            flushing = asyncio.create_task(sp.flush(timeout=15))
            await until(lambda: receiver.requests >= 1, what="the start on the wire")
            sp.put(span(1, end=True))
            await sp.commit()
            [row] = rows(spool_path)
            assert row["version"] == 2 and row["is_end"] == 1 and row["lease_owner"] is not None
            receiver.hang = False
            assert await flushing
            st = await sp.stats()
            assert st.pending == 0 and st.delivered_total == 1  # the start's version was not deleted as delivered

    asyncio.run(main())
    assert receiver.received_ids == [("trace-1", "span-1", False), ("trace-1", "span-1", True)]
    assert receiver.spans[("trace-1", "span-1")]["end_timestamp"] is not None


def test_agent_like_workload_never_sends_a_start_after_its_end(
    spool_path: Path, receiver: Receiver, sink: SGPSink
) -> None:
    """Spans start and end at random times while the drainer runs (small batches, a little latency):
    every span arrives ended, and for no span does a start arrive after its end."""
    rnd = random.Random(7)
    receiver.latency = 0.002
    cfg = replace(FAST, batch_size=7, flush_trigger=5, flush_interval=0.01)
    n = 300

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=cfg) as sp:
            open_spans: list[int] = []
            started = 0
            while started < n or open_spans:
                if started < n and (not open_spans or rnd.random() < 0.55):
                    sp.put(span(started, trace=f"t{started // 10}"))
                    open_spans.append(started)
                    started += 1
                else:
                    i = open_spans.pop(rnd.randrange(len(open_spans)))
                    sp.put(span(i, trace=f"t{i // 10}", end=True))
                if rnd.random() < 0.2:
                    await asyncio.sleep(rnd.choice([0, 0.001, 0.005]))
            assert await sp.flush(timeout=30)

    asyncio.run(main())
    assert receiver.ended == n and len(receiver.spans) == n
    ended: set[tuple[str, str]] = set()
    for trace_id, span_id, is_end in receiver.received_ids:
        assert (trace_id, span_id) not in ended, f"start of {span_id} arrived after its end"
        if is_end:
            ended.add((trace_id, span_id))
    assert receiver.writes < 2 * n  # some starts were coalesced away


# -- rejections -----------------------------------------------------------------------------------------------


def test_poison_span_is_isolated_and_retried_from_dead(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    poison = "span-17"
    receiver.reject_if = lambda item: "bad span" if item["id"] == poison else None
    store_items(spool_path, [span(i) for i in range(50)], QUIET)

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=QUIET) as sp:
            assert await sp.flush(timeout=10)  # dead letters are not pending
            st = await sp.stats()
            assert (st.pending, st.dead, st.delivered_total, st.dropped_total) == (0, 1, 49, 0)

    asyncio.run(main())
    assert len(receiver.spans) == 49 and receiver.writes == 49
    assert ("trace-1", poison) not in receiver.spans
    # Bisecting 50 items for one bad one: at most 1 + 2 * ceil(log2(50)) requests.
    assert receiver.requests <= 1 + 2 * math.ceil(math.log2(50))
    with open_store(spool_path) as store:
        [dead] = store.dead_list()
        assert (dead.span_id, dead.status, dead.name, dead.attempts) == (poison, 422, "step 17", 1)
        assert dead.detail is not None and "bad span" in dead.detail
        receiver.reject_if = None
        assert store.dead_retry([dead.id]) == (1, 0)
        assert store.dead_list() == []

    async def again() -> None:
        async with Spool(spool_path, sink=sink, config=QUIET) as sp:
            assert await sp.flush(timeout=10)
            assert (await sp.stats()).dead == 0

    asyncio.run(again())
    assert len(receiver.spans) == 50


def test_413_splits_into_smaller_requests(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    receiver.max_body_bytes = 10_000
    store_items(spool_path, [padded(i, 900) for i in range(60)] + [padded(999, 20_000)], QUIET)

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=QUIET) as sp:
            assert await sp.flush(timeout=20)

    asyncio.run(main())
    assert len(receiver.spans) == 60 and receiver.writes == 60
    assert max(receiver.batches) < 10  # ~1 KB items under a 10 KB limit
    with open_store(spool_path) as store:
        [dead] = store.dead_list()
        assert dead.span_id == "span-999" and dead.status == 413
    # After the first 413s the drainer pre-splits big batches instead of sending them to be refused.
    refused = receiver.requests - len(receiver.batches) - 1
    assert refused <= 12, f"{refused} requests were refused with 413"


def test_dead_letter_records_the_attempts_it_had(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    receiver.fail_status, receiver.fail_count = 503, 2
    receiver.reject_if = lambda item: "never valid"

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=replace(QUIET, max_attempts=4)) as sp:
            sp.put(span(1))
            assert await sp.flush(timeout=10)

    asyncio.run(main())
    with open_store(spool_path) as store:
        [dead] = store.dead_list()
    assert dead.status == 422 and dead.attempts == 3  # two 503s, then the rejected one


def test_a_start_put_after_its_end_was_delivered_is_never_sent(
    spool_path: Path, receiver: Receiver, sink: SGPSink
) -> None:
    """Its end is in the record of delivered ends, so the late start is not stored (sent, it would undo the end);
    a start of a span not ended yet is sent as usual."""

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=FAST) as sp:
            for i in range(100):
                sp.put(span(i, end=True))
            assert await sp.flush(30)
            for i in range(101):
                sp.put(span(i))
            assert await sp.flush(30)
            assert (await sp.stats()).pending == 0

    asyncio.run(main())
    assert [i for _, i, is_end in receiver.received_ids if not is_end] == ["span-100"]
    assert receiver.ended == 100


def test_the_record_of_delivered_ends_stays_within_its_bounds(spool_path: Path) -> None:
    """At most `ended_keep` ends and a 16th more (fewer under a small cap), none older than an hour; a file without
    the record (made before it) gets it when opened for writing, and one with the first record's ids keeps them."""
    Store(spool_path, SpoolConfig()).close()
    with contextlib.closing(sqlite3.connect(spool_path)) as db, db:
        db.execute("DROP TABLE ended_keys")  # as a file made by the first record, which kept the ids themselves
        db.execute("CREATE TABLE ended (id INTEGER PRIMARY KEY, trace_id TEXT, span_id TEXT, at REAL)")
        db.execute("INSERT INTO ended (trace_id, span_id, at) VALUES ('trace-1', 'span-old', ?)", (time.time() - 4000,))
        db.execute("INSERT INTO ended (trace_id, span_id, at) VALUES ('trace-1', 'span-kept', ?)", (time.time(),))
    store = Store(spool_path, SpoolConfig(max_bytes=8 * 1024 * 1024))
    try:
        assert store.ended_keep == 8 * 1024 * 1024 // 16 // 64 < 9000
        assert store.outcomes([encode_item(span("kept"), 1 << 20)])["unchanged"] == 1  # type: ignore[arg-type]
        db = store._db
        for n in range(0, 12000, 500):
            store.append([encode_item(span(i, end=True), 1 << 20) for i in range(n, n + 500)])
            while claimed := store.claim("me", 500, 30):
                store.complete(claimed)
                store.release(claimed[0].lease)
            if n == 0:  # 500 ends and the one kept, the one older than an hour forgotten
                assert db.execute("SELECT count(*) FROM ended_keys").fetchone() == (501,)
                assert store.outcomes([encode_item(span("old"), 1 << 20)])["new"] == 1  # type: ignore[arg-type]
            count = db.execute("SELECT count(*) FROM ended_keys").fetchone()[0]
            assert count <= store.ended_keep * 17 // 16 + 500
        assert count >= store.ended_keep
        newest = [encode_item(span(i), 1 << 20) for i in range(12000 - store.ended_keep, 12000)]
        assert store.outcomes(newest)["unchanged"] == store.ended_keep  # the newest are kept
    finally:
        store.close()


def test_dead_retry_of_an_end_replaces_a_pending_start(spool_path: Path) -> None:
    with open_store(spool_path) as store:
        store.append([encode_item(span(1, end=True), 1 << 20)])
        [claimed] = store.claim("me", 10, 30)
        assert store.to_dead(claimed, 422, "nope")
        store.append([encode_item(span(1), 1 << 20)])  # a start of the same span arrives later
        [dead] = store.dead_list()
        assert store.dead_retry([dead.id]) == (1, 0)
        [body] = list(store.iter_bodies())
        assert b"end_timestamp" in body  # the end was not lost to the pending start


# -- credentials ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["wrong_key_403", "status_401"])
def test_credentials_refused_pauses_and_keeps_everything(case: str, spool_path: Path, receiver: Receiver) -> None:
    if case == "wrong_key_403":
        receiver.api_key, status = "right", "403"
    else:
        receiver.fail_status, status = 401, "401"

    async def refused() -> None:
        sp = Spool(spool_path, sink=mk_sink(receiver, "wrong"), config=QUIET)
        try:
            assert await sp.flush(timeout=10)  # nothing to send yet: only waits for the sink's set-up
            for i in range(30):
                sp.put(span(i))
            assert not await sp.flush(timeout=0.5)
            st = await sp.stats()
            assert (st.pending, st.dead, st.dropped_total, st.delivered_total) == (30, 0, 0, 0)
            assert st.last_error is not None and status in st.last_error and "credentials" in st.last_error
        finally:
            await sp.aclose(timeout=0)

    asyncio.run(refused())
    assert receiver.requests >= 1 and receiver.writes == 0
    assert {r["attempts"] for r in rows(spool_path)} == {0}  # 401/403 are not the spans' fault
    with open_store(spool_path) as store:  # another process's `spool stats` sees why
        assert status in (store.stats().last_error or "")

    receiver.fail_status = None

    async def fixed() -> None:  # a new SGPSink with the right key, on a new Spool over the same file
        async with Spool(spool_path, sink=mk_sink(receiver, "right"), config=QUIET) as sp:
            assert await sp.flush(timeout=10)
            st = await sp.stats()
            assert st.pending == 0 and st.delivered_total == 30 and st.last_error is None

    asyncio.run(fixed())
    assert len(receiver.spans) == 30


def test_credentials_pause_probes_again_by_itself(spool_path: Path, receiver: Receiver) -> None:
    receiver.api_key = "right"
    cfg = replace(QUIET, backoff_max=0.05, cooldown_max=0.3)

    async def main() -> None:
        async with Spool(spool_path, sink=mk_sink(receiver, "k"), config=cfg) as sp:
            assert await sp.flush(timeout=5)  # the background loop's first round found nothing; it now waits 60 s
            for i in range(10):
                sp.put(span(i))
            assert not await sp.flush(timeout=0.3)  # refused: the pause starts here, in flush()'s round
            receiver.api_key = "k"  # fixed on the server side; no flush() from us
            await until(lambda: len(receiver.spans) == 10, what="the paused drainer to probe again")
            await until(lambda: sp.metrics().get("delivered", 0) == 10)
            assert (await sp.stats()).last_error is None

    asyncio.run(main())


def test_flush_and_close_return_at_once_when_only_configuration_blocks_delivery(
    spool_path: Path, receiver: Receiver
) -> None:
    """The README's first example with a wrong key: `flush(30)` returns False after one refused request instead of
    sending ~70 over 30 s, a second flush sends nothing while the pause runs, and leaving the block (the 10 s
    shutdown) sends nothing more either. (A 404, no span API at the URL, pauses the same way.)"""
    receiver.api_key = "right"
    sink = mk_sink(receiver, "wrong")
    cfg = replace(QUIET, shutdown_timeout=10.0)

    async def main() -> tuple[bool, bool, int, int]:
        async with Spool(spool_path, sink=sink, config=cfg) as sp:
            sp.put(span(1))
            first = await sp.flush(30)
            probes = receiver.requests
            again = await sp.flush(30)
            return first, again, probes, receiver.requests

    first, again, probes, after_second = asyncio.run(main())
    assert (first, again) == (False, False)
    assert 1 <= probes <= 2  # the flush's probe (and perhaps the background drainer's first round)
    assert after_second == probes and receiver.requests == probes  # nothing more during the pause, nor at close
    with open_store(spool_path) as store:
        assert store.stats().pending == 1


def test_a_refusal_of_every_request_alike_pauses_like_a_refused_key(spool_path: Path, receiver: Receiver) -> None:
    """A server that answers 422 to every request the same way (MLflow without its experiment header): the batch and
    two of its spans alone are refused alike, so it is the request, not the spans. Draining pauses, nothing is
    dead-lettered, `flush` returns at once (on main: 99 requests, all 50 spans dead-lettered, `flush` True)."""
    receiver.fail_status, receiver.fail_count = 422, 10**6
    store_items(spool_path, [span(i) for i in range(50)], QUIET)

    async def main() -> tuple[bool, int]:
        async with Spool(spool_path, sink=mk_sink(receiver, "k"), config=replace(QUIET, shutdown_timeout=10.0)) as sp:
            return await sp.flush(30), receiver.requests

    ok, requests = asyncio.run(main())
    assert not ok and 3 <= requests <= 4 and receiver.requests == requests
    with open_store(spool_path) as store:
        st = store.stats()
    assert (st.pending, st.dead) == (50, 0)
    assert st.last_error is not None and "HTTP 422: injected fault" in st.last_error and "paused" in st.last_error


def test_pause_between_failed_rounds_grows_to_a_cap() -> None:
    cfg = SpoolConfig(backoff_max=1.0, cooldown_max=10.0)
    pauses = [cooldown(n, cfg) for n in range(1, 8)]
    assert all(b > a for a, b in itertools.pairwise(pauses[:5]))
    assert max(pauses) <= 10.0 and pauses[-1] >= 9.0
    assert cooldown(1, cfg, retry_after=7.0) >= 7.0
    assert 9.0 <= cooldown(100_000, cfg) <= 10.0  # days of outage: still the cap, no overflow


# -- transient failures ---------------------------------------------------------------------------------------


def test_transient_rounds_cool_down_longer_and_keep_rows(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    store_items(spool_path, [span(i) for i in range(5)], QUIET)
    receiver.fail_status = 503
    cfg = replace(QUIET, max_attempts=3, backoff_initial=0.001, backoff_max=0.4, cooldown_max=30.0)

    def cooldown_after(attempts: int) -> Callable[[], float | None]:
        """The cool-down the rows got when a round ended with `attempts` counted (None: not now)."""

        def read() -> float | None:
            with open_store(spool_path) as store:
                db = store._db
                db.execute("BEGIN")  # one snapshot of the rows and of the last error's time
                try:
                    rs = db.execute(
                        f"SELECT attempts, ({LEASE_OWNER}), next_attempt_at FROM spans", (time.time(),)
                    ).fetchall()
                    failed_at = store.meta("last_error_at")
                finally:
                    db.execute("COMMIT")
            assert max(r[0] for r in rs) <= attempts, "missed the pause between two rounds"
            if any(r[0] != attempts or r[1] is not None for r in rs):
                return None
            return float(max(r[2] for r in rs) - failed_at)

        return read

    async def wait_cooldown(attempts: int) -> float:
        read, seen = cooldown_after(attempts), []

        def ready() -> bool:
            seen.append(read())
            return seen[-1] is not None

        await until(ready, what=f"round {attempts // 3} to give up")
        value = seen[-1]
        assert value is not None
        return value

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=cfg) as sp:  # its drainer starts a round at once
            first = await wait_cooldown(3)
            second = await wait_cooldown(6)  # attempts are kept per row, across rounds
            st = await sp.stats()
            assert (st.pending, st.dead, st.dropped_total) == (5, 0, 0)
            assert "503" in (st.last_error or "")
            assert second > first * 1.5, (first, second)  # doubling, give or take the jitter
            receiver.fail_status = None
            assert await sp.flush(timeout=10)  # tries the cooled-down rows at once

    asyncio.run(main())
    assert len(receiver.spans) == 5


def test_after_a_failed_round_one_batch_probes_alone(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    """The first round sends `max_inflight` batches; once it failed, each round sends one batch until one goes
    through."""
    store_items(spool_path, [span(i) for i in range(40)], QUIET)
    receiver.hang = True
    cfg = replace(QUIET, batch_size=5, max_inflight=4, max_attempts=1, backoff_max=0.2, cooldown_max=0.5)

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=cfg) as sp:
            # Its first round starts at once: four batches side by side.
            await until(lambda: receiver.requests == 4, what="four requests on the wire")
            receiver.fail_status, receiver.hang = 503, False  # all four refused
            await until(lambda: sp.metrics(gauges=False)["cooldowns"] == 5, what="the second round to fail")
            assert receiver.requests == 5  # the second round: one batch (the next comes after a longer pause)
            receiver.fail_status = None
            assert await sp.flush(timeout=10) and len(receiver.spans) == 40

    asyncio.run(main())


def test_failed_rounds_leave_no_reference_cycles(spool_path: Path) -> None:
    """A failed batch's error travels between frames and threads; it must not sit in a reference cycle with them,
    which would keep the batch's rows and request body until the cyclic GC ran (rarely, under a steady producer)."""
    import httpx

    import spool

    package = str(Path(spool.__file__).parent)  # frames of the package's own code, wherever the checkout is
    store_items(spool_path, [span(i) for i in range(20)], QUIET)
    with socket.socket() as s:  # a port nobody listens on: every request is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = SGPSink(api_key="k", account_id="a", base_url=f"http://127.0.0.1:{port}")
    cfg = replace(QUIET, batch_size=5, max_attempts=2, backoff_initial=0.001, backoff_max=0.01, cooldown_max=0.1)

    async def main() -> None:
        async with Spool(spool_path, sink=refused, config=cfg) as sp:
            gc.collect()
            gc.disable()
            try:
                # Rounds every ~0.1 s, each refused.
                await until(lambda: sp.metrics(gauges=False)["cooldowns"] >= 8, what="eight failed batches")
                gc.set_debug(gc.DEBUG_SAVEALL)
                gc.collect()
                holding = collections.Counter(
                    f"{o.f_code.co_name}:{o.f_lineno}" if isinstance(o, types.FrameType) else type(o).__name__
                    for o in gc.garbage
                    if isinstance(o, httpx.Request)
                    or (isinstance(o, types.FrameType) and o.f_code.co_filename.startswith(package))
                )
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
            assert not holding, holding

    asyncio.run(main())


def test_last_error_set_after_every_failed_attempt_and_cleared(
    spool_path: Path, receiver: Receiver, sink: SGPSink
) -> None:
    receiver.fail_status, receiver.fail_count = 503, 2
    seen: list[str | None] = []

    async def recording_sleep(seconds: float) -> None:
        with open_store(spool_path) as store:  # what another process's `spool stats` would print
            seen.append(store.stats().last_error)
        await asyncio.sleep(0)

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=QUIET, sleep=recording_sleep) as sp:
            sp.put(span(1))
            assert await sp.flush(timeout=10)
            assert (await sp.stats()).last_error is None

    asyncio.run(main())
    assert len(seen) == 2 and all(e is not None and "503" in e for e in seen)
    with open_store(spool_path) as store:
        assert store.stats().last_error is None


def test_long_retry_after_is_honoured_even_by_flush(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    """A Retry-After longer than a backoff step ends the round (the rows cool down); the next try, even a forced
    one from flush(), waits for it."""
    receiver.fail_status, receiver.retry_after, receiver.fail_count = 503, 3, 1
    slept = RecordingSleep()

    async def main() -> None:
        # cooldown_max above the 3 s asked for: a Retry-After is honoured up to cooldown_max, never beyond
        async with Spool(spool_path, sink=sink, config=replace(QUIET, cooldown_max=5.0), sleep=slept) as sp:
            sp.put(span(1))
            assert await sp.flush(timeout=10)

    asyncio.run(main())
    assert receiver.requests == 2 and len(receiver.spans) == 1
    assert slept.delays and max(slept.delays) > 2.0  # waited (most of) the 3 s the server asked for


# -- flush() contract -----------------------------------------------------------------------------------------


def test_flush_tries_cooled_down_rows_at_once(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    store_items(spool_path, [span(i) for i in range(5)], QUIET)
    with open_store(spool_path) as store:
        claimed = store.claim("earlier-drainer", 10, 30)
        store.release(claimed[0].lease, [c.seq for c in claimed], next_attempt_at=time.time() + 3600)

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=QUIET) as sp:
            assert (await sp.stats()).pending == 5
            assert await sp.flush(timeout=5)

    asyncio.run(main())
    assert len(receiver.spans) == 5


def test_flush_waits_for_rows_leased_by_another_live_drainer(
    spool_path: Path, receiver: Receiver, sink: SGPSink
) -> None:
    store_items(spool_path, [span(i) for i in range(5)], QUIET)
    receiver.hang = True

    async def main() -> None:
        async with Spool(spool_path, sink=mk_sink(receiver), config=QUIET) as other:
            theirs = asyncio.create_task(other.flush(timeout=15))
            await until(lambda: receiver.requests >= 1, what="the other drainer's batch on the wire")
            async with Spool(spool_path, sink=sink, config=QUIET) as sp:
                assert not await sp.flush(timeout=0.3)  # the rows are leased by a live drainer
                ours = asyncio.create_task(sp.flush(timeout=15))
                receiver.hang = False
                assert await theirs
                assert await ours  # True once the other drainer delivered them

    asyncio.run(main())
    assert receiver.writes == 5  # nobody sent a leased row a second time


def test_flush_timeout_mid_send_releases_the_lease(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    cfg = replace(QUIET, lease_seconds=60.0)

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=cfg) as sp:
            sp.put(span(0))
            assert await sp.flush(timeout=10)  # warm: the client is connected
            receiver.hang = True
            for i in range(1, 6):
                sp.put(span(i))
            assert not await sp.flush(timeout=0.3)
            assert receiver.requests >= 2  # the batch was on the wire when the timeout hit
            assert all(r["lease_owner"] is None for r in rows(spool_path))
            assert (await sp.stats()).inflight == 0
            receiver.hang = False
            assert await sp.flush(timeout=5)  # at once, not after the 60 s lease

    asyncio.run(main())
    assert len(receiver.spans) == 6


def test_lease_outlives_every_send_of_a_long_bisect(spool_path: Path, receiver: Receiver) -> None:
    """Two drainers on one file, a lease barely longer than the request timeout, and a poison span whose bisection
    takes many round trips: the lease is renewed before each send, so the other drainer never sends those rows."""
    receiver.latency = 0.15
    receiver.reject_if = lambda item: "bad span" if item["id"] == "span-33" else None
    cfg = replace(QUIET, lease_seconds=1.0, request_timeout=0.8)  # the bisection takes ~10 requests: ~1.5 s
    store_items(spool_path, [span(i) for i in range(50)], QUIET)

    async def main() -> None:
        async with (
            Spool(spool_path, sink=mk_sink(receiver), config=cfg) as a,
            Spool(spool_path, sink=mk_sink(receiver), config=cfg) as b,
        ):
            ok = await asyncio.gather(a.flush(timeout=20), b.flush(timeout=20))
            assert list(ok) == [True, True]
            assert (await a.stats()).dead == 1

    asyncio.run(main())
    assert len(receiver.spans) == 49
    assert receiver.writes == 49  # no row was sent by both drainers


def test_keepalive_40_batches_over_at_most_two_connections(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=replace(QUIET, batch_size=5)) as sp:
            for i in range(220):
                sp.put(span(i))
            assert await sp.flush(timeout=30)

    asyncio.run(main())
    assert len(receiver.batches) >= 40
    assert receiver.connections <= 2


def test_a_backlog_left_by_an_earlier_process_goes_at_start(
    spool_path: Path, receiver: Receiver, sink: SGPSink
) -> None:
    async def leave() -> None:
        async with Spool(spool_path, config=FAST) as sp:  # no sink: an earlier process that could not send
            for i in range(5):
                sp.put(span(i, end=True))

    async def reopen() -> None:
        async with Spool(spool_path, sink=sink, config=replace(FAST, flush_interval=600.0, shutdown_timeout=0)):
            assert await asyncio.to_thread(receiver.wait_for, 5, 30.0)  # long before flush_interval

    asyncio.run(leave())
    asyncio.run(reopen())


def test_a_span_put_now_waits_for_the_interval_not_the_first_pass(
    spool_path: Path, receiver: Receiver, sink: SGPSink
) -> None:
    async def go() -> None:
        cfg = replace(FAST, flush_interval=600.0, flush_trigger=1000, shutdown_timeout=0)
        async with Spool(spool_path, sink=sink, config=cfg) as sp:
            sp.put(span(1, end=True))
            await sp.commit()
            # Absence has no event to wait on: give a drainer that would race the first put ample time to send it.
            await asyncio.sleep(1.0)
            assert receiver.requests == 0  # it waits for a batch, as an in-memory queue does
            assert await sp.flush(30)
        assert receiver.requests == 1

    asyncio.run(go())
