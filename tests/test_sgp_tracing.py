"""The Scale GP SDK's own tracing routed through a spool (spool.integrations.sgp_tracing)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import scale_gp_beta.lib.tracing as sdk_tracing
from conftest import FAST
from scale_gp_beta.lib.tracing import trace_queue_manager as tqm
from scale_gp_beta.lib.tracing import util as sdk_util

from spool import SGPSink
from spool._spool import Spool
from spool.integrations import sgp_tracing
from spool.testing import Receiver

CONFIG = replace(FAST, flush_interval=0.1, shutdown_timeout=10.0)


@pytest.fixture(autouse=True)
def _fresh_sdk_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with the SDK's tracing uninitialized and enabled, and leaves it so."""
    monkeypatch.delenv("DISABLE_SCALE_TRACING", raising=False)
    _reset_sdk_tracing()
    sdk_util.configure(disabled=False)
    yield
    _reset_sdk_tracing()


def _reset_sdk_tracing() -> None:
    if sgp_tracing._current is not None:
        sgp_tracing._current.shutdown()
    manager = tqm._global_tracing_queue_manager
    if manager is not None:
        manager.shutdown()
    tqm._global_tracing_queue_manager = None
    sdk_util._tracing_disabled = None
    sdk_util.is_disabled.cache_clear()


def _make_trace() -> tuple[str, dict[str, str]]:
    """A trace with a root span, a child and a failing grandchild, made with the SDK's API."""
    ids: dict[str, str] = {}
    with sdk_tracing.create_trace("request", input={"q": "hi"}, metadata={"user": "u1"}) as trace:
        ids["root"] = trace.root_span.span_id
        with sdk_tracing.create_span("retrieve", span_type="RETRIEVAL", input={"k": 3}) as child:
            ids["child"] = child.span_id
            child.output = {"docs": ["a", "b"]}
            with pytest.raises(ValueError), sdk_tracing.create_span("parse", input={"raw": object()}) as leaf:
                ids["leaf"] = leaf.span_id
                raise ValueError("bad doc")
    return trace.trace_id, ids


def test_sdk_spans_reach_the_receiver_through_the_spool(receiver: Receiver, sink: SGPSink, tmp_path: Path) -> None:
    assert "SGP_API_KEY" not in os.environ  # no credentials of its own
    handle = sgp_tracing.init(tmp_path / "sdk.db", sink=sink, config=CONFIG)
    trace_id, ids = _make_trace()
    assert handle.flush(10)
    spans = receiver.spans
    root, child, leaf = (spans[(trace_id, ids[k])] for k in ("root", "child", "leaf"))
    assert root["name"] == "request" and root["type"] == "TRACER" and "parent_id" not in root
    assert root["input"] == {"q": "hi"} and root["metadata"] == {"user": "u1"}
    assert child["parent_id"] == ids["root"] and child["type"] == "RETRIEVAL"
    assert child["output"] == {"docs": ["a", "b"]}
    assert leaf["parent_id"] == ids["child"]
    assert leaf["status"] == "ERROR" and leaf["metadata"]["error_message"] == "bad doc"
    assert leaf["input"]["raw"].startswith("<object object")  # stringified, not lost
    assert all("end_timestamp" in s for s in (root, child, leaf))
    assert handle.dropped == 0 and handle.errors == 0
    handle.shutdown()
    handle.shutdown()  # idempotent


def test_sdk_spans_wait_in_the_file_while_the_backend_is_down(tmp_path: Path) -> None:
    path = tmp_path / "sdk.db"
    with Receiver() as down:
        down.refuse()
        sink = SGPSink(api_key="k", account_id="a", base_url=down.url)
        handle = sgp_tracing.init(path, sink=sink, config=CONFIG)
        trace_id, ids = _make_trace()
        assert handle.flush(0.5) is False
        handle.shutdown(timeout=0.5)

    async def pending() -> int:
        async with Spool(path) as s:
            return (await s.stats()).pending

    assert asyncio.run(pending()) == 3
    with Receiver() as up:

        async def replay() -> bool:
            sink = SGPSink(api_key="k", account_id="a", base_url=up.url)
            async with Spool(path, sink=sink, config=CONFIG) as s:
                return await s.flush(10)

        assert asyncio.run(replay())
        assert set(up.spans) == {(trace_id, i) for i in ids.values()}


def test_init_after_the_sdk_was_initialized_takes_over_its_exporter(
    receiver: Receiver, sink: SGPSink, tmp_path: Path
) -> None:
    sdk_tracing.init(disabled=False)  # the SDK's own init, no client, no credentials
    handle = sgp_tracing.init(tmp_path / "sdk.db", sink=sink, config=CONFIG)
    trace_id, ids = _make_trace()
    assert handle.flush(10)
    assert {k for k in receiver.spans} == {(trace_id, i) for i in ids.values()}


def test_init_twice_replaces_the_spool(receiver: Receiver, sink: SGPSink, tmp_path: Path) -> None:
    first = sgp_tracing.init(tmp_path / "a.db", sink=sink, config=CONFIG)
    second = sgp_tracing.init(tmp_path / "b.db", sink=sink, config=CONFIG)
    assert first.processor.closed and not second.processor.closed
    trace_id, ids = _make_trace()
    assert second.flush(10)
    assert set(receiver.spans) == {(trace_id, i) for i in ids.values()}
    assert first.dropped == 0


def test_sdk_spans_are_delivered_at_interpreter_exit(receiver: Receiver, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import scale_gp_beta.lib.tracing as tracing
        from spool import SGPSink, SpoolConfig
        from spool.integrations import sgp_tracing

        sink = SGPSink(api_key="k", account_id="a", base_url={receiver.url!r})
        sgp_tracing.init({str(tmp_path / "sdk.db")!r}, sink=sink, config=SpoolConfig(flush_interval=60))
        with tracing.create_trace("exit"):
            with tracing.create_span("child"):
                pass
        # no flush, no shutdown: the exit hook exports the SDK's queue and drains the spool
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SGP_", "SPOOL_"))}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert receiver.wait_for(2, timeout=10, ended=True)
