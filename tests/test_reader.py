"""The stats reader's own connection: reads beside commits, and the hold a writer near the disk cap takes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from conftest import span, store_items

from spool._reader import Reader


def test_a_read_waits_while_a_writer_holds_and_runs_once_it_lets_go(spool_path: Path) -> None:
    store_items(spool_path, [span(i) for i in range(3)])
    reader = Reader(spool_path)
    entered, leave, left = threading.Event(), threading.Event(), threading.Event()

    def writer() -> None:
        with reader.holding(10):
            entered.set()
            leave.wait(30)
        left.set()

    async def main() -> int:
        try:
            holder = threading.Thread(target=writer)
            holder.start()
            assert await asyncio.to_thread(entered.wait, 30)
            read = asyncio.get_running_loop().create_task(reader.stats())
            for _ in range(20):
                await asyncio.sleep(0.005)  # the loop goes on (not blocked by the waiting read) ...
            assert not read.done()  # ... and the read has not started
            leave.set()
            st = await read
            assert left.is_set()
            await asyncio.to_thread(holder.join)
            return st.pending
        finally:
            await reader.aclose()

    assert asyncio.run(main()) == 3


def test_holding_with_no_read_in_progress_does_not_wait(spool_path: Path) -> None:
    store_items(spool_path, [span(0)])
    reader = Reader(spool_path)
    done = threading.Event()

    def hold() -> None:
        with reader.holding(3600):  # would hang the test if it waited for a read that is not there
            done.set()

    holder = threading.Thread(target=hold)
    holder.start()
    holder.join(60)
    assert done.is_set()
