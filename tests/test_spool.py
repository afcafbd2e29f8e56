"""The durable spool end to end: real SQLite files, the real receiver, the real SGPSink/httpx stack."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FAST, RecordingSleep, span

from spool import SGPSink, Spool, SpoolClosedError
from spool._store import Store
from spool.testing import Receiver


def test_puts_wait_for_flush_and_travel_together(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    async def main() -> None:
        async with Spool(spool_path, sink=sink) as sp:  # default flush_interval 4 s, flush_trigger 200
            for i in range(5):
                sp.put(span(i))
                sp.put(span(i, end=True))
            await sp.commit()
            assert receiver.requests == 0  # a put never touches the network by itself
            assert await sp.flush(timeout=10)
            assert receiver.batches == [5]  # 10 events, coalesced to 5 ended spans, in one request

    asyncio.run(main())
    assert receiver.ended == 5


def test_500_puts_all_delivered(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=FAST) as sp:
            for i in range(500):
                sp.put(span(i, trace=f"t{i % 7}"))
            assert await sp.flush(timeout=30)
            st = await sp.stats()
            assert st.pending == 0 and st.inflight == 0 and st.delivered_total == 500
            assert st.last_error is None and st.oldest_age_s is None

    asyncio.run(main())
    assert len(receiver.spans) == 500
    assert all(size <= 50 for size in receiver.batches)


def test_keepalive_reuses_connections(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=FAST) as sp:
            for i in range(45 * 50):
                sp.put(span(i))
            assert await sp.flush(timeout=60)

    asyncio.run(main())
    assert len(receiver.batches) >= 45
    assert receiver.connections <= 2


def test_outage_keeps_everything_and_recovers(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    receiver.fail_status = 503

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=FAST) as sp:
            for i in range(120):
                sp.put(span(i))
            assert not await sp.flush(timeout=2)
            st = await sp.stats()
            assert st.pending == 120 and st.dropped_total == 0 and st.delivered_total == 0
            assert st.last_error is not None and "503" in st.last_error
            receiver.fail_status = None
            assert await sp.flush(timeout=20)
            st = await sp.stats()
            assert st.pending == 0 and st.delivered_total == 120 and st.last_error is None

    asyncio.run(main())
    assert len(receiver.spans) == 120


def test_retry_after_is_honoured(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    receiver.fail_status, receiver.retry_after, receiver.fail_count = 503, 0.04, 1
    slept = RecordingSleep()

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=FAST, sleep=slept) as sp:
            sp.put(span(1))
            assert await sp.flush(timeout=10)

    asyncio.run(main())
    assert len(receiver.spans) == 1
    assert slept.delays and slept.delays[0] >= 0.04  # FAST backoff starts at 0.01: Retry-After won


def test_sdk_retries_are_not_stacked_on_ours(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    receiver.fail_status = 500

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=FAST) as sp:
            sp.put(span(1))
            assert not await sp.flush(timeout=1.0)
            await sp.aclose(timeout=0)

    asyncio.run(main())
    store = Store(spool_path)
    try:
        (attempts,) = store._db.execute("SELECT attempts FROM spans").fetchone()
    finally:
        store.close()
    assert attempts >= 2
    # One request per counted attempt (no hidden SDK retries), plus at most the one the flush timeout cut off: a
    # request already made from a thread reaches the server, and its outcome is not awaited.
    assert attempts <= receiver.requests <= attempts + 1


def test_crash_after_commit_loses_nothing(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    n = 300
    child = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from spool import Spool
        async def main():
            sp = Spool({str(spool_path)!r})
            for i in range({n}):
                sp.put({{"trace_id": "crash", "id": f"s{{i}}", "name": "n",
                        "start_timestamp": "2026-11-28T10:00:00Z"}})
            await sp.commit()
            print("committed", flush=True)
            time.sleep(60)
        asyncio.run(main())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "committed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    store = Store(spool_path)
    try:
        assert store.counts()[0] == n
    finally:
        store.close()

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=FAST) as sp:
            assert await sp.flush(timeout=30)

    asyncio.run(main())
    assert len(receiver.spans) == n


def test_bad_input_raises_and_leaves_stored_rows_alone(spool_path: Path) -> None:
    async def main() -> None:
        async with Spool(spool_path) as sp:
            sp.put(span(1))
            await sp.commit()
            with pytest.raises(ValueError, match="trace_id"):
                sp.put({"name": "x", "start_timestamp": "2026-11-28T10:00:00Z"})
            with pytest.raises(TypeError, match="metadata"):
                sp.put(span(2, metadata={"obj": object()}))
            with pytest.raises(ValueError, match="max_item_bytes"):
                sp.put(span(3, input={"p": "x" * (2 * 1024 * 1024)}))
            sp.put(span(4))
            await sp.commit()
            assert (await sp.stats()).pending == 2

    asyncio.run(main())


def test_put_after_close_raises(spool_path: Path) -> None:
    async def main() -> Spool:
        sp = Spool(spool_path)
        await sp.aclose()
        await sp.aclose()  # idempotent
        return sp

    sp = asyncio.run(main())
    with pytest.raises(SpoolClosedError) as info:
        sp.put(span(1))
    assert isinstance(info.value, RuntimeError)


def test_totals_persist_across_restarts(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    async def deliver(n: int) -> int:
        async with Spool(spool_path, sink=sink, config=FAST) as sp:
            for i in range(n):
                sp.put(span(i, trace=f"run{n}"))
            assert await sp.flush(timeout=20)
            return (await sp.stats()).delivered_total

    assert asyncio.run(deliver(10)) == 10
    assert asyncio.run(deliver(7)) == 17


def test_store_only_spool_keeps_rows(spool_path: Path) -> None:
    async def main() -> None:
        async with Spool(spool_path) as sp:
            sp.put(span(1))
            assert not await sp.flush(timeout=1)  # no sink: commits, delivers nothing
            assert (await sp.stats()).pending == 1

    asyncio.run(main())


def test_follows_the_event_loop(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    sp = Spool(spool_path, sink=sink, config=FAST)

    async def produce(k: int) -> None:
        for i in range(20):
            sp.put(span(i, trace=f"loop{k}"))

    for k in range(5):  # each asyncio.run is a new loop; the last one's puts are never awaited on
        asyncio.run(produce(k))

    async def finish() -> None:
        assert await sp.flush(timeout=20)
        await sp.aclose()

    asyncio.run(finish())
    assert len(receiver.spans) == 100


def test_put_from_threads(spool_path: Path, receiver: Receiver, sink: SGPSink) -> None:
    import threading

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=FAST) as sp:

            def worker(t: int) -> None:
                for i in range(250):
                    sp.put(span(i, trace=f"thread{t}"))

            threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                await asyncio.to_thread(t.join)
            assert await sp.flush(timeout=30)

    asyncio.run(main())
    assert len(receiver.spans) == 1000


def test_unclosed_spool_warns(spool_path: Path) -> None:
    sp = Spool(spool_path)
    with pytest.warns(ResourceWarning, match="never closed"):
        del sp
        gc.collect()


def test_puts_racing_the_writer_from_threads_are_all_committed_without_a_commit_call(spool_path: Path) -> None:
    """`put` appends without a lock: every item must still reach the file through the writer's own wake-ups alone
    (no `commit()`) while the writer takes batches concurrently, bursts over 512 included (compacted bodies). One
    thread waits for each of its bursts to be taken before the next, so a put that failed to wake the writer after a
    take stalls it (and the test) for sure."""
    import threading
    import time

    bursts, burst, steady, per_steady = 30, 100, 3, 3000
    stalled: list[int] = []

    async def main() -> None:
        async with Spool(spool_path, config=FAST) as sp:

            def pacer() -> None:
                for b in range(bursts):
                    for i in range(burst):
                        sp.put(span(b * burst + i, trace="pacer"))
                    deadline = time.monotonic() + 10
                    while sp._pending and time.monotonic() < deadline:
                        time.sleep(0.001)
                    if sp._pending:
                        stalled.append(b)
                        return

            def steady_worker(t: int) -> None:
                for i in range(per_steady):
                    sp.put(span(i, trace=f"thread{t}"))

            threads = [threading.Thread(target=pacer)]
            threads += [threading.Thread(target=steady_worker, args=(t,)) for t in range(steady)]
            for t in threads:
                t.start()
            for t in threads:
                await asyncio.to_thread(t.join)
            assert not stalled, f"burst {stalled} was never taken: a put did not wake the writer"
            total = bursts * burst + steady * per_steady
            deadline = asyncio.get_running_loop().time() + 30
            while (await sp.stats()).pending < total:
                assert asyncio.get_running_loop().time() < deadline, "puts were left uncommitted"
                await asyncio.sleep(0.01)

    asyncio.run(main())
    store = Store(spool_path)
    try:
        rows = store._db.execute("SELECT trace_id, span_id FROM spans").fetchall()
    finally:
        store.close()
    want = [("pacer", f"span-{i}") for i in range(bursts * burst)]
    want += [(f"thread{t}", f"span-{i}") for t in range(steady) for i in range(per_steady)]
    assert sorted(rows) == sorted(want)


def test_puts_past_max_pending_bytes_are_dropped_and_counted_not_held(
    spool_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Puts wait in memory while no commit can run (here: no event loop yet, as when the disk is behind). Past
    `max_pending_bytes` the newest are dropped, never raised or blocked on, counted in `metrics()`, logged once, and
    recorded in the file (`dropped_total`, `dropped_memory`) by the next commit; what was held is all committed."""
    from spool import SpoolConfig

    config = SpoolConfig(max_item_bytes=64 * 1024, max_pending_bytes=1024 * 1024)
    sp = Spool(spool_path, config=config)
    bodies = [span(i, input={"prompt": f"{i} " + "p" * 50_000}) for i in range(100)]  # distinct: none stored once
    for item in bodies:
        sp.put(item)  # no loop: nothing is committed
    held = sum(len(e.body) for e in sp._pending)
    assert 0 < held <= config.max_pending_bytes
    kept = len(sp._pending)
    assert 10 <= kept < 100
    m = sp.metrics(gauges=False)
    assert m["dropped_memory"] == m["dropped"] == 100 - kept
    lines = [r.message for r in caplog.records if "max_pending_bytes=1048576 reached" in r.message]
    assert len(lines) == 1  # the first drop; the next line would come a minute later, with the count since

    async def main() -> None:
        await sp.commit()  # binds a loop: what was held is committed, and the drops recorded
        sp.put(span(1000))  # room again
        await sp.commit()
        st = await sp.stats()
        assert (st.pending, st.dropped_total) == (kept + 1, 100 - kept)
        await sp.aclose()

    asyncio.run(main())
    store = Store(spool_path)
    try:
        assert store.stats_detail(kept + 1)["dropped_memory"] == 100 - kept
    finally:
        store.close()


def test_stats_are_read_beside_the_store_thread_not_behind_it(spool_path: Path) -> None:
    """`stats()` reads on a connection of its own: it answers while the store's thread is busy (here: held on an
    event, as by a long commit), and raises `SpoolClosedError` once the spool is closed."""
    import threading

    async def main() -> None:
        sp = Spool(spool_path)
        sp.put(span(1))
        await sp.commit()
        entered, gate = threading.Event(), threading.Event()

        def hold() -> None:
            entered.set()
            gate.wait(60)

        held = sp._db.submit(hold)
        assert await asyncio.to_thread(entered.wait, 30)
        try:
            st = await asyncio.wait_for(sp.stats(), 30)  # would wait out `hold` on the store's thread
            assert (st.pending, st.dropped_total) == (1, 0)
            assert not held.done()
        finally:
            gate.set()
        await asyncio.wrap_future(held)
        await sp.aclose()
        with pytest.raises(SpoolClosedError):
            await sp.stats()

    asyncio.run(main())
