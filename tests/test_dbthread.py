"""The worker threads: calls run to the end even when their awaiter is cancelled; idle threads are reused."""

from __future__ import annotations

import asyncio
import threading

import pytest

from spool._dbthread import DbThread, Workers


def test_workers_run_side_by_side_and_reuse_idle_threads() -> None:
    workers = Workers("test-worker")
    both_running = threading.Barrier(2, timeout=10)

    def meet() -> int:
        both_running.wait()  # deadlocks (BrokenBarrierError) unless the two calls run at the same time
        return threading.get_ident()

    async def main() -> tuple[set[int], int]:
        first = set(await asyncio.gather(workers.run(meet), workers.run(meet)))
        again = await workers.run(threading.get_ident)
        return first, again

    try:
        first, again = asyncio.run(main())
        assert len(first) == 2 and again in first
    finally:
        workers.close()


def test_a_started_call_finishes_after_its_awaiter_is_cancelled() -> None:
    workers = Workers("test-worker")
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        release.wait(10)
        finished.set()

    async def main() -> None:
        task = asyncio.ensure_future(workers.run(slow))
        assert await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
        assert not finished.is_set()
        release.set()
        assert finished.wait(10)
    finally:
        workers.close()


def test_db_thread_runs_calls_in_submission_order_and_refuses_after_close() -> None:
    db = DbThread("test-db")
    seen: list[int] = []
    futures = [db.submit(seen.append, i) for i in range(100)]
    futures[-1].result(10)
    db.close()
    assert seen == list(range(100))
    with pytest.raises(RuntimeError, match="closed"):
        db.submit(seen.append, 0)
