"""The loop-in-a-thread the sync processor and the receiver share."""

from __future__ import annotations

import asyncio
import threading

import pytest

from spool._loopthread import LoopThread


def test_call_runs_on_the_loop_thread_and_returns_or_raises_what_the_coroutine_does() -> None:
    runner = LoopThread("t-loop").start()
    try:

        async def where() -> str:
            return threading.current_thread().name

        async def boom() -> None:
            raise ValueError("boom")

        assert runner.call(where(), 10) == "t-loop" and not runner.on_thread()
        with pytest.raises(ValueError, match="boom"):
            runner.call(boom(), 10)
    finally:
        runner.stop()
    assert not runner.is_alive() and runner.loop.is_closed()


def test_stop_cancels_and_awaits_what_is_left_on_the_loop_and_is_idempotent() -> None:
    runner = LoopThread("t-loop").start()
    started, cleaned = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    runner.submit(forever())
    assert started.wait(10)
    runner.stop()
    runner.stop()
    assert cleaned.is_set() and not runner.is_alive()


def test_a_call_past_its_timeout_is_cancelled() -> None:
    runner = LoopThread("t-loop").start()
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    try:
        with pytest.raises(TimeoutError):
            runner.call(slow(), 0.05)
        assert cancelled.wait(10)
    finally:
        runner.stop()
