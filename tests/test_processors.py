"""The tracing processors against the real receiver and real SQLite files, with real agentex spans."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from agentex.types.span import Span
from conftest import FAST, poll

from spool import SGPSink, SpoolConfig
from spool._errors import SpoolConfigError
from spool._processors import SpoolTracingProcessor, SyncSpoolTracingProcessor
from spool._spool import Spool
from spool.testing import MemorySink, Receiver

CONFIG = replace(FAST, flush_interval=0.1, shutdown_timeout=20.0)


def _span(name: str, trace_id: str, parent: Span | None = None, **kw: Any) -> Span:
    return Span(
        id=str(uuid.uuid4()),
        name=name,
        trace_id=trace_id,
        parent_id=parent.id if parent is not None else None,
        start_time=datetime.now(UTC),
        **kw,
    )


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.fixture
def errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """Every WARNING+ record from spool, asyncio and httpx during the test."""
    caplog.set_level(logging.WARNING)
    records: list[logging.LogRecord] = []
    yield records
    watched = ("spool", "asyncio", "httpx")
    records.extend(r for r in caplog.records if r.levelno >= logging.WARNING and r.name.split(".")[0] in watched)


async def _pending(path: Path) -> int:
    async with Spool(path) as s:
        return (await s.stats()).pending


# -- mapping end to end -----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_nested_spans_arrive_with_every_mapped_field(receiver: Receiver, sink: SGPSink, tmp_path: Path) -> None:
    proc = SpoolTracingProcessor(tmp_path / "s.db", sink=sink, config=CONFIG)
    trace = str(uuid.uuid4())
    root = _span("turn", trace, input={"message": "hi"}, data={"__span_type__": "AGENT_WORKFLOW", "turn": 1})
    child = _span(
        "llm",
        trace,
        root,
        input={"messages": [{"role": "user", "content": "hi"}]},
        data={"__span_type__": "COMPLETION", "model": "m"},
    )
    leaf = _span("tool", trace, child, input=[{"q": 1}], data=[{"raw": True}])
    try:
        await proc.on_span_start(root)
        await proc.on_spans_start([child, leaf])
        assert await proc.flush(10)
        starts = receiver.spans
        assert {k for k in starts} == {(trace, s.id) for s in (root, child, leaf)}
        assert all("end_timestamp" not in v for v in starts.values())

        leaf.output = [{"a": 2}]
        leaf.end_time = leaf.start_time + timedelta(milliseconds=5)
        child.output = {"text": "hello"}
        child.end_time = child.start_time + timedelta(milliseconds=10)
        assert isinstance(child.data, dict)
        child.data["__error__"] = {"type": "ValueError", "message": "boom", "category": "application"}
        root.output = {"answer": "hello"}
        root.end_time = root.start_time + timedelta(milliseconds=20)
        await proc.on_spans_end([leaf, child])
        await proc.on_span_end(root)
        assert await proc.flush(10)
    finally:
        await proc.shutdown()

    got = receiver.spans
    r, c, lf = got[(trace, root.id)], got[(trace, child.id)], got[(trace, leaf.id)]
    assert r["name"] == "turn" and "parent_id" not in r
    assert r["type"] == "AGENT_WORKFLOW" and r["status"] == "SUCCESS"
    assert r["input"] == {"message": "hi"} and r["output"] == {"answer": "hello"}
    assert r["metadata"] == {"__span_type__": "AGENT_WORKFLOW", "turn": 1, "__source__": "agentex"}
    assert _ts(r["start_timestamp"]) == root.start_time and _ts(r["end_timestamp"]) == root.end_time
    assert _ts(r["start_timestamp"]).utcoffset() == timedelta(0)

    assert c["parent_id"] == root.id and c["type"] == "COMPLETION"
    assert c["status"] == "ERROR"
    assert c["metadata"]["error"] is True and c["metadata"]["error_message"] == "boom"
    assert c["metadata"]["model"] == "m"
    assert c["input"] == {"messages": [{"role": "user", "content": "hi"}]} and c["output"] == {"text": "hello"}
    assert _ts(c["end_timestamp"]) == child.end_time

    assert lf["parent_id"] == child.id and lf["type"] == "STANDALONE"
    assert lf["input"] == [{"q": 1}] and lf["output"] == [{"a": 2}] and lf["metadata"] == [{"raw": True}]
    assert proc.errors == 0 and proc.dropped == 0


# -- event-loop changes -----------------------------------------------------------------------------------------


def test_twenty_asyncio_runs_through_one_processor(
    receiver: Receiver, sink: SGPSink, tmp_path: Path, errors_logged: list[logging.LogRecord]
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        _twenty_runs(receiver, sink, tmp_path, errors_logged)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def _twenty_runs(receiver: Receiver, sink: SGPSink, tmp_path: Path, errors_logged: list[logging.LogRecord]) -> None:
    proc = SpoolTracingProcessor(tmp_path / "s.db", sink=sink, config=CONFIG)
    trace = str(uuid.uuid4())
    loop_errors: list[dict[str, Any]] = []
    ids: list[str] = []

    async def request(i: int) -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
        root = _span(f"request {i}", trace, input={"i": i})
        await proc.on_span_start(root)
        for j in range(4):
            child = _span(f"step {i}.{j}", trace, root)
            await proc.on_span_start(child)
            await asyncio.sleep(0)
            child.end_time = datetime.now(UTC)
            await proc.on_span_end(child)
            ids.append(child.id)
        root.end_time = datetime.now(UTC)
        await proc.on_span_end(root)
        ids.append(root.id)
        if i % 5 == 4:  # sometimes the drainer gets to deliver within the request
            await proc.flush(5)

    for i in range(20):
        asyncio.run(request(i))

    async def finish() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
        await proc.shutdown()

    asyncio.run(finish())
    assert receiver.wait_for(100, timeout=10, ended=True)
    assert set(receiver.spans) == {(trace, i) for i in ids}
    assert all("end_timestamp" in v for v in receiver.spans.values())
    assert proc.errors == 0 and proc.dropped == 0
    assert loop_errors == []
    assert errors_logged == []


def test_puts_under_a_finished_loop_are_delivered_by_shutdown_on_another(
    receiver: Receiver, sink: SGPSink, tmp_path: Path
) -> None:
    proc = SpoolTracingProcessor(tmp_path / "s.db", sink=sink, config=SpoolConfig(flush_interval=60))
    trace = str(uuid.uuid4())

    async def produce() -> None:
        s = _span("only", trace)
        s.end_time = datetime.now(UTC)
        await proc.on_span_end(s)

    asyncio.run(produce())
    asyncio.run(proc.shutdown())
    assert receiver.wait_for(1, timeout=10, ended=True)


# -- the sync processor -----------------------------------------------------------------------------------------


def test_four_threads_through_the_sync_processor(receiver: Receiver, sink: SGPSink, tmp_path: Path) -> None:
    proc = SyncSpoolTracingProcessor(tmp_path / "s.db", sink=sink, config=CONFIG)
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def work(t: int) -> None:
        try:
            start.wait()
            trace = f"trace-{t}"
            for i in range(500):
                s = _span(f"t{t} span {i}", trace, data={"__span_type__": "CUSTOM", "i": i})
                proc.on_span_start(s)
                s.end_time = datetime.now(UTC)
                proc.on_span_end(s)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    proc.shutdown()
    proc.shutdown()  # idempotent
    assert failures == []
    spans = receiver.spans
    assert len(spans) == 2000
    assert receiver.ended == 2000
    assert {k[0] for k in spans} == {f"trace-{t}" for t in range(4)}
    assert proc.errors == 0 and proc.dropped == 0
    assert not proc._runner.is_alive()


def test_sync_processor_called_from_inside_other_event_loops(
    receiver: Receiver, sink: SGPSink, tmp_path: Path, errors_logged: list[logging.LogRecord]
) -> None:
    """Sync code called from async code (and from plain threads): the background loop keeps the spool."""
    proc = SyncSpoolTracingProcessor(tmp_path / "s.db", sink=sink, config=CONFIG)
    ids = []

    async def handler(i: int) -> None:
        for j in range(5):
            s = _span(f"{i}.{j}", "t-mixed")
            proc.on_span_start(s)
            await asyncio.sleep(0)
            s.end_time = datetime.now(UTC)
            proc.on_span_end(s)
            ids.append(s.id)

    for i in range(3):
        asyncio.run(handler(i))
        s = _span(f"plain {i}", "t-mixed")
        proc.on_span_end(s)
        ids.append(s.id)
    assert proc.flush(10)
    proc.shutdown()
    assert set(receiver.spans) == {("t-mixed", i) for i in ids}
    assert proc.errors == 0
    assert errors_logged == []


def test_sync_wait_for_commit_means_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    config = SpoolConfig(flush_interval=60)
    proc = SyncSpoolTracingProcessor(path, sink=_StuckSink(), config=config, wait_for_commit=True)
    try:
        s = _span("one", "t")
        proc.on_span_start(s)
        assert asyncio.run(_pending(path)) == 1
    finally:
        proc.shutdown(timeout=0)


@pytest.mark.anyio
async def test_async_wait_for_commit_means_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    proc = SpoolTracingProcessor(path, sink=_StuckSink(), config=SpoolConfig(flush_interval=60), wait_for_commit=True)
    try:
        await proc.on_span_start(_span("one", "t"))
        assert await _pending(path) == 1
    finally:
        await proc.shutdown(timeout=0)


def test_sync_processor_shuts_down_at_interpreter_exit(receiver: Receiver, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import uuid
        from datetime import UTC, datetime
        from agentex.types.span import Span
        from spool import SGPSink, SpoolConfig
        from spool._processors import SyncSpoolTracingProcessor

        sink = SGPSink(api_key="k", account_id="a", base_url={receiver.url!r})
        proc = SyncSpoolTracingProcessor({str(tmp_path / "s.db")!r}, sink=sink, config=SpoolConfig(flush_interval=60))
        for i in range(10):
            s = Span(id=str(uuid.uuid4()), name=f"s{{i}}", trace_id="exit", start_time=datetime.now(UTC))
            proc.on_span_start(s)
            s.end_time = datetime.now(UTC)
            proc.on_span_end(s)
        # no shutdown(): atexit does it
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SGP_", "SPOOL_"))}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert receiver.wait_for(10, timeout=10, ended=True)


def test_async_processor_shuts_down_at_interpreter_exit(receiver: Receiver, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, uuid
        from datetime import UTC, datetime
        from agentex.types.span import Span
        from spool import SGPSink, SpoolConfig
        from spool._processors import SpoolTracingProcessor

        sink = SGPSink(api_key="k", account_id="a", base_url={receiver.url!r})
        proc = SpoolTracingProcessor({str(tmp_path / "s.db")!r}, sink=sink, config=SpoolConfig(flush_interval=60))

        async def main():
            s = Span(id=str(uuid.uuid4()), name="s", trace_id="exit", start_time=datetime.now(UTC))
            s.end_time = datetime.now(UTC)
            await proc.on_span_end(s)

        asyncio.run(main())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SGP_", "SPOOL_"))}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert receiver.wait_for(1, timeout=10, ended=True)


# -- never raises -----------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_object_in_input_is_stringified_and_delivered(receiver: Receiver, sink: SGPSink, tmp_path: Path) -> None:
    proc = SpoolTracingProcessor(tmp_path / "s.db", sink=sink, config=CONFIG)
    marker = object()
    s = _span("odd", "t-obj", input={"obj": marker, "ok": 1, "nested": [marker]})
    s.end_time = datetime.now(UTC)
    try:
        await proc.on_span_end(s)
        assert await proc.flush(10)
    finally:
        await proc.shutdown()
    got = receiver.spans[("t-obj", s.id)]
    assert got["input"] == {"obj": str(marker), "ok": 1, "nested": [str(marker)]}
    assert proc.errors == 0 and proc.dropped == 0


@pytest.mark.anyio
async def test_unmappable_spans_are_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, receiver: Receiver, sink: SGPSink
) -> None:
    caplog.set_level(logging.ERROR, logger="spool")
    proc = SpoolTracingProcessor(tmp_path / "s.db", sink=sink, config=CONFIG)
    try:
        for _ in range(3):
            await proc.on_span_end(object())  # no span attributes
        await proc.on_span_start({"name": "no trace", "start_timestamp": "2025-01-01T00:00:00+00:00"})
        await proc.on_spans_end([None, 42])
        s = _span("late", "t")
        s.end_time = s.start_time - timedelta(seconds=1)  # end before start: refused by the spool
        await proc.on_span_end(s)
        await proc.on_spans_start(iter([_span("ok", "t")]))
        assert await proc.flush(10)
    finally:
        await proc.shutdown()
        await proc.shutdown()
    assert proc.dropped == 7
    assert proc.errors == 7
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("spool.processors")]
    assert len(messages) == len(set(messages))  # once per kind
    assert 1 <= len(messages) <= 4
    assert len(receiver.spans) == 1


@pytest.mark.anyio
async def test_after_shutdown_events_are_dropped_not_raised(tmp_path: Path) -> None:
    proc = SpoolTracingProcessor(tmp_path / "s.db", sink=MemorySink())
    await proc.shutdown(timeout=0)
    await proc.on_span_start(_span("a", "t"))
    await proc.on_spans_end([_span("b", "t"), _span("c", "t")])
    assert proc.dropped == 3
    assert await proc.flush(1) is False
    assert await proc.stats() is None


def test_sync_after_shutdown_events_are_dropped_not_raised(tmp_path: Path) -> None:
    proc = SyncSpoolTracingProcessor(tmp_path / "s.db", sink=MemorySink())
    proc.shutdown(timeout=0)
    proc.on_span_end(_span("a", "t"))
    proc.on_spans_start([_span("b", "t")])
    assert proc.dropped == 2
    assert proc.flush(1) is False and proc.stats() is None


def test_no_sink_and_no_credentials_raises_in_the_constructor(tmp_path: Path) -> None:
    with pytest.raises(SpoolConfigError, match="SGP_API_KEY"):
        SpoolTracingProcessor(tmp_path / "s.db")
    with pytest.raises(SpoolConfigError):
        SyncSpoolTracingProcessor(tmp_path / "s.db")


@pytest.mark.anyio
async def test_sink_from_environment(receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGP_API_KEY", "k")
    monkeypatch.setenv("SGP_ACCOUNT_ID", "a")
    monkeypatch.setenv("SGP_CLIENT_BASE_URL", receiver.url)
    proc = SpoolTracingProcessor(tmp_path / "s.db", config=CONFIG)
    try:
        await proc.on_span_start(_span("env", "t"))
        assert await proc.flush(10)
    finally:
        await proc.shutdown()
    assert len(receiver.spans) == 1


# -- shutdown with a hanging backend ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_shutdown_with_hanging_receiver_returns_in_time_and_keeps_spans(
    receiver: Receiver, sink: SGPSink, tmp_path: Path
) -> None:
    path = tmp_path / "s.db"
    config = SpoolConfig(flush_interval=0.05, commit_interval=0.001, request_timeout=30, lease_seconds=60)
    proc = SpoolTracingProcessor(path, sink=sink, config=config)
    receiver.hang = True
    trace = str(uuid.uuid4())
    ids = []
    for i in range(20):
        s = _span(f"s{i}", trace)
        s.end_time = datetime.now(UTC)
        await proc.on_span_end(s)
        ids.append(s.id)
    # A batch is on the (hanging) wire.
    assert await asyncio.to_thread(poll, lambda: receiver.requests > 0, 10)

    t0 = time.monotonic()
    await proc.shutdown(timeout=1)
    elapsed = time.monotonic() - t0
    assert elapsed < 5, f"shutdown(timeout=1) took {elapsed:.1f}s"
    assert receiver.spans == {}
    assert await _pending(path) == 20

    receiver.hang = False
    with Receiver() as rx2:
        later = Spool(path, sink=SGPSink(api_key="k", account_id="a", base_url=rx2.url), config=CONFIG)
        try:
            assert await later.flush(10)
        finally:
            await later.aclose()
        assert set(rx2.spans) == {(trace, i) for i in ids}


def test_sync_shutdown_with_hanging_receiver_returns_in_time(receiver: Receiver, sink: SGPSink, tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    config = SpoolConfig(flush_interval=0.05, commit_interval=0.001, request_timeout=30, lease_seconds=60)
    proc = SyncSpoolTracingProcessor(path, sink=sink, config=config)
    receiver.hang = True
    for i in range(5):
        s = _span(f"s{i}", "t-hang")
        s.end_time = datetime.now(UTC)
        proc.on_span_end(s)
    assert poll(lambda: receiver.requests > 0, 10)
    t0 = time.monotonic()
    proc.shutdown(timeout=1)
    assert time.monotonic() - t0 < 5
    receiver.hang = False
    assert asyncio.run(_pending(path)) == 5


def _StuckSink() -> MemorySink:
    """Never answers within a request's time: rows stay pending in the file."""
    sink = MemorySink()
    sink.hold()
    return sink


# -- Spool behaviour the processors rely on (regressions found while integrating) -------------------


def test_puts_survive_a_loop_that_ends_while_their_commit_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = Spool(path, config=SpoolConfig(commit_interval=0))
    gate = threading.Event()

    async def open_gate_when_the_loop_ends() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            gate.set()  # cancelled with the writer task, as the loop ends

    async def produce() -> None:
        spool._db.submit(gate.wait, 60)  # the store thread is busy (a claim, a stats call, ...)
        asyncio.get_running_loop().create_task(open_gate_when_the_loop_ends())
        for i in range(10):
            spool.put({"trace_id": "t", "id": f"s{i}", "name": "n", "start_timestamp": "2026-01-01T00:00:00+00:00"})
        for _ in range(3):
            await asyncio.sleep(0)  # the writer has taken the batch and queued its _write

    asyncio.run(produce())  # ends the loop: the writer task is cancelled while its _write waits behind the gate

    async def check() -> int:
        try:
            await spool.commit()
            return (await spool.stats()).pending
        finally:
            await spool.aclose()

    assert asyncio.run(check()) == 10


def test_loop_changes_leak_no_connections(receiver: Receiver, tmp_path: Path) -> None:
    sink = SGPSink(api_key="k", account_id="a", base_url=receiver.url)
    spool = Spool(tmp_path / "s.db", sink=sink, config=CONFIG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)

        async def one(i: int) -> None:
            spool.put({"trace_id": "t", "id": f"s{i}", "name": "n", "start_timestamp": "2026-01-01T00:00:00+00:00"})
            assert await spool.flush(10)

        for i in range(3):
            asyncio.run(one(i))
        asyncio.run(spool.aclose())
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
