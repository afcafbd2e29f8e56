"""`spool.integrations.openai_agents` with the real `openai-agents` package: traces and spans made with its tracing
API (no model is called), through `install()`, into a real spool file and out through a sink."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agents.tracing import (
    agent_span,
    custom_span,
    function_span,
    generation_span,
    get_trace_provider,
    guardrail_span,
    handoff_span,
    response_span,
    set_trace_processors,
    trace,
)
from conftest import FAST

from spool.integrations.openai_agents import SpoolAgentsProcessor, install
from spool.redact import REDACTED, scrub
from spool.testing import MemorySink, Receiver


@pytest.fixture(autouse=True)
def _restore_the_sdks_processors() -> Iterator[None]:
    before = get_trace_provider()._multi_processor._processors
    yield
    set_trace_processors(list(before))


def _workflow() -> None:
    """One agent run's worth of spans, of every kind the SDK has, one of them failing."""
    with (
        trace("Booking workflow", group_id="conv-7", metadata={"user": "u-1"}),
        agent_span(name="travel-agent", tools=["lookup"]),
    ):
        with generation_span(
            input=[{"role": "user", "content": "a train to Lyon"}],
            output=[{"role": "assistant", "content": "07:56"}],
            model="gpt-4o",
            usage={"input_tokens": 12, "output_tokens": 3},
        ):
            pass
        with function_span(name="lookup", input='{"city": "Lyon"}', output='{"temp": 14}'):
            pass
        with response_span():
            pass
        with handoff_span(from_agent="travel-agent", to_agent="payments"):
            pass
        with guardrail_span(name="no-pii", triggered=False):
            pass
        with custom_span(name="ranking", data={"k": 3}) as failing:
            failing.set_error({"message": "ranker timed out", "data": {"after_s": 5}})


def test_install_replaces_the_sdks_exporter_and_every_span_lands_typed(tmp_path: Path) -> None:
    sink = MemorySink()
    processor = install(tmp_path / "agents.db", sink=sink, config=FAST)
    assert get_trace_provider()._multi_processor._processors == (processor,)  # the in-memory exporter is gone
    _workflow()
    processor.force_flush()
    processor.shutdown()
    items = {i["name"]: i for i in sink.items()}
    assert {name: i["type"] for name, i in items.items()} == {
        "Booking workflow": "AGENT_WORKFLOW",
        "travel-agent": "AGENT_WORKFLOW",
        "Generation": "COMPLETION",
        "lookup": "CODE_EXECUTION",
        "Response": "COMPLETION",
        "Handoff": "CUSTOM",
        "no-pii": "STANDALONE",
        "ranking": "CUSTOM",
    }
    root = items["Booking workflow"]
    assert root["id"] == root["trace_id"] and root["group_id"] == "conv-7" and "end_timestamp" in root
    assert root["metadata"] == {"openai_metadata": {"user": "u-1"}}
    assert items["travel-agent"]["parent_id"] == root["id"]
    assert items["lookup"]["parent_id"] == items["travel-agent"]["id"]
    assert items["lookup"]["input"] == {"city": "Lyon"} and items["lookup"]["output"] == {"temp": 14}
    assert items["Generation"]["input"] == {"input": [{"role": "user", "content": "a train to Lyon"}]}
    assert items["Generation"]["metadata"]["openai_metadata"]["model"] == "gpt-4o"
    assert items["ranking"]["status"] == "ERROR" and "ranker timed out" in items["ranking"]["metadata"]["error_message"]
    assert all(i["status"] == "SUCCESS" for n, i in items.items() if n != "ranking")
    assert processor.dropped == 0


def test_with_an_otlp_sink_the_spans_carry_the_genai_attributes(tmp_path: Path) -> None:
    from spool._otlpcodec import row_to_json

    sink = MemorySink("otlp")
    processor = install(tmp_path / "agents-otlp.db", sink=sink, config=FAST)
    _workflow()
    processor.force_flush()
    processor.shutdown()
    spans = [row_to_json(b)["span"] for b in sink.bodies]
    attrs = {s["name"]: {a["key"]: a["value"] for a in s.get("attributes", [])} for s in spans}
    assert len(spans) == 8
    assert attrs["Booking workflow"]["gen_ai.operation.name"] == {"stringValue": "invoke_agent"}
    assert attrs["travel-agent"]["gen_ai.agent.name"] == {"stringValue": "travel-agent"}
    gen = attrs["generation"]
    assert gen["gen_ai.operation.name"] == {"stringValue": "chat"}
    assert gen["gen_ai.request.model"] == {"stringValue": "gpt-4o"}
    assert gen["gen_ai.usage.input_tokens"] == {"intValue": "12"}
    assert attrs["lookup"]["gen_ai.tool.name"] == {"stringValue": "lookup"}
    by_name = {s["name"]: s for s in spans}
    assert by_name["ranking"]["status"]["code"] == 2  # ERROR
    assert by_name["lookup"]["parentSpanId"] == by_name["travel-agent"]["spanId"]
    assert len({s["traceId"] for s in spans}) == 1


def test_redact_applies_before_the_disk(tmp_path: Path) -> None:
    sink = MemorySink()
    processor = SpoolAgentsProcessor(tmp_path / "a.db", sink=sink, config=FAST, redact=scrub())
    set_trace_processors([processor])
    with trace("w"), function_span(name="login", input='{"password": "hunter2-secret"}', output="ok"):
        pass
    processor.force_flush()
    processor.shutdown()
    login = next(i for i in sink.items() if i["name"] == "login")
    assert login["input"] == {"password": REDACTED}
    assert b"hunter2" not in b"".join(p.read_bytes() for p in tmp_path.glob("a.db*"))


def test_a_processor_that_cannot_store_counts_and_never_raises(tmp_path: Path) -> None:
    processor = SpoolAgentsProcessor(tmp_path / "a.db", sink=MemorySink(), config=FAST)
    processor.shutdown()
    set_trace_processors([processor])
    with trace("after shutdown"), custom_span(name="late"):
        pass
    assert processor.dropped == 4  # a trace's start and end, a span's start and end


@pytest.mark.slow
def test_a_kill_9_right_after_the_last_span_end_and_the_commit_linger_loses_nothing(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Nothing is held in memory in front of the spool (the Scale GP SDK's own route holds spans ~4 s: a kill at 1 s
    lost 16 of 16)."""
    path = tmp_path / "killed.db"
    child = textwrap.dedent(
        f"""
        import os, signal, sqlite3, time
        from agents.tracing import trace, function_span
        from spool import SGPSink, SpoolConfig
        from spool.integrations.openai_agents import install

        p = install({str(path)!r}, sink=SGPSink("k", "a", "http://127.0.0.1:9"), config=SpoolConfig())
        with trace("warm-up"), function_span(name="warm-up"):  # imports and threads settle first
            pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the warm-up trace and span on disk
            with sqlite3.connect({str(path)!r}) as db:
                if db.execute("SELECT count(*) FROM spans").fetchone()[0] >= 2:
                    break
            time.sleep(0.01)
        with trace("w"):
            for i in range(50):
                with function_span(name=f"tool-{{i}}", input="{{}}", output="ok"):
                    pass
        time.sleep(0.25)  # the commit linger (commit_interval: 5 ms) and the commit, with room
        print("ended", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL and "ended" in done.stdout, done.stderr
    env = {**os.environ, "SGP_API_KEY": "k", "SGP_ACCOUNT_ID": "a", "SGP_CLIENT_BASE_URL": receiver.url}
    flush = subprocess.run(
        [sys.executable, "-m", "spool", "flush", "--path", str(path), "--timeout", "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert flush.returncode == 0, flush.stdout + flush.stderr
    got: dict[str, Any] = {s["name"]: s for s in receiver.spans.values()}
    assert {f"tool-{i}" for i in range(50)} <= set(got)
    assert all("end_timestamp" in got[f"tool-{i}"] for i in range(50))  # the ends, not the starts
    assert got["w"]["type"] == "AGENT_WORKFLOW" and "end_timestamp" in got["w"]
