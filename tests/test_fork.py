"""A spool or processor made before `os.fork()` (a preloading server's workers) works in the child, with a real
fork: the child's result comes back through a pipe, and a child that does not finish is killed and fails the test."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, in_fork, span

from spool import SGPSink, Spool, SyncSpoolTracingProcessor
from spool.testing import Receiver

pytestmark = [pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"), pytest.mark.slow]


def _ids(rx: Receiver) -> set[str]:
    return {span_id for _, span_id in rx.spans}


def test_sync_processor_made_before_fork_delivers_from_the_child(
    receiver: Receiver, sink: SGPSink, spool_path: Path
) -> None:
    proc = SyncSpoolTracingProcessor(spool_path, sink=sink, config=FAST)
    for i in range(10):
        proc.on_span_start(span(i, "parent"))

    def child() -> dict[str, Any]:
        for i in range(100, 200):
            proc.on_span_start(span(i, "child"))
        flushed = proc.flush(60)
        proc.shutdown()
        return {"flushed": flushed, "dropped": proc.dropped, "errors": proc.errors}

    # Flushed: the child's spans have left the file (sent by the child, or by the parent's drainer, which shares it).
    assert in_fork(child) == {"flushed": True, "dropped": 0, "errors": 0}
    for i in range(200, 210):
        proc.on_span_start(span(i, "parent"))
    assert proc.flush(60)  # the parent is unaffected by its child
    proc.shutdown()
    assert _ids(receiver) == {f"span-{i}" for i in (*range(10), *range(100, 210))}
    assert receiver.writes == 120  # each once: the parent's queued spans were not sent by the child too


def test_spool_used_before_fork_works_in_the_child(receiver: Receiver, sink: SGPSink, spool_path: Path) -> None:
    sp = Spool(spool_path, sink=sink, config=FAST)

    async def parent_puts(first: int) -> None:
        for i in range(first, first + 10):
            sp.put(span(i))
        await sp.commit()

    asyncio.run(parent_puts(0))  # bound to a loop that has ended, as a request handler would leave it
    sp.put(span(10))  # queued, not committed: the parent's to commit

    def child() -> dict[str, Any]:
        async def main() -> bool:
            for i in range(100, 150):
                sp.put(span(i))
            flushed = await sp.flush(60)
            await sp.aclose()
            return flushed

        return {"flushed": asyncio.run(main()), "delivered": sp.metrics()["delivered"]}

    # The parent runs no loop now: the child sends its own 50, and the parent's 10 committed ones (a backlog).
    assert in_fork(child) == {"flushed": True, "delivered": 60}

    async def parent_ends() -> bool:
        await parent_puts(200)
        flushed = await sp.flush(60)
        await sp.aclose()
        return flushed

    assert asyncio.run(parent_ends())
    assert _ids(receiver) == {f"span-{i}" for i in (*range(11), *range(100, 150), *range(200, 210))}
    assert receiver.writes == 71


def test_forks_while_the_parent_commits_give_working_children(
    receiver: Receiver, sink: SGPSink, spool_path: Path
) -> None:
    """The database thread is busy committing when the fork comes: the fork waits for the call in progress."""
    proc = SyncSpoolTracingProcessor(spool_path, sink=sink, config=FAST)
    stop = threading.Event()
    put = 0

    def producer() -> None:
        nonlocal put
        while not stop.is_set():
            proc.on_span_start(span(put, "busy"))
            put += 1
            if put % 50 == 0:
                proc.spool.metrics()  # a read on the database thread, too

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        for k in range(4):

            def child(k: int = k) -> dict[str, Any]:
                proc.on_span_start(span(k, f"child-{k}"))
                proc.shutdown(0)  # commits; no flush (it would wait for the parent's steady stream to pause)
                return {"dropped": proc.dropped, "errors": proc.errors}

            assert in_fork(child) == {"dropped": 0, "errors": 0}
    finally:
        stop.set()
        thread.join()
    assert proc.flush(60)
    proc.shutdown()
    assert len(receiver.spans) == put + 4  # the parent's spans and each child's
