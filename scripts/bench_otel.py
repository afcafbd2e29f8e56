"""The OpenTelemetry figures of scripts/bench.py (`--only otel`): the SDK's own pieces side by side with ours.

- `on_end`: per-call latency of `SpoolSpanProcessor.on_end` against `BatchSpanProcessor.on_end` (its in-memory
  queue; the exporter behind it does nothing), on the same finished spans, in alternating rounds.
- `otlp`: client CPU per span delivering the same spans to the same receiver (its own process), against the
  official `opentelemetry-exporter-otlp-proto-http` `OTLPSpanExporter.export`, all in batches of 512 (the SDK's
  `max_export_batch_size`). Ours three ways: `OTLPSink.send_blocking` of the stored rows (the sink alone); a spool
  draining them (the sink, plus claiming and deleting the rows durably); and that plus the encoding the spool does at
  commit (`OTLPEncoder`), which the official exporter does inside `export` (and which it cannot skip on a retry).
- `e2e`: spans ended through the SDK -> delivered -> deleted, as fast as the application can end them.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["bench_otel"]


def _spans(n: int) -> list[Any]:
    """`n` finished SDK spans like an instrumented LLM call: ~1 KB of attributes, an event, one resource."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": "agent", "service.version": "1.4.2"}))
    tracer = provider.get_tracer("openinference.instrumentation.openai", "0.1")
    out = []
    for i in range(n):
        attrs = {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-mini",
            "input.value": f'{{"messages": [{{"role": "user", "content": "question {i} ' + "x" * 400 + '"}]}',
            "output.value": f"answer {i} " + "y" * 300,
            "llm.token_count.prompt": 120 + i % 50,
            "llm.token_count.completion": 80 + i % 30,
            "session.id": f"session-{i // 20}",
        }
        with tracer.start_as_current_span("ChatCompletion", attributes=attrs) as span:
            span.add_event("first_token", {"latency_ms": 42.5})
        out.append(span)
    return out


def _pct(values: Sequence[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))]


def bench_on_end(spans: list[Any], rounds: int, tmp: Path, url: str) -> dict[str, Any]:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from spool import OTLPSink, SpoolConfig
    from spool.otel import SpoolSpanProcessor

    class Null(SpanExporter):
        def export(self, batch: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    n = len(spans)
    ours: list[float] = []
    theirs: list[float] = []
    perf = time.perf_counter_ns
    for r in range(rounds):
        proc = SpoolSpanProcessor(tmp / f"on_end-{r}.db", sink=OTLPSink(url + "/v1/traces"), config=SpoolConfig())
        bsp = BatchSpanProcessor(Null(), max_queue_size=n + 1, max_export_batch_size=512)
        gc.collect()
        for target, out in ((proc, ours), (bsp, theirs)) if r % 2 == 0 else ((bsp, theirs), (proc, ours)):
            on_end = target.on_end
            for s in spans:
                t0 = perf()
                on_end(s)
                out.append((perf() - t0) / 1000)
        assert proc.force_flush(120_000), "the spool did not deliver"
        proc.shutdown()
        bsp.shutdown()
    ours_p50, theirs_p50 = _pct(ours, 0.5), _pct(theirs, 0.5)
    return {
        "spans": n,
        "rounds": rounds,
        "SpoolSpanProcessor.on_end": {"p50_us": ours_p50, "p99_us": _pct(ours, 0.99)},
        "BatchSpanProcessor.on_end": {"p50_us": theirs_p50, "p99_us": _pct(theirs, 0.99)},
        "p50_ratio": ours_p50 / theirs_p50,
    }


def bench_otlp(spans: list[Any], rounds: int, tmp: Path, rx: Any) -> dict[str, Any]:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from spool import OTLPSink, Spool, SpoolConfig
    from spool._otlpencode import OTLPEncoder
    from spool._store import Store

    n, batch = len(spans), 512
    encoder = OTLPEncoder()
    c0 = time.process_time()
    rows = [encoder.encode(s) for s in spans]
    encode_us = (time.process_time() - c0) / n * 1e6
    backlog = tmp / "otlp-backlog.db"
    store = Store(backlog, SpoolConfig())
    store.claim_format("otlp")
    store.append(rows)
    store.close()
    official = OTLPSpanExporter(endpoint=rx.url + "/v1/traces")
    official.export(spans[:10])  # warm-up: the connection, lazy imports
    sink = OTLPSink(rx.url + "/v1/traces")
    bodies = [r.body for r in rows]
    ours: list[float] = []
    sink_only: list[float] = []
    theirs: list[float] = []

    async def drain(path: Path) -> tuple[bool, float]:
        spool = Spool(path, sink=sink, config=SpoolConfig(batch_size=batch, max_inflight=1))
        try:
            c0 = time.process_time()
            ok = await spool.flush(timeout=300)
            return ok, time.process_time() - c0
        finally:
            await spool.aclose(timeout=0)

    try:
        for r in range(rounds):
            path = tmp / f"otlp-{r}.db"
            shutil.copyfile(backlog, path)
            rx.reset()
            ok, cpu = asyncio.run(drain(path))
            if not ok or rx.stats()["spans"] < n:
                raise RuntimeError(f"otlp round {r}: the spool did not deliver everything ({rx.stats()})")
            ours.append(cpu / n * 1e6)
            rx.reset()
            c0 = time.process_time()
            for i in range(0, n, batch):
                sink.send_blocking(bodies[i : i + batch], timeout=30)
            sink_only.append((time.process_time() - c0) / n * 1e6)
            if rx.stats()["spans"] < n:
                raise RuntimeError(f"otlp round {r}: OTLPSink did not deliver everything ({rx.stats()})")
            rx.reset()
            c0 = time.process_time()
            for i in range(0, n, batch):
                official.export(spans[i : i + batch])
            theirs.append((time.process_time() - c0) / n * 1e6)
            if rx.stats()["spans"] < n:
                raise RuntimeError(f"otlp round {r}: the official exporter did not deliver everything")
    finally:
        official.shutdown()
        sink.close()
    deliver, official_us = statistics.median(ours), statistics.median(theirs)
    send = statistics.median(sink_only)
    return {
        "spans": n,
        "rounds": rounds,
        "batch_size": batch,
        "spool_drain_cpu_us_per_span": deliver,
        "OTLPSink_cpu_us_per_span": send,
        "encode_cpu_us_per_span": encode_us,
        "OTLPSpanExporter_cpu_us_per_span": official_us,
        "cpu_ratio": official_us / send,
        "cpu_ratio_drain": official_us / deliver,
        "cpu_ratio_with_encoding": official_us / (deliver + encode_us),
    }


def bench_e2e(n: int, tmp: Path, url: str) -> dict[str, Any]:
    from opentelemetry.sdk.trace import TracerProvider

    from spool import OTLPSink, SpoolConfig
    from spool.otel import SpoolSpanProcessor

    provider = TracerProvider()
    proc = SpoolSpanProcessor(tmp / "otel-e2e.db", sink=OTLPSink(url + "/v1/traces"), config=SpoolConfig())
    provider.add_span_processor(proc)
    tracer = provider.get_tracer("bench")
    t0 = time.perf_counter()
    for i in range(n):
        with tracer.start_as_current_span("op", attributes={"i": i, "route": "/checkout"}):
            pass
    ended = time.perf_counter() - t0
    ok = proc.force_flush(300_000)
    wall = time.perf_counter() - t0
    stats = proc.stats()
    provider.shutdown()
    if not ok or stats is None or stats.pending:
        raise RuntimeError(f"otel e2e: not everything was delivered ({stats})")
    return {"spans": n, "spans_per_s": n / wall, "app_spans_per_s": n / ended, "delivered_and_deleted": True}


def bench_otel(n_hot: int, rounds: int, n_e2e: int, tmp: Path, rx: Any) -> dict[str, Any]:
    rx.reset()
    spans = _spans(n_hot)
    gc.freeze()
    out = {
        "on_end": bench_on_end(spans, rounds, tmp, rx.url),
        "otlp": bench_otlp(spans, rounds, tmp, rx),
    }
    rx.reset()
    out["e2e"] = bench_e2e(n_e2e, tmp, rx.url)
    return out
