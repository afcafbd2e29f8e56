"""Benchmark the tracing processors' hot path and the event-loop lag they add.

    uv run python scripts/bench_processor.py [--calls 20000] [--seconds 10] [--rate 2000]

Part 1 — per-call cost, measured in one run, interleaved in blocks so drift and noise hit
every candidate alike (``perf_counter_ns`` around each call, after a warm-up):

- ``asyncio.Queue.put_nowait(span)``: the in-memory floor;
- agentex's ``AsyncSpanQueue.enqueue`` when the installed agentex has it
  (``agentex.lib.core.tracing.span_queue``); agentex-client ships without ``agentex.lib``,
  so otherwise a replica of its hot path (a dataclass item, the drain-task check,
  ``put_nowait``) stands in, and is labelled so;
- ``await SpoolTracingProcessor.on_span_end(span)`` (map + validate + encode + queue);
- ``SyncSpoolTracingProcessor.on_span_end(span)``.

Part 2 — event-loop lag: a 1 ms ticker measures how late it wakes (p50/p99/max) while a
producer emits ``--rate`` agentex spans/s (start + end event each) for ``--seconds``,
(a) into a plain ``asyncio.Queue`` (baseline) and (b) through ``SpoolTracingProcessor``
with the drainer delivering to a receiver in a separate process. The difference of the
p99s is the lag the spool adds.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from agentex.types.span import Span

from spool import SGPSink, Sink, SpoolConfig
from spool._processors import SpoolTracingProcessor, SyncSpoolTracingProcessor


def make_span(i: int = 0, trace_id: str | None = None) -> Span:
    """An agentex span of ~1 KB once encoded, like an LLM call."""
    now = datetime.now(UTC)
    return Span(
        id=str(uuid.uuid4()),
        name="llm call",
        trace_id=trace_id or str(uuid.uuid4()),
        parent_id=str(uuid.uuid4()),
        start_time=now,
        end_time=now,
        input={
            "messages": [
                {"role": "system", "content": "You are helpful. " * 8},
                {"role": "user", "content": f"question {i}: " + "x" * 200},
            ],
            "model": "gpt-4o",
            "temperature": 0.2,
        },
        output={"text": "y" * 300, "finish_reason": "stop"},
        data={"__span_type__": "COMPLETION", "model": "gpt-4o", "prompt_tokens": 123, "completion_tokens": 45},
    )


# -- agentex's AsyncSpanQueue.enqueue, or a replica of its hot path ------------------------------------------------


def agentex_enqueue() -> tuple[str, Callable[[Any], None]]:
    try:
        from agentex.lib.core.tracing.span_queue import AsyncSpanQueue, SpanEventType  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        queue = AsyncSpanQueue()
        return "agentex AsyncSpanQueue.enqueue", lambda span: queue.enqueue(SpanEventType.END, span, [])

    class SpanEventType(str, Enum):  # noqa: UP042 - as agentex defines it
        START = "start"
        END = "end"

    @dataclasses.dataclass
    class _SpanQueueItem:
        event_type: SpanEventType
        span: Any
        processors: list[Any]
        enqueued_at: float | None = None

    class ReplicaQueue:
        """agentex.lib.core.tracing.span_queue.AsyncSpanQueue.enqueue, metrics hooks left out."""

        def __init__(self) -> None:
            self._queue: asyncio.Queue[_SpanQueueItem] = asyncio.Queue()
            self._drain_task: asyncio.Task[None] | None = None
            self._stopping = False

        def enqueue(self, event_type: SpanEventType, span: Any, processors: list[Any]) -> None:
            if self._stopping:
                return
            self._ensure_drain_running()
            self._queue.put_nowait(_SpanQueueItem(event_type=event_type, span=span, processors=processors))

        def _ensure_drain_running(self) -> None:
            if self._drain_task is None or self._drain_task.done():
                self._drain_task = asyncio.get_running_loop().create_task(self._drain())

        async def _drain(self) -> None:
            while True:
                await self._queue.get()

    queue = ReplicaQueue()
    return "AsyncSpanQueue.enqueue (replica)", lambda span: queue.enqueue(SpanEventType.END, span, [])


# -- part 1 -----------------------------------------------------------------------------------------------------------


def pct(sorted_ns: list[int], p: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * p))] / 1000


async def hot_path(calls: int, tmp: Path) -> None:
    spans = [make_span(i) for i in range(1000)]
    # Sinks that take every batch: the drainer runs, but the network is not what is measured here.
    async_proc = SpoolTracingProcessor(tmp / "hot-async.db", sink=NullSink(), config=SpoolConfig())
    sync_proc = SyncSpoolTracingProcessor(tmp / "hot-sync.db", sink=NullSink(), config=SpoolConfig())
    queue: asyncio.Queue[Any] = asyncio.Queue()
    enqueue_label, enqueue = agentex_enqueue()

    async def q_put(span: Any) -> None:
        queue.put_nowait(span)

    async def agx(span: Any) -> None:
        enqueue(span)

    async def sync_end(span: Any) -> None:
        sync_proc.on_span_end(span)

    candidates: dict[str, Callable[[Any], Awaitable[None]]] = {
        "asyncio.Queue.put_nowait": q_put,
        enqueue_label: agx,
        "SpoolTracingProcessor.on_span_end": async_proc.on_span_end,
        "SyncSpoolTracingProcessor.on_span_end": sync_end,
    }
    # put_nowait and enqueue are measured inside a trivial coroutine too, so each row pays
    # the same `await` the processor's row pays; the bare put_nowait is measured as well.
    bare: list[int] = []
    samples: dict[str, list[int]] = {name: [] for name in candidates}
    pc = time.perf_counter_ns
    block = 500
    warmup = 2000
    for fn in candidates.values():  # warm-up
        for i in range(warmup // 10):
            await fn(spans[i % 1000])
    done = 0
    while done < calls:
        for name, fn in candidates.items():
            out = samples[name]
            for i in range(done, done + block):
                s = spans[i % 1000]
                t = pc()
                await fn(s)
                out.append(pc() - t)
        for i in range(done, done + block):
            s = spans[i % 1000]
            t = pc()
            queue.put_nowait(s)
            bare.append(pc() - t)
        done += block
        while not queue.empty():
            queue.get_nowait()
        await asyncio.sleep(0)  # let the writers commit between blocks
    await async_proc.shutdown()
    sync_proc.shutdown()
    assert async_proc.dropped == 0 and sync_proc.dropped == 0

    print(f"\n== per call, {calls} calls each after warm-up (µs) ==")
    rows = {"asyncio.Queue.put_nowait (bare, no await)": bare, **samples}
    p50 = {}
    for name, ns in rows.items():
        ns.sort()
        p50[name] = pct(ns, 0.5)
        print(f"{name:45s} p50 {pct(ns, 0.5):7.2f}  p99 {pct(ns, 0.99):7.2f}  mean {statistics.fmean(ns) / 1000:7.2f}")
    base = p50["asyncio.Queue.put_nowait (bare, no await)"]
    agentex_p50 = p50[enqueue_label]
    for name in ("SpoolTracingProcessor.on_span_end", "SyncSpoolTracingProcessor.on_span_end"):
        print(
            f"{name}: {p50[name] / base:5.1f}x bare put_nowait, "
            f"{p50[name] / p50['asyncio.Queue.put_nowait']:5.1f}x awaited put_nowait, "
            f"{p50[name] / agentex_p50:5.1f}x {enqueue_label} (target <= 5x)"
        )


# -- part 2 -----------------------------------------------------------------------------------------------------------


async def lag_run(seconds: float, rate: int, on_start: Any, on_end: Any) -> list[float]:
    """Produce `rate` spans/s for `seconds`; return the 1 ms ticker's lateness samples (ms)."""
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        interval = 0.001
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(interval)
            lags.append((loop.time() - t - interval) * 1000)

    async def producer() -> None:
        trace = str(uuid.uuid4())
        tick = 0.005  # 200 wake-ups/s, rate/200 spans each
        per_tick = max(1, round(rate * tick))
        start = loop.time()
        n = 0
        while loop.time() - start < seconds:
            for _ in range(per_tick):
                s = make_span(n, trace)
                await on_start(s)
                await on_end(s)
                n += 1
            next_at = start + (n / per_tick) * tick
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        stop.set()

    t = asyncio.create_task(ticker())
    await producer()
    await t
    return lags


def start_receiver() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "spool", "receiver", "--keys-only"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"receiver did not start: {line!r}")
    return proc, line.removeprefix("listening on ")


def receiver_stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url + "/_stats", timeout=5) as resp:
        stats: dict[str, int] = json.loads(resp.read())
        return stats


async def loop_lag(seconds: float, rate: int, tmp: Path) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def q_put(span: Any) -> None:
        queue.put_nowait(span)

    async def drain_queue() -> None:
        while True:
            await queue.get()

    drainer = asyncio.create_task(drain_queue())
    baseline = await lag_run(seconds, rate, q_put, q_put)
    drainer.cancel()

    rx, url = start_receiver()
    try:
        sink = SGPSink(api_key="bench", account_id="bench", base_url=url)
        proc = SpoolTracingProcessor(tmp / "lag.db", sink=sink, config=SpoolConfig())
        # Warm-up outside the window: the sink's first send imports the SDK and connects.
        for i in range(100):
            await proc.on_span_end(make_span(i))
        await proc.flush(30)
        with_spool = await lag_run(seconds, rate, proc.on_span_start, proc.on_span_end)
        t0 = time.monotonic()
        ok = await proc.flush(60)
        flush_s = time.monotonic() - t0
        await proc.shutdown()
        got = receiver_stats(url)
    finally:
        rx.terminate()
        rx.wait(10)

    print(f"\n== event-loop lag, 1 ms ticker, {rate} spans/s (start+end) for {seconds:g} s (ms) ==")
    for name, lags in (("baseline asyncio.Queue", baseline), ("SpoolTracingProcessor + drainer", with_spool)):
        lags.sort()
        print(
            f"{name:35s} p50 {statistics.median(lags):6.3f}  p99 {lags[int(len(lags) * 0.99)]:6.3f}  "
            f"max {lags[-1]:6.3f}  ({len(lags)} ticks)"
        )
    added = with_spool[int(len(with_spool) * 0.99)] - baseline[int(len(baseline) * 0.99)]
    print(f"p99 lag added by the spool: {added:.3f} ms (target <= 1 ms)")
    print(
        f"delivered: receiver holds {got['spans']} spans ({got['ended']} ended) in {got['requests']} requests; "
        f"final flush {'ok' if ok else 'NOT EMPTY'} after {flush_s:.2f} s; dropped {proc.dropped}"
    )


class NullSink(Sink):
    def send_blocking(self, bodies: Sequence[bytes], *, timeout: float) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(hot_path(args.calls, Path(d)))
        asyncio.run(loop_lag(args.seconds, args.rate, Path(d)))


if __name__ == "__main__":
    main()
