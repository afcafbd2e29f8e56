"""span-spool against its peers, side by side, in one run on this machine.

    uv run python scripts/bench.py [--quick] [--json OUT] [--plot PNG] [--only hot,append,...]

Every figure that has a peer is a ratio against that peer measured in the same run (interleaved in rounds where
possible, medians of the rounds), because the machine is shared and noisy. Payload: ~1 KB agent-like spans (an LLM
call with messages, output and metadata), built before timing and frozen out of the cyclic GC (`freeze_inputs`).
Sections (`--only` takes their names):

- `hot`: per-call latency (p50/p99/p99.9) of `Spool.put` and `SpoolTracingProcessor.on_span_end` against
  `asyncio.Queue.put_nowait`, the SDK's `TraceQueueManager.enqueue` (worker off: it never sends) and agentex's
  `AsyncSpanQueue.enqueue` (or the replica in scripts/bench_processor.py), on the same span objects. The spools'
  drainers run against a sink that takes every batch, so the network is not what is measured.
- `append`: committed puts/s (put N, then `await commit()`) against raw `sqlite3` `executemany` of the same bytes in
  one transaction, same schema and pragmas.
- `delivery`: spans/s and client CPU per span (`time.process_time`, the receiver runs in its own process) through
  the drainer + `SGPSink` against the SDK's `AsyncSGPClient.spans.upsert_batch` (`max_retries=0`), batches of 50,
  two in flight on both sides.
- `e2e`: put -> delivered -> deleted, as fast as the producer can go and paced at 20k spans/s; backlog over time.
- `replay`: a backlog drained through a receiver that adds 150 ms per request, at several batch sizes and batches in
  flight, against the bound `in_flight * batch_size / latency`.
- `lag`: p99 lateness of a 1 ms ticker while an app emits 2,000 spans/s (start + end) through the async processor with
  the drainer delivering, against an `asyncio.Queue` (idle baseline) and the SDK's `upsert_batch` per batch of 50.
- `memory`: RSS and file size with a 1M-span backlog built while the backend is down (`--quick`: 100k), and after
  draining it: scripts/backlog_rss.py, in its own process.
- `agents`: 10,000 spans with the same 50 KB system prompt (an equal but distinct `str` per span; and, `-shared`, one
  prompt object for all) and a 1 KB message each, produced at ~5,000 spans/s while the backend takes 5 ms per request,
  and a growing-context chatbot (50 conversations x 40 turns, a 50 KB prompt + 2 KB per message, all different);
  peak RSS, backlog, drain time, disk bytes per span, against an in-memory queue holding the same spans.
- `otel`: `SpoolSpanProcessor.on_end` against `BatchSpanProcessor.on_end`, client CPU per span of `OTLPSink` against
  the official OTLP/HTTP exporter, and SDK -> delivered -> deleted spans/s (scripts/bench_otel.py says how).
- `serve`: `spool serve` as its own process: durable ingest of OTLP requests against in-process put+commit, the
  acknowledgement latency at 5k spans/s while delivering, its RSS, and the official exporter straight to the collector
  (scripts/bench_serve.py says how).

Subprocess scenarios print one JSON line; `--child NAME ARGS_JSON` runs one (internal).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spool import SGPSink, Sink, Spool, SpoolConfig
from spool._items import encode_item
from spool._store import Store
from spool.redact import scrub

MiB = 1024 * 1024
GiB = 1024 * MiB
SECTIONS = ("hot", "append", "delivery", "e2e", "replay", "lag", "memory", "agents", "otel", "serve")


# -- payloads --------------------------------------------------------------------------------------------------------

_SYSTEM = "You are a careful travel agent. Use the tools when you need facts; answer briefly. " * 2
_USER = "Find me a train from Paris to Lyon tomorrow morning, window seat, and check the weather there. "


def agent_item(i: int) -> dict[str, Any]:
    """A ~1 KB SGP span item (an LLM call of an agent), all values distinct per `i` where they would be."""
    item: dict[str, Any] = {
        "trace_id": f"trace-{i // 20:012d}",
        "id": f"span-{i:016d}",
        "name": "llm.chat_completion",
        "type": "COMPLETION",
        "status": "SUCCESS",
        "start_timestamp": "2026-11-28T10:00:00.123456+00:00",
        "end_timestamp": "2026-11-28T10:00:01.654321+00:00",
        "input": {
            "model": "gpt-4o",
            "temperature": 0.2,
            "messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": f"{_USER}#{i}"}],
        },
        "output": {
            "role": "assistant",
            "content": "There is a TGV at 07:56 arriving 09:52, window seat 47 in car 12; Lyon: 14°C, light rain.",
            "finish_reason": "stop",
        },
        "metadata": {
            "__source__": "agentex",
            "agent_name": "travel-agent",
            "prompt_tokens": 312 + i % 7,
            "completion_tokens": 88,
            "latency_ms": 1530.2,
        },
    }
    if i % 20:  # 20 spans per trace, the first one the root
        item["parent_id"] = f"span-{(i // 20) * 20:016d}"
    return item


def freeze_inputs() -> None:
    """Call once a section's inputs are built: move them out of the cyclic GC's sight (`gc.freeze`). An application's
    spans die once put; a section's 100,000 pre-built spans live all section long, and every full collection
    (whoever's allocation triggers it, ours or a peer's) would walk them. Measured in one 100k e2e run: 0.27 s of
    generation-2 collections, 0.02 s with the inputs frozen. Refcounting still frees them when the section ends."""
    gc.freeze()


def item_bytes() -> int:
    return len(orjson.dumps(agent_item(1)))


# -- small helpers ---------------------------------------------------------------------------------------------------


def pct(sorted_values: Sequence[float], p: float) -> float:
    """The `p` quantile (0..1) of an already sorted sequence (nearest rank)."""
    if not sorted_values:
        return float("nan")
    return float(sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))])


def med(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def proc_status() -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) of this process in bytes (Linux)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


def rss() -> int:
    return proc_status().get("VmRSS", 0)


def file_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += (path.parent / (path.name + suffix)).stat().st_size
    return total


def delivered(spool: Spool) -> int:
    """Spans this spool's drainer delivered since open (counters only: no read of the file)."""
    return int(spool.metrics(gauges=False)["delivered"] or 0)


def fill(path: Path, items: Sequence[dict[str, Any]], config: SpoolConfig | None = None) -> None:
    """Write `items` as a committed backlog (straight through the store: the fast way to build one)."""
    store = Store(path, config or SpoolConfig(max_bytes=64 * 1024**3))
    try:
        for start in range(0, len(items), 20_000):
            store.append([encode_item(it, MiB) for it in items[start : start + 20_000]])
    finally:
        store.close()


def unlink_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            (path.parent / (path.name + suffix)).unlink()


class NullSink(Sink):
    """Takes every batch at once (hot-path sections: the network is measured elsewhere)."""

    def send_blocking(self, bodies: Sequence[bytes], *, timeout: float) -> None:
        return None


class ReceiverProcess:
    """`spool receiver --keys-only` in its own process, so its CPU never counts as the client's."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spool", "receiver", "--port", "0", "--keys-only"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"receiver did not start: {line!r}")
        self.url = line.removeprefix("listening on ")

    def _call(self, method: str, path: str, doc: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if doc is None else json.dumps(doc).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def cpu(self) -> float:
        """CPU seconds (user + system) the receiver process has used so far (Linux)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def control(self, **settings: Any) -> dict[str, Any]:
        return self._call("POST", "/_control", settings)

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_stats")

    def reset(self) -> None:
        self.control(reset=True, latency=0)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ReceiverProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sink_for(url: str) -> SGPSink:
    sink = SGPSink(api_key="bench", account_id="bench", base_url=url)
    sink._configured.join()  # the SDK import (about a second) is not what is measured
    return sink


def run_child(name: str, args: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    """Run `--child name` in a fresh interpreter; its last stdout line is the JSON result."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {name} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- 1. hot path -----------------------------------------------------------------------------------------------------


async def bench_hot(n: int, rounds: int, tmp: Path) -> dict[str, Any]:
    from bench_processor import agentex_enqueue, make_span
    from scale_gp_beta.lib.tracing.trace_queue_manager import TraceQueueManager

    from spool._processors import SpoolTracingProcessor

    tasks_before = asyncio.all_tasks()
    items = [agent_item(i) for i in range(n)]
    spans = [make_span(i) for i in range(n)]  # agentex Span objects (pydantic), ~1 KB once mapped
    freeze_inputs()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    tqm = TraceQueueManager(client=None, max_queue_size=0, worker_enabled=False)  # unbounded, never sends
    spool = Spool(tmp / "hot.db", sink=NullSink(), config=SpoolConfig())
    scrubbed = Spool(tmp / "hot-scrub.db", sink=NullSink(), config=SpoolConfig(), redact=scrub())
    proc = SpoolTracingProcessor(tmp / "hot-proc.db", sink=NullSink(), config=SpoolConfig())
    agx_label, agx_enqueue = agentex_enqueue()

    def drain_queues() -> None:
        while not queue.empty():
            queue.get_nowait()
        while not tqm._queue.empty():
            tqm._queue.get_nowait()

    sync_calls: dict[str, tuple[Callable[[Any], Any], Sequence[Any]]] = {
        "asyncio.Queue.put_nowait": (queue.put_nowait, items),
        "SDK TraceQueueManager.enqueue": (tqm.enqueue, items),
        agx_label: (agx_enqueue, spans),
        "Spool.put": (spool.put, items),
        "Spool.put, redact=scrub()": (scrubbed.put, items),
    }
    pc = time.perf_counter_ns
    block = 100

    async def measure(name: str) -> list[int]:
        out: list[int] = []
        if name == "SpoolTracingProcessor.on_span_end":
            on_end = proc.on_span_end
            for start in range(0, n, block):
                for s in spans[start : start + block]:
                    t = pc()
                    await on_end(s)
                    out.append(pc() - t)
                await asyncio.sleep(0)  # the app yields now and then: the writer commits, the drainer deletes
        else:
            fn, objs = sync_calls[name]
            for start in range(0, n, block):
                for s in objs[start : start + block]:
                    t = pc()
                    fn(s)
                    out.append(pc() - t)
                drain_queues()
                await asyncio.sleep(0)
        return out

    names = [*sync_calls, "SpoolTracingProcessor.on_span_end"]
    try:
        for name in names:  # warm-up
            await measure(name)
        await spool.commit()
        timer = []
        for _ in range(20_000):
            t = pc()
            timer.append(pc() - t)
        timer.sort()
        per_round: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        pooled: dict[str, list[int]] = {name: [] for name in names}
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]  # rotate: no method always goes first
            for name in order:
                ns = await measure(name)
                pooled[name].extend(ns)
                ns.sort()
                per_round[name].append(
                    {"p50": pct(ns, 0.5) / 1e3, "p99": pct(ns, 0.99) / 1e3, "p999": pct(ns, 0.999) / 1e3}
                )
            await spool.commit()
        dropped = proc.dropped
    finally:
        await spool.aclose(timeout=0)
        await scrubbed.aclose(timeout=0)
        await proc.shutdown(timeout=0)
        for task in asyncio.all_tasks() - tasks_before:  # the agentex queue's drain task
            if task is not asyncio.current_task():
                task.cancel()
    methods = {
        name: {
            "p50_us": med([x["p50"] for x in rows]),
            "p99_us": med([x["p99"] for x in rows]),
            "p999_us": med([x["p999"] for x in rows]),
        }
        for name, rows in per_round.items()
    }

    def ratio(a: str, b: str, key: str = "p50") -> float:
        return med([x[key] / y[key] for x, y in zip(per_round[a], per_round[b], strict=True)])

    q = "asyncio.Queue.put_nowait"
    return {
        "spans": n,
        "rounds": rounds,
        "item_bytes": item_bytes(),
        "timer_overhead_us": pct(timer, 0.5) / 1e3,
        "processor_dropped": dropped,
        "methods": methods,
        "ratios": {
            "put_p50_vs_put_nowait": ratio("Spool.put", q),
            "put_p99_vs_put_nowait": ratio("Spool.put", q, "p99"),
            "put_p50_vs_tqm_enqueue": ratio("Spool.put", "SDK TraceQueueManager.enqueue"),
            "put_scrub_p50_vs_put": ratio("Spool.put, redact=scrub()", "Spool.put"),
            "on_span_end_p50_vs_put_nowait": ratio("SpoolTracingProcessor.on_span_end", q),
            "on_span_end_p50_vs_agentex_enqueue": ratio("SpoolTracingProcessor.on_span_end", agx_label),
        },
        "agentex_label": agx_label,
        # the sorted pooled samples, thinned, for the plot
        "cdf_us": {name: [v / 1e3 for v in sorted(ns)[:: max(1, len(ns) // 2000)]] for name, ns in pooled.items()},
    }


# -- 2. append ceiling -----------------------------------------------------------------------------------------------


_RAW_INSERT = "INSERT INTO spans (trace_id, span_id, is_end, body, enqueued_at) VALUES (?, ?, ?, ?, ?)"


async def bench_append(n: int, batch: int, rounds: int, tmp: Path) -> dict[str, Any]:
    """`n` rows per round in batches of `batch` (one transaction each, within the spool's WAL-sized commit chunk):
    `put` x batch then `await commit()`, against `executemany` of the same encoded bytes, same schema and pragmas.
    The two sides take turns batch by batch (who goes first alternates), so a change in the machine's speed
    mid-round hits both: the ratio is of their summed times in a round."""
    items = [agent_item(i) for i in range(n)]
    encoded = [encode_item(it, MiB) for it in items]
    freeze_inputs()
    cfg = SpoolConfig()
    spool_rates, raw_rates, ratios, put_us, commit_us = [], [], [], [], []
    for r in range(rounds):
        spool_path, raw_path = tmp / f"append-spool-{r}.db", tmp / f"append-raw-{r}.db"
        # Raw sqlite3: the same bytes, already encoded, one executemany per batch in one transaction.
        store = Store(raw_path, cfg)  # the same schema, and its persistent pragmas (WAL, auto_vacuum)
        keys = ("wal_autocheckpoint", "journal_size_limit")
        pragmas = {k: store._db.execute(f"PRAGMA {k}").fetchone()[0] for k in keys}
        store.close()
        db = sqlite3.connect(raw_path, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {cfg.synchronous}")
        for key, value in pragmas.items():
            db.execute(f"PRAGMA {key} = {value}")
        now = time.time()
        rows = [(e.trace_id, e.span_id, e.is_end, e.body, now) for e in encoded]
        t_put = t_commit = t_raw = 0.0
        async with Spool(spool_path, config=cfg) as sp:
            await sp.commit()
            for k, start in enumerate(range(0, n, batch)):
                for side in ("spool", "raw") if k % 2 == 0 else ("raw", "spool"):
                    t0 = time.perf_counter()
                    if side == "raw":
                        db.execute("BEGIN IMMEDIATE")
                        db.executemany(_RAW_INSERT, rows[start : start + batch])
                        db.execute("COMMIT")
                        t_raw += time.perf_counter() - t0
                        continue
                    for it in items[start : start + batch]:  # ours: validate + encode in put, group commit
                        sp.put(it)
                    t1 = time.perf_counter()
                    await sp.commit()
                    t_put += t1 - t0
                    t_commit += time.perf_counter() - t1
        db.close()
        unlink_db(spool_path)
        unlink_db(raw_path)
        spool_rate, raw_rate = n / (t_put + t_commit), n / t_raw
        put_us.append(t_put / n * 1e6)
        commit_us.append(t_commit / n * 1e6)
        spool_rates.append(spool_rate)
        raw_rates.append(raw_rate)
        ratios.append(spool_rate / raw_rate)
    return {
        "rows_per_round": n,
        "rows_per_transaction": batch,
        "rounds": rounds,
        "spool_puts_per_s": med(spool_rates),
        "raw_executemany_rows_per_s": med(raw_rates),
        "ratio": med(ratios),
        "ratio_min_max": [min(ratios), max(ratios)],
        "spool_put_us_per_row": med(put_us),
        "spool_commit_us_per_row": med(commit_us),
    }


# -- 3. delivery -----------------------------------------------------------------------------------------------------


async def bench_delivery(n: int, rounds: int, tmp: Path, rx: ReceiverProcess) -> dict[str, Any]:
    from scale_gp_beta import AsyncSGPClient

    items = [agent_item(i) for i in range(n)]
    backlog = tmp / "delivery-backlog.db"
    fill(backlog, items, SpoolConfig())
    sink = sink_for(rx.url)
    sdk = AsyncSGPClient(api_key="bench", account_id="bench", base_url=rx.url, max_retries=0)
    batch, inflight = 50, 2
    batches = [items[i : i + batch] for i in range(0, n, batch)]
    freeze_inputs()
    await sdk.spans.upsert_batch(items=batches[0])  # warm-up: connection, lazy imports
    ours: dict[str, list[float]] = {"rate": [], "cpu": []}
    theirs: dict[str, list[float]] = {"rate": [], "cpu": []}
    try:
        for r in range(rounds):
            path = tmp / f"delivery-{r}.db"
            shutil.copyfile(backlog, path)
            rx.reset()
            spool = Spool(path, sink=sink, config=SpoolConfig(batch_size=batch, max_inflight=inflight))
            try:
                c0, t0 = time.process_time(), time.perf_counter()
                ok = await spool.flush(timeout=300)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            finally:
                await spool.aclose(timeout=0)
            unlink_db(path)
            if not ok or rx.stats()["spans"] < n:
                raise RuntimeError(f"delivery round {r}: spool did not deliver everything ({rx.stats()})")
            ours["rate"].append(n / wall)
            ours["cpu"].append(cpu / n * 1e6)

            rx.reset()

            async def worker(todo: Iterator[list[dict[str, Any]]]) -> None:
                for b in todo:
                    await sdk.spans.upsert_batch(items=b)

            todo = iter(batches)
            c0, t0 = time.process_time(), time.perf_counter()
            async with asyncio.TaskGroup() as tg:
                for _ in range(inflight):
                    tg.create_task(worker(todo))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            theirs["rate"].append(n / wall)
            theirs["cpu"].append(cpu / n * 1e6)
    finally:
        await sdk.close()
        sink.close()
    return {
        "spans_per_round": n,
        "rounds": rounds,
        "batch_size": batch,
        "in_flight": inflight,
        "spool": {"spans_per_s": med(ours["rate"]), "cpu_us_per_span": med(ours["cpu"])},
        "sdk_upsert_batch": {"spans_per_s": med(theirs["rate"]), "cpu_us_per_span": med(theirs["cpu"])},
        "cpu_ratio": med([b / a for a, b in zip(ours["cpu"], theirs["cpu"], strict=True)]),
        "throughput_ratio": med([a / b for a, b in zip(ours["rate"], theirs["rate"], strict=True)]),
    }


# -- 4. end to end ---------------------------------------------------------------------------------------------------


async def e2e_run(
    path: Path,
    rx: ReceiverProcess,
    items: Sequence[dict[str, Any]],
    rate: float | None,
    config: SpoolConfig | None = None,
) -> dict[str, Any]:
    """Put `items` (as fast as possible, or paced at `rate`/s in 5 ms ticks), then flush; backlog sampled each 50 ms.
    Default configuration unless `config`."""
    loop = asyncio.get_running_loop()
    sink = sink_for(rx.url)
    spool = Spool(path, sink=sink, config=config or SpoolConfig())
    put = 0
    series: list[tuple[float, int]] = []
    done = asyncio.Event()

    async def sampler(t0: float) -> None:
        while not done.is_set():
            series.append((round(loop.time() - t0, 3), put - delivered(spool)))
            await asyncio.sleep(0.05)

    try:
        await spool.commit()
        cpu0, rx_cpu0 = time.process_time(), rx.cpu()
        t0 = loop.time()
        task = asyncio.create_task(sampler(t0))
        if rate is None:
            for start in range(0, len(items), 200):
                for it in items[start : start + 200]:
                    spool.put(it)
                put += min(200, len(items) - start)
                await asyncio.sleep(0)
        else:
            per_tick = max(1, round(rate * 0.005))
            for start in range(0, len(items), per_tick):
                for it in items[start : start + per_tick]:
                    spool.put(it)
                put += min(per_tick, len(items) - start)
                await asyncio.sleep(max(0.0, t0 + put / rate - loop.time()))
        t_produced = loop.time() - t0
        ok = await spool.flush(timeout=300)
        t_done = loop.time() - t0
        cpu, rx_cpu = time.process_time() - cpu0, rx.cpu() - rx_cpu0
        done.set()
        await task
        series.append((round(t_done, 3), put - delivered(spool)))
        st = await spool.stats()
    finally:
        await spool.aclose(timeout=0)
    backlog = [b for _, b in series]
    return {
        "spans": len(items),
        "ok": ok and st.pending == 0,
        "produce_s": t_produced,
        "total_s": t_done,
        "spans_per_s": len(items) / t_done,
        "client_cpu_us_per_span": cpu / len(items) * 1e6,
        "receiver_cpu_us_per_span": rx_cpu / len(items) * 1e6,
        "peak_backlog": max(backlog),
        "median_backlog": med(backlog),
        "backlog_series": series[:: max(1, len(series) // 60)],
    }


async def bench_e2e(n: int, tmp: Path, rx: ReceiverProcess) -> dict[str, Any]:
    items = [agent_item(i) for i in range(n)]
    freeze_inputs()
    rx.reset()
    fast = await e2e_run(tmp / "e2e-max.db", rx, items, None)
    rx.reset()
    paced = await e2e_run(tmp / "e2e-paced.db", rx, items, 20_000)
    rx.reset()
    wider = await e2e_run(tmp / "e2e-inflight4.db", rx, items, None, SpoolConfig(max_inflight=4))
    return {"max_rate": fast, "paced_20k": paced, "max_rate_inflight4": wider}


# -- 5. replay -------------------------------------------------------------------------------------------------------


async def bench_replay(
    n: int, settings: list[tuple[int, int, float]], tmp: Path, rx: ReceiverProcess
) -> dict[str, Any]:
    """`settings`: (batch_size, max_inflight, time window s); each run drains a copy of one `n`-span backlog."""
    latency = 0.15
    items = [agent_item(i) for i in range(n)]
    freeze_inputs()
    backlog = tmp / "replay-backlog.db"
    fill(backlog, items)
    sink = sink_for(rx.url)
    runs = []
    try:
        for batch, inflight, window in settings:
            path = tmp / f"replay-{batch}-{inflight}.db"
            shutil.copyfile(backlog, path)
            rx.reset()
            rx.control(latency=latency)
            spool = Spool(path, sink=sink, config=SpoolConfig(max_inflight=inflight, max_bytes=64 * 1024**3))
            try:
                await spool.commit()
                c0, t0, rx0 = time.process_time(), time.perf_counter(), rx.cpu()
                ok = await spool.flush(timeout=window, batch_size=batch)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                rx_cpu = rx.cpu() - rx0
                sent = delivered(spool)
            finally:
                await spool.aclose(timeout=0)
            unlink_db(path)
            bound = inflight * batch / latency
            rate = sent / wall
            runs.append(
                {
                    "batch_size": batch,
                    "max_inflight": inflight,
                    "delivered": sent,
                    "drained": ok,
                    "seconds": wall,
                    "spans_per_s": rate,
                    "bound_spans_per_s": bound,
                    "of_bound": rate / bound,
                    "cpu_us_per_span": cpu / max(1, sent) * 1e6,
                    "receiver_cpu_us_per_span": rx_cpu / max(1, sent) * 1e6,
                }
            )
    finally:
        rx.reset()
        sink.close()
    return {"backlog": n, "latency_s": latency, "runs": runs}


# -- 6. event-loop lag -----------------------------------------------------------------------------------------------


async def bench_lag(seconds: float, rounds: int, rate: int, tmp: Path, rx: ReceiverProcess) -> dict[str, Any]:
    from bench_processor import lag_run
    from scale_gp_beta import AsyncSGPClient

    from spool._mapping import span_to_item
    from spool._processors import SpoolTracingProcessor

    sink = sink_for(rx.url)
    proc = SpoolTracingProcessor(tmp / "lag.db", sink=sink, config=SpoolConfig())
    sdk = AsyncSGPClient(api_key="bench", account_id="bench", base_url=rx.url, max_retries=0)
    p99: dict[str, list[float]] = {"idle": [], "spool": [], "sdk": []}
    p50: dict[str, list[float]] = {"idle": [], "spool": [], "sdk": []}

    async def idle() -> list[float]:
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def consume() -> None:
            while True:
                await queue.get()

        async def q_put(span: Any) -> None:
            queue.put_nowait(span)

        task = asyncio.create_task(consume())
        try:
            return await lag_run(seconds, rate, q_put, q_put)
        finally:
            task.cancel()

    async def through_spool() -> list[float]:
        lags = await lag_run(seconds, rate, proc.on_span_start, proc.on_span_end)
        await proc.flush(60)
        return lags

    async def through_sdk() -> list[float]:
        # Same mapping as the processor; the SDK sends each batch of 50 from a task on the same loop.
        pending: list[dict[str, Any]] = []
        batches: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue()

        async def sender() -> None:
            while (b := await batches.get()) is not None:
                await sdk.spans.upsert_batch(items=b)  # type: ignore[arg-type]

        async def add(span: Any, end: bool) -> None:
            pending.append(span_to_item(span, end=end))
            if len(pending) >= 50:
                batches.put_nowait(pending[:])
                pending.clear()

        async def on_start(span: Any) -> None:
            await add(span, False)

        async def on_end(span: Any) -> None:
            await add(span, True)

        task = asyncio.create_task(sender())
        lags = await lag_run(seconds, rate, on_start, on_end)
        batches.put_nowait(None)
        await task
        return lags

    modes = {"idle": idle, "spool": through_spool, "sdk": through_sdk}
    try:
        await sdk.spans.upsert_batch(items=[agent_item(0)])  # type: ignore[list-item]
        await lag_run(min(1.0, seconds), rate, proc.on_span_start, proc.on_span_end)  # warm-up
        await proc.flush(60)
        for r in range(rounds):
            order = list(modes)[r % 3 :] + list(modes)[: r % 3]
            for name in order:
                lags = sorted(await modes[name]())
                p99[name].append(pct(lags, 0.99))
                p50[name].append(pct(lags, 0.5))
        dropped = proc.dropped
    finally:
        await proc.shutdown(timeout=30)
        await sdk.close()
    return {
        "seconds": seconds,
        "rounds": rounds,
        "spans_per_s": rate,
        "events_per_s": 2 * rate,
        "p50_ms": {k: med(v) for k, v in p50.items()},
        "p99_ms": {k: med(v) for k, v in p99.items()},
        "spool_added_p99_ms": med([s - i for s, i in zip(p99["spool"], p99["idle"], strict=True)]),
        "sdk_added_p99_ms": med([s - i for s, i in zip(p99["sdk"], p99["idle"], strict=True)]),
        "processor_dropped": dropped,
    }


# -- 7. memory and disk (scripts/backlog_rss.py, in its own process) ------------------------------------------------


def bench_memory(n: int, tmp: Path) -> dict[str, Any]:
    """scripts/backlog_rss.py: build an `n`-span backlog while the backend is down, then drain it (RSS, bytes)."""
    script = Path(__file__).resolve().parent / "backlog_rss.py"
    out = subprocess.run(
        [sys.executable, str(script), "--spans", str(n), "--json", "--dir", str(tmp)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"backlog_rss.py failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- 8. loads that hurt agent fleets (subprocesses) ------------------------------------------------------------------

_PROMPT = ("You are the operations agent for ACME. Follow the runbook exactly; cite the section you used. " * 560)[
    : 50 * 1024
]
_MESSAGE = ("The customer says the order never arrived and asks for a refund or a reship, whichever is faster. " * 21)[
    : 2 * 1024
]


def load_spans(kind: str, scale: float) -> Iterator[dict[str, Any]]:
    """The spans of one load profile. `prompt50k`: one system prompt, an equal but distinct `str` per span (as if
    parsed from its own request), and a 1 KB message of its own; `prompt50k-shared`: every span references one prompt
    object; `chatbot`: a prompt and a history that differ in every span (nothing repeats byte for byte)."""
    if kind in ("prompt50k", "prompt50k-shared"):
        for i in range(int(10_000 * scale)):
            prompt = _PROMPT if kind == "prompt50k-shared" else (_PROMPT + " ")[:-1]
            message = _MESSAGE[:-12] + f"{i:012d}"
            yield {
                "trace_id": f"trace-{i // 10:08d}",
                "id": f"span-{i:010d}",
                "name": "llm.chat_completion",
                "start_timestamp": "2026-11-28T10:00:00+00:00",
                "end_timestamp": "2026-11-28T10:00:02+00:00",
                "input": {"messages": [{"role": "system", "content": prompt}, {"role": "user", "content": message}]},
                "output": {"content": "done"},
            }
    else:
        conversations, turns = max(1, int(50 * scale)), 40
        for turn in range(1, turns + 1):
            for c in range(conversations):
                history = [
                    {
                        "role": "user" if k % 2 == 0 else "assistant",
                        "content": _MESSAGE[:-12] + f"{c:04d}{k:04d}{turn:04d}",
                    }
                    for k in range(turn)
                ]
                yield {
                    "trace_id": f"conv-{c:06d}",
                    "id": f"conv-{c:06d}-turn-{turn:03d}",
                    "name": "chat.turn",
                    "start_timestamp": "2026-11-28T10:00:00+00:00",
                    "end_timestamp": "2026-11-28T10:00:02+00:00",
                    "input": {
                        "messages": [{"role": "system", "content": _PROMPT[:-10] + f"{c:05d}{turn:05d}"}, *history]
                    },
                    "output": {"content": "ok"},
                }


def child_agents_spool(args: dict[str, Any]) -> dict[str, Any]:
    """Produce the load at ~`rate` spans/s (50 per 10 ms) through Spool.put with the drainer delivering."""
    kind, scale, rate = args["kind"], float(args["scale"]), float(args["rate"])
    path = Path(args["path"])
    base = rss()

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        sink = sink_for(args["url"])
        spool = Spool(path, sink=sink, config=SpoolConfig())
        samples: list[tuple[float, int, int, int]] = []  # t, backlog, db bytes, rss
        put = 0
        done = asyncio.Event()

        async def sampler(t0: float) -> None:
            while not done.is_set():
                samples.append((loop.time() - t0, put - delivered(spool), file_bytes(path), rss()))
                await asyncio.sleep(0.05)

        try:
            await spool.commit()
            start_rss = rss()
            t0 = loop.time()
            task = asyncio.create_task(sampler(t0))
            per_tick = max(1, round(rate / 100))
            tick: list[dict[str, Any]] = []
            for span in load_spans(kind, scale):
                tick.append(span)
                if len(tick) == per_tick:
                    for s in tick:
                        spool.put(s)
                    put += len(tick)
                    tick = []
                    await asyncio.sleep(max(0.0, t0 + put / rate - loop.time()))
            for s in tick:
                spool.put(s)
            put += len(tick)
            t_produced = loop.time() - t0
            ok = await spool.flush(timeout=600)
            t_done = loop.time() - t0
            done.set()
            await task
            dropped = spool.metrics(gauges=False)["dropped"]
        finally:
            await spool.aclose(timeout=0)
        return {
            "spans": put,
            "drained": ok,
            "dropped": dropped,
            "rss_start": start_rss,
            "produce_s": t_produced,
            "drain_s_after_produce": t_done - t_produced,
            "total_s": t_done,
            "peak_backlog": max(s[1] for s in samples),
            "peak_db_bytes": max(s[2] for s in samples),
            # what the process holds while the backlog drains (from 1 s after the last put), against the in-memory
            # queue, which holds every span until it is sent
            "median_rss_draining": med([s[3] for s in samples if s[0] > t_produced + 1.0] or [samples[-1][3]]),
        }

    out = asyncio.run(main())
    out.update(rss_base=base, rss_peak=proc_status().get("VmHWM", 0), file_bytes_closed=file_bytes(path))
    out.update(disk_and_json_bytes_per_span(kind, scale, path.with_name(path.name + ".sample")))
    return out


def disk_and_json_bytes_per_span(kind: str, scale: float, path: Path, n: int = 2000) -> dict[str, float]:
    """Bytes on disk per span (a spool holding the first `n` spans of the load, put and committed, then closed:
    checkpointed) and per JSON body."""
    sample = [s for _, s in zip(range(n), load_spans(kind, scale), strict=False)]
    Store(path, SpoolConfig(max_bytes=64 * 1024**3)).close()  # an empty spool, checkpointed, WAL truncated
    before = file_bytes(path)

    async def fill() -> None:
        async with Spool(path, config=SpoolConfig(max_bytes=64 * 1024**3)) as spool:
            for i, s in enumerate(sample):
                spool.put(s)
                if i % 100 == 99:
                    await spool.commit()  # (all of them at once would pass max_pending_bytes)
            assert spool.metrics(gauges=False)["dropped"] == 0

    asyncio.run(fill())
    after = file_bytes(path)
    unlink_db(path)
    return {
        "disk_bytes_per_span": (after - before) / len(sample),
        "json_bytes_per_span": sum(len(encode_item(s, 16 * MiB).body) for s in sample) / len(sample),
    }


def child_agents_memory(args: dict[str, Any]) -> dict[str, Any]:
    """The same spans held by an in-memory queue (what a queue holds while the backend cannot keep up)."""
    kind, scale = args["kind"], float(args["scale"])
    import scale_gp_beta  # noqa: F401  (the spool child has the SDK loaded too)

    base = rss()

    async def main() -> int:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for span in load_spans(kind, scale):
            queue.put_nowait(span)
        return queue.qsize()

    held = asyncio.run(main())
    return {"spans": held, "rss_base": base, "rss_peak": proc_status().get("VmHWM", 0)}


def bench_agents(scale: float, tmp: Path, rx: ReceiverProcess) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("prompt50k", "prompt50k-shared", "chatbot"):
        rx.reset()
        rx.control(latency=0.005)
        path = tmp / f"agents-{kind}.db"
        ours = run_child("agents_spool", {"kind": kind, "scale": scale, "rate": 5000, "path": str(path), "url": rx.url})
        unlink_db(path)
        rx.reset()
        mem = run_child("agents_memory", {"kind": kind, "scale": scale})
        out[kind] = {
            "spool": ours,
            "in_memory_queue": mem,
            "peak_rss_ratio": mem["rss_peak"] / ours["rss_peak"],
        }
    return out


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "agents_spool": child_agents_spool,
    "agents_memory": child_agents_memory,
}


# -- report ----------------------------------------------------------------------------------------------------------


def _mb(b: float) -> str:
    return f"{b / MiB:.1f} MB"


def table(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, value, against, target) rows; targets carry a pass/miss mark."""
    rows: list[tuple[str, str, str, str]] = []

    def mark(ok: bool) -> str:
        return "ok" if ok else "MISS"

    if h := res.get("hot"):
        m, r = h["methods"], h["ratios"]
        for name, v in m.items():
            rows.append(
                (
                    f"hot: {name} p50 / p99 / p99.9",
                    f"{v['p50_us']:.2f} / {v['p99_us']:.2f} / {v['p999_us']:.1f} µs",
                    "",
                    "",
                )
            )
        put = m["Spool.put"]
        rows.append(("hot: Spool.put p50", f"{put['p50_us']:.2f} µs", "", f"<= 5 µs {mark(put['p50_us'] <= 5)}"))
        rows.append(("hot: Spool.put p99", f"{put['p99_us']:.2f} µs", "", f"<= 50 µs {mark(put['p99_us'] <= 50)}"))
        rows.append(
            (
                "hot: Spool.put p50 / put_nowait p50",
                f"{r['put_p50_vs_put_nowait']:.1f}x",
                "asyncio.Queue.put_nowait",
                f"<= 10x {mark(r['put_p50_vs_put_nowait'] <= 10)}",
            )
        )
        rows.append(("hot: Spool.put p50 / TQM.enqueue p50", f"{r['put_p50_vs_tqm_enqueue']:.1f}x", "SDK", ""))
        rows.append(
            (
                "hot: Spool.put p50, redact=scrub() / without",
                f"{r['put_scrub_p50_vs_put']:.2f}x",
                "Spool.put",
                f"<= 1.5x {mark(r['put_scrub_p50_vs_put'] <= 1.5)}",
            )
        )
        rows.append(
            (
                "hot: on_span_end p50 / agentex enqueue p50",
                f"{r['on_span_end_p50_vs_agentex_enqueue']:.1f}x",
                h["agentex_label"],
                f"<= 5x {mark(r['on_span_end_p50_vs_agentex_enqueue'] <= 5)}",
            )
        )
    if a := res.get("append"):
        rows.append(
            (
                "append: committed puts/s",
                f"{a['spool_puts_per_s']:,.0f}/s",
                f"raw executemany {a['raw_executemany_rows_per_s']:,.0f}/s",
                f"{a['ratio']:.0%} (>= 70% {mark(a['ratio'] >= 0.7)})",
            )
        )
    if d := res.get("delivery"):
        s, k = d["spool"], d["sdk_upsert_batch"]
        rows.append(
            (
                "delivery: client CPU per span",
                f"{s['cpu_us_per_span']:.1f} µs",
                f"SDK upsert_batch {k['cpu_us_per_span']:.1f} µs",
                f"{d['cpu_ratio']:.1f}x less (>= 5x {mark(d['cpu_ratio'] >= 5)})",
            )
        )
        rows.append(
            (
                "delivery: spans/s",
                f"{s['spans_per_s']:,.0f}/s",
                f"SDK upsert_batch {k['spans_per_s']:,.0f}/s",
                f"{d['throughput_ratio']:.1f}x",
            )
        )
    if e := res.get("e2e"):
        f, p = e["max_rate"], e["paced_20k"]
        rows.append(
            (
                "e2e: put -> delivered -> deleted",
                f"{f['spans_per_s']:,.0f} spans/s",
                f"peak backlog {f['peak_backlog']:,}",
                f">= 20k/s {mark(f['spans_per_s'] >= 20_000)}",
            )
        )
        w = e["max_rate_inflight4"]
        rows.append(
            (
                "e2e: same, max_inflight=4 (default 2)",
                f"{w['spans_per_s']:,.0f} spans/s",
                f"client CPU {w['client_cpu_us_per_span']:.0f} µs/span, receiver {w['receiver_cpu_us_per_span']:.0f}",
                "",
            )
        )
        rows.append(
            (
                "e2e: paced 20k/s",
                f"{p['spans_per_s']:,.0f} spans/s",
                f"backlog median {p['median_backlog']:,.0f}, peak {p['peak_backlog']:,}",
                "",
            )
        )
    if rp := res.get("replay"):
        for run in rp["runs"]:
            rows.append(
                (
                    f"replay: batch {run['batch_size']} x {run['max_inflight']} in flight",
                    f"{run['spans_per_s']:,.0f} spans/s",
                    f"bound {run['bound_spans_per_s']:,.0f}/s at {rp['latency_s'] * 1000:.0f} ms/request",
                    f"{run['of_bound']:.0%} of bound",
                )
            )
    if lg := res.get("lag"):
        rows.append(
            (
                f"lag: p99 loop lag at {lg['spans_per_s']:,} spans/s",
                f"spool {lg['p99_ms']['spool']:.2f} ms",
                f"idle {lg['p99_ms']['idle']:.2f} ms, SDK {lg['p99_ms']['sdk']:.2f} ms",
                f"added {lg['spool_added_p99_ms']:.2f} ms (<= 1 ms {mark(lg['spool_added_p99_ms'] <= 1)})",
            )
        )
        rows.append(("lag: p99 added by SDK upsert_batch", f"{lg['sdk_added_p99_ms']:.2f} ms", "", ""))
    if mm := res.get("memory"):
        rows.append(
            (
                f"memory: {mm['spans']:,}-span backlog held (backend down), RSS",
                f"{mm['backlog_rss_mb']:.1f} MB (peak {mm['backlog_peak_rss_mb']:.1f} MB)",
                f"file {_mb(mm['backlog_db_bytes'])}",
                f"<= 60 MB {mark(mm['backlog_rss_mb'] <= 60)}",
            )
        )
        peak = mm.get("drain_peak_rss_mb", mm.get("peak_rss_mb", float("nan")))
        rows.append(
            (
                "memory: after draining it",
                f"file {_mb(mm['drained_db_bytes'])} open, {_mb(mm['closed_db_bytes'])} closed",
                f"drain {mm['drain_s']:.1f} s (batch 1000 x 4), peak RSS while draining {peak:.1f} MB",
                f"file <= 10 MB {mark(mm['closed_db_bytes'] <= 10 * MiB)}",
            )
        )
    if ag := res.get("agents"):
        for kind, v in ag.items():
            if not isinstance(v, dict):
                continue
            s, q = v["spool"], v["in_memory_queue"]
            rows.append(
                (
                    f"agents {kind}: peak RSS ({s['spans']:,} spans)",
                    _mb(s["rss_peak"]),
                    f"in-memory queue {_mb(q['rss_peak'])}",
                    f"{1 / v['peak_rss_ratio']:.2f} of it"
                    + (f" (<= 1/3 {mark(v['peak_rss_ratio'] >= 3)})" if kind == "prompt50k" else ""),
                )
            )
            rows.append(
                (
                    f"agents {kind}: RSS while the backlog drains (median)",
                    _mb(s["median_rss_draining"]),
                    f"in-memory queue holds {_mb(q['rss_peak'])} until sent",
                    f"{q['rss_peak'] / s['median_rss_draining']:.1f}x less",
                )
            )
            rows.append(
                (
                    f"agents {kind}: backlog / drain",
                    f"peak {s['peak_backlog']:,} spans",
                    f"drained {s['drain_s_after_produce']:.1f} s after the last put",
                    f"{s.get('dropped', 0):,} dropped",
                )
            )
            rows.append(
                (
                    f"agents {kind}: disk per span",
                    f"{s['disk_bytes_per_span'] / 1024:.1f} KB (1 GiB holds {GiB // s['disk_bytes_per_span']:,.0f})",
                    f"JSON {s['json_bytes_per_span'] / 1024:.1f} KB/span; peak file {_mb(s['peak_db_bytes'])}",
                    f"{s['disk_bytes_per_span'] / s['json_bytes_per_span']:.2f} of it"
                    + (
                        f" (<= 1/2 {mark(2 * s['disk_bytes_per_span'] <= s['json_bytes_per_span'])})"
                        if kind == "prompt50k"
                        else ""
                    ),
                )
            )
    if o := res.get("otel"):
        e, d, x = o["on_end"], o["otlp"], o["e2e"]
        ours, theirs = e["SpoolSpanProcessor.on_end"], e["BatchSpanProcessor.on_end"]
        rows.append(
            (
                "otel: SpoolSpanProcessor.on_end p50 / p99",
                f"{ours['p50_us']:.2f} / {ours['p99_us']:.2f} µs",
                f"BatchSpanProcessor.on_end {theirs['p50_us']:.2f} / {theirs['p99_us']:.2f} µs",
                f"p50 {e['p50_ratio']:.1f}x (<= 3x {mark(e['p50_ratio'] <= 3)})",
            )
        )
        rows.append(
            (
                "otel: OTLP client CPU per span, OTLPSink",
                f"{d['OTLPSink_cpu_us_per_span']:.1f} µs",
                f"OTLPSpanExporter {d['OTLPSpanExporter_cpu_us_per_span']:.1f} µs",
                f"{d['cpu_ratio']:.1f}x less (>= 2x {mark(d['cpu_ratio'] >= 2)})",
            )
        )
        rows.append(
            (
                "otel: OTLP client CPU per span, spool drain",
                f"{d['spool_drain_cpu_us_per_span']:.1f} µs (+{d['encode_cpu_us_per_span']:.1f} µs encoding at commit)",
                "the same",
                f"{d['cpu_ratio_drain']:.1f}x less; {d['cpu_ratio_with_encoding']:.1f}x with encoding",
            )
        )
        rows.append(
            (
                "otel: SDK -> delivered -> deleted",
                f"{x['spans_per_s']:,.0f} spans/s",
                f"the app ended {x['app_spans_per_s']:,.0f}/s",
                f">= 12k {mark(x['spans_per_s'] >= 12_000)}",
            )
        )
    if v := res.get("serve"):
        rows.append(
            (
                "serve: durable ingest, OTLP requests of 512",
                f"{v['ingest_spans_per_s']:,.0f} spans/s",
                f"in-process put+commit {v['inproc_spans_per_s']:,.0f}/s",
                f"{v['ingest_ratio']:.0%} (>= 50% {mark(v['ingest_ratio'] >= 0.5)})",
            )
        )
        rows.append(
            (
                "serve: ack p50 / p99 at 5k spans/s, delivering",
                f"{v['ack_p50_ms']:.1f} / {v['ack_p99_ms']:.1f} ms",
                f"pending 1 s after: {v['pending_1s_after']:.0f}",
                f"p99 <= 50 ms {mark(v['ack_p99_ms'] <= 50)}",
            )
        )
        rows.append(
            (
                "serve: RSS with the ingest backlog / after the paced run",
                f"{v['rss_backlog_mb']:.0f} / {v['paced_rss_mb']:.0f} MB",
                f"{v['spans']:,} spans",
                f"<= 100 MB {mark(max(v['rss_backlog_mb'], v['paced_rss_mb']) <= 100)}",
            )
        )
        rows.append(
            (
                "serve: baseline, OTLPSpanExporter straight to the collector",
                f"{v['baseline_spans_per_s']:,.0f} spans/s",
                "",
                "",
            )
        )
    return rows


def render(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("figure", "ours", "against", "ratio / target")
    lines = ["| " + " | ".join(head) + " |", "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def plot(res: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("hot", "replay") if k in res]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, key in zip(axes[0], panels, strict=True):
        if key == "hot":
            for name, values in res["hot"]["cdf_us"].items():
                ys = [(i + 1) / len(values) for i in range(len(values))]
                ax.plot(values, ys, label=name)
            ax.set_xscale("log")
            ax.set_xlabel("latency per call (µs, log)")
            ax.set_ylabel("fraction of calls")
            ax.set_title(f"hot path, ~{res['hot']['item_bytes']} B spans")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
        else:
            runs = res["replay"]["runs"]
            labels = [f"{r['batch_size']}x{r['max_inflight']}" for r in runs]
            xs = range(len(runs))
            ax.bar([x - 0.2 for x in xs], [r["spans_per_s"] for r in runs], width=0.4, label="measured")
            ax.bar([x + 0.2 for x in xs], [r["bound_spans_per_s"] for r in runs], width=0.4, label="bound", alpha=0.5)
            ax.set_xticks(list(xs), labels)
            ax.set_yscale("log")
            ax.set_xlabel("batch size x batches in flight")
            ax.set_ylabel("spans/s (log)")
            ax.set_title(f"replay, {res['replay']['latency_s'] * 1000:.0f} ms per request")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "load_avg": os.getloadavg(),
    }


# -- main ------------------------------------------------------------------------------------------------------------


def params(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "hot": (2_000, 2),
            "append": (5_000, 1_000, 3),
            "delivery": (1_000, 2),
            "e2e": 5_000,
            "replay": (10_000, [(50, 2, 1.0), (1000, 4, 30.0)]),
            "lag": (0.5, 1),
            "memory": 20_000,
            "agents": 0.05,
            "otel": (2_000, 2, 5_000),
            "serve": (5_000, 2.0),
        }
    return {
        "hot": (20_000, 5),
        "append": (50_000, 2_000, 5),
        "delivery": (10_000, 3),
        "e2e": 100_000,
        "replay": (100_000, [(50, 2, 10.0), (50, 8, 10.0), (200, 8, 30.0), (1000, 4, 60.0), (1000, 8, 60.0)]),
        "lag": (5.0, 3),
        "memory": 1_000_000,
        "agents": 1.0,
        "otel": (10_000, 4, 50_000),
        "serve": (100_000, 30.0),
    }


async def run_async(sections: list[str], p: dict[str, Any], tmp: Path, rx: ReceiverProcess) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for name in sections:
        t0 = time.perf_counter()
        print(f"-- {name} ...", file=sys.stderr, flush=True)
        if name == "hot":
            res[name] = await bench_hot(*p["hot"], tmp)
        elif name == "append":
            res[name] = await bench_append(*p["append"], tmp)
        elif name == "delivery":
            res[name] = await bench_delivery(*p["delivery"], tmp, rx)
        elif name == "e2e":
            res[name] = await bench_e2e(p["e2e"], tmp, rx)
        elif name == "replay":
            res[name] = await bench_replay(*p["replay"], tmp, rx)
        elif name == "lag":
            res[name] = await bench_lag(*p["lag"], 2000, tmp, rx)
        elif name == "memory":
            res[name] = await asyncio.to_thread(bench_memory, p["memory"], tmp)
        elif name == "agents":
            res[name] = await asyncio.to_thread(bench_agents, p["agents"], tmp, rx)
        elif name == "otel":
            from bench_otel import bench_otel

            res[name] = await asyncio.to_thread(bench_otel, *p["otel"], tmp, rx)
        elif name == "serve":
            from bench_serve import bench_serve

            res[name] = await asyncio.to_thread(bench_serve, *p["serve"], tmp, rx)
        res[name]["elapsed_s"] = time.perf_counter() - t0
        print(f"   {name} took {res[name]['elapsed_s']:.1f} s", file=sys.stderr, flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (well under a minute)")
    parser.add_argument("--json", type=Path, help="write every figure as JSON here")
    parser.add_argument("--plot", type=Path, help="write a PNG: put latency CDF and replay throughput")
    parser.add_argument("--only", help=f"comma-separated sections of {','.join(SECTIONS)}")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "ARGS_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))), flush=True)
        return 0
    sections = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spool-bench-") as d, ReceiverProcess() as rx:
        res = asyncio.run(run_async(sections, params(args.quick), Path(d), rx))
    res["machine"] = machine()
    res["quick"] = args.quick
    res["command"] = "uv run python scripts/bench.py" + (" --quick" if args.quick else "")
    res["elapsed_s"] = time.perf_counter() - started
    rows = table(res)
    res["table"] = [dict(zip(("figure", "ours", "against", "target"), r, strict=True)) for r in rows]
    m = res["machine"]
    print(f"span-spool benchmarks — {m['nproc']} cores, {m['cpu']}, Python {m['python']}, SQLite {m['sqlite']}")
    print(render(rows))
    print(f"({res['elapsed_s']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    if args.plot:
        plot(res, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
