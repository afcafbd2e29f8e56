"""OpenTelemetry: the real SDK (`TracerProvider`, spans with attributes, events, links, status, a resource) through
`SpoolSpanProcessor` and `SpoolSpanExporter` into the real receiver over OTLP/HTTP (and to Scale GP's API), and the
faults: a process killed with SIGKILL, a collector that is down, a 400 for one span, a 401, a partial success."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, poll
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from typer.testing import CliRunner

from spool import OTLPSink, SGPSink, Spool, SpoolConfigError
from spool.cli import _register, app
from spool.otel import SpoolSpanExporter, SpoolSpanProcessor
from spool.testing import Receiver

_register()  # every command on `app`

DOWN = dataclasses.replace(FAST, shutdown_timeout=0.0)  # for spools whose collector is down: close without waiting


@pytest.fixture
def otlp(receiver: Receiver) -> OTLPSink:
    return OTLPSink(receiver.url + "/v1/traces")


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    tp = TracerProvider(resource=Resource.create({"service.name": "checkout", "deployment.environment": "test"}))
    yield tp
    tp.shutdown()


def _trace(provider: TracerProvider) -> dict[str, Any]:
    """A parent with a child that has an event, a link and an error status; returns what was made."""
    tracer = provider.get_tracer("shop.orders", "2.1")
    with tracer.start_as_current_span("place-order", kind=SpanKind.SERVER, attributes={"order.id": 42}) as parent:  # noqa: SIM117
        with tracer.start_as_current_span(
            "charge",
            attributes={"amount": 9.5, "tags": ["a", "b"]},
            links=[Link(parent.get_span_context(), {"why": "x"})],
        ) as child:
            child.add_event("retry", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "card declined"))
    return {"parent": parent, "child": child}


def _ids(span: Any) -> tuple[str, str]:
    ctx = span.get_span_context()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def _attrs(kvs: list[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: next(iter(kv["value"].values())) for kv in kvs}


def _check_otlp(receiver: Receiver, made: dict[str, Any]) -> None:
    spans = receiver.spans
    parent, child = spans[_ids(made["parent"])], spans[_ids(made["child"])]
    assert parent["span"]["name"] == "place-order" and child["span"]["name"] == "charge"
    assert child["span"]["parentSpanId"] == _ids(made["parent"])[1]
    assert "parentSpanId" not in parent["span"]
    assert parent["span"]["kind"] == 2  # SPAN_KIND_SERVER
    assert int(child["span"]["startTimeUnixNano"]) == made["child"].start_time
    assert int(child["span"]["endTimeUnixNano"]) == made["child"].end_time
    assert _attrs(parent["span"]["attributes"]) == {"order.id": "42"}  # int64 in OTLP JSON: a string
    assert _attrs(child["span"]["attributes"])["amount"] == 9.5
    assert child["span"]["events"][0]["name"] == "retry"
    assert child["span"]["links"][0]["spanId"] == _ids(made["parent"])[1]
    assert child["span"]["status"] == {"code": 2, "message": "card declined"}
    resource = _attrs(parent["resource"]["attributes"])
    assert resource["service.name"] == "checkout" and resource["deployment.environment"] == "test"
    assert parent["scope"] == {"name": "shop.orders", "version": "2.1"}


def test_processor_delivers_real_sdk_spans_by_otlp(
    receiver: Receiver, otlp: OTLPSink, provider: TracerProvider, spool_path: Path
) -> None:
    proc = SpoolSpanProcessor(spool_path, sink=otlp, config=FAST)
    provider.add_span_processor(proc)
    made = _trace(provider)
    assert proc.force_flush(20_000)
    _check_otlp(receiver, made)
    stats = proc.stats()
    assert stats is not None and stats.format == "otlp" and stats.pending == 0 and stats.delivered_total == 2
    assert len(receiver.batches) == 1  # both spans in one request, grouped under one resource and scope
    proc.shutdown()
    proc.shutdown()  # twice: fine
    provider.get_tracer("late").start_span("after").end()
    assert proc.dropped == 1


def test_exporter_behind_batch_processor(
    receiver: Receiver, otlp: OTLPSink, provider: TracerProvider, spool_path: Path
) -> None:
    exporter = SpoolSpanExporter(spool_path, sink=otlp, config=FAST)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    made = _trace(provider)
    assert provider.force_flush(20_000)
    assert exporter.force_flush(20_000)
    _check_otlp(receiver, made)


def _pending(path: Path) -> int:
    """Rows pending in the file, read by a connection of its own."""
    from spool._store import Store

    store = Store(path, readonly=True)
    try:
        return store.stats().pending
    finally:
        store.close()


def _spans(provider: TracerProvider, n: int, name: str = "s") -> list[Any]:
    tracer = provider.get_tracer("t")
    out = []
    for i in range(n):
        with tracer.start_as_current_span(f"{name}{i}") as s:
            pass
        out.append(s)
    return out


def test_exporter_success_means_on_disk(tmp_path: Path, provider: TracerProvider) -> None:
    path = tmp_path / "s.db"
    exporter = SpoolSpanExporter(path, sink=OTLPSink("http://127.0.0.1:9/v1/traces"), config=DOWN)
    assert exporter.export(_spans(provider, 5)) is SpanExportResult.SUCCESS
    assert _pending(path) == 5  # committed when export returned: nothing had to be delivered
    exporter.shutdown()
    assert exporter.export(_spans(provider, 1)) is SpanExportResult.FAILURE  # after shutdown: refused, counted
    assert exporter.dropped == 1


_CHILD = textwrap.dedent(
    """
    import sys
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult
    from spool import OTLPSink
    from spool.otel import SpoolSpanExporter

    exporter = SpoolSpanExporter(sys.argv[1], sink=OTLPSink("http://127.0.0.1:9/v1/traces"))
    tracer = TracerProvider().get_tracer("child")
    while True:
        spans = []
        for _ in range(20):
            with tracer.start_as_current_span("work") as s:
                pass
            spans.append(s)
        if exporter.export(spans) is SpanExportResult.SUCCESS:
            print(" ".join(f"{s.context.span_id:016x}" for s in spans), flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_loses_no_span_whose_export_succeeded(tmp_path: Path, receiver: Receiver, otlp: OTLPSink) -> None:
    path = tmp_path / "s.db"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    acked: set[str] = set()
    try:
        while len(acked) < 400:
            line = child.stdout.readline()
            assert line, f"the child exited with {child.wait()}"
            acked.update(line.split())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    import anyio

    async def flush() -> bool:
        async with Spool(path, sink=otlp, config=FAST) as sp:
            return await sp.flush(30)

    assert anyio.run(flush)
    delivered = {span_id for _, span_id in receiver.spans}
    assert acked <= delivered, f"{len(acked - delivered)} acknowledged spans lost"


def test_collector_down_keeps_everything_until_spool_flush(
    tmp_path: Path, provider: TracerProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.db"
    proc = SpoolSpanProcessor(path, sink=OTLPSink("http://127.0.0.1:9/v1/traces"), config=DOWN)
    provider.add_span_processor(proc)
    _spans(provider, 30)
    assert not proc.force_flush(300)  # the collector is down: nothing delivered, nothing lost
    proc.shutdown()
    assert _pending(path) == 30
    stats = CliRunner().invoke(app, ["stats", "--json", "--path", str(path)])
    assert json.loads(stats.stdout)["format"] == "otlp"
    with Receiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.url)
        out = CliRunner().invoke(app, ["flush", "--path", str(path)])
        assert out.exit_code == 0, out.output
        assert len(rx.spans) == 30
    assert _pending(path) == 0


def test_a_400_for_one_span_dead_letters_that_span_only(
    receiver: Receiver, otlp: OTLPSink, provider: TracerProvider, spool_path: Path
) -> None:
    receiver.reject_if = lambda row: "poisoned" if row["span"]["name"] == "s3" else None
    proc = SpoolSpanProcessor(spool_path, sink=otlp, config=FAST)
    provider.add_span_processor(proc)
    _spans(provider, 8)
    assert not proc.force_flush(20_000)  # everything delivered but one span the server refused: False
    assert sorted(row["span"]["name"] for row in receiver.spans.values()) == [f"s{i}" for i in range(8) if i != 3]
    assert proc.force_flush(20_000)  # nothing refused since
    stats = proc.stats()
    assert stats is not None and stats.dead == 1 and stats.pending == 0
    listed = CliRunner().invoke(app, ["dead", "list", "--json", "--path", str(spool_path)])
    assert listed.exit_code == 0, listed.output
    assert [(d["status"], d["name"]) for d in json.loads(listed.stdout)] == [(400, "s3")]


def test_401_pauses_and_keeps(receiver: Receiver, provider: TracerProvider, spool_path: Path) -> None:
    receiver.api_key = "right"
    proc = SpoolSpanProcessor(spool_path, sink=OTLPSink(receiver.url + "/v1/traces"), config=DOWN)
    provider.add_span_processor(proc)
    _spans(provider, 4)
    assert poll(lambda: proc.spool.metrics(gauges=False)["credentials_refused"])
    stats = proc.stats()
    assert stats is not None and stats.pending == 4 and stats.dead == 0
    assert stats.last_error is not None and "credentials refused" in stats.last_error
    proc.shutdown()
    sink = OTLPSink(receiver.url + "/v1/traces", headers={"x-api-key": "right"})
    fixed = SpoolSpanProcessor(spool_path, sink=sink, config=FAST)
    assert fixed.force_flush(20_000)
    assert len(receiver.spans) == 4
    fixed.shutdown()


def test_partial_success_is_counted_not_retried(
    receiver: Receiver, otlp: OTLPSink, provider: TracerProvider, spool_path: Path
) -> None:
    receiver.otlp_partial = True
    receiver.reject_if = lambda row: "too old" if row["span"]["name"] in ("s1", "s2") else None
    proc = SpoolSpanProcessor(spool_path, sink=otlp, config=FAST)
    provider.add_span_processor(proc)
    _spans(provider, 5)
    assert proc.force_flush(20_000)
    assert proc.spool.metrics(gauges=False)["partial_rejected"] == 2
    assert len(receiver.spans) == 3 and receiver.requests == 1
    stats = proc.stats()
    assert stats is not None and stats.pending == 0 and stats.dead == 0


def test_otel_spans_to_scale_gp(receiver: Receiver, provider: TracerProvider, spool_path: Path) -> None:
    sink = SGPSink(api_key="k", account_id="a", base_url=receiver.url)
    proc = SpoolSpanProcessor(spool_path, sink=sink, config=FAST)
    provider.add_span_processor(proc)
    tracer = provider.get_tracer("llm")
    with (
        tracer.start_as_current_span("agent") as parent,
        tracer.start_as_current_span(
            "chat",
            attributes={
                "input.value": '{"question": "hi"}',
                "output.value": "hello",
                "gen_ai.system": "x",
                "tags": ("a", "b"),
            },
        ) as child,
    ):
        child.set_status(Status(StatusCode.ERROR, "rate limited"))
    with tracer.start_as_current_span(
        "genai", attributes={"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "q"}
    ):
        pass
    assert proc.force_flush(20_000)
    items = {item["name"]: item for item in receiver.spans.values()}
    chat = items["chat"]
    assert (chat["trace_id"], chat["id"]) == _ids(child)
    assert chat["parent_id"] == _ids(parent)[1] and items["agent"]["parent_id"] is None
    assert chat["input"] == {"question": "hi"} and chat["output"] == {"value": "hello"}
    assert chat["status"] == "ERROR" and chat["metadata"]["error_message"] == "rate limited"
    assert chat["metadata"]["gen_ai.system"] == "x" and chat["metadata"]["tags"] == ["a", "b"]
    assert chat["metadata"]["otel.resource"]["service.name"] == "checkout"
    assert chat["start_timestamp"].endswith("+00:00")
    assert items["genai"]["input"] == {"messages": [{"role": "user", "content": "q"}]}
    for key in ("input.value", "output.value"):  # moved to input/output, not copied: a prompt is stored once
        assert key not in chat["metadata"]
    assert not any(k.startswith("gen_ai.prompt.") for k in items["genai"]["metadata"])
    assert proc.stats().format == "sgp"  # type: ignore[union-attr]
    proc.shutdown()


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"openinference.span.kind": "LLM"}, "COMPLETION"),
        ({"openinference.span.kind": "TOOL"}, "CODE_EXECUTION"),
        ({"openinference.span.kind": "AGENT"}, "AGENT_WORKFLOW"),
        ({"openinference.span.kind": "RETRIEVER"}, "KB_RETRIEVAL"),
        ({"openinference.span.kind": "RERANKER"}, "RERANKING"),
        ({"openinference.span.kind": "GUARDRAIL"}, "GUARDRAIL"),
        ({"openinference.span.kind": "EVALUATOR"}, "EVALUATION"),
        ({"openinference.span.kind": "CHAIN"}, "STANDALONE"),
        ({"openinference.span.kind": "TOOL", "gen_ai.operation.name": "chat"}, "CODE_EXECUTION"),  # OpenInference first
        ({"gen_ai.operation.name": "chat"}, "COMPLETION"),
        ({"gen_ai.operation.name": "text_completion"}, "COMPLETION"),
        ({"gen_ai.operation.name": "generate_content"}, "COMPLETION"),
        ({"gen_ai.operation.name": "execute_tool"}, "CODE_EXECUTION"),
        ({"gen_ai.operation.name": "invoke_agent"}, "AGENT_WORKFLOW"),
        ({"gen_ai.operation.name": "create_agent"}, "AGENT_WORKFLOW"),
        ({"gen_ai.operation.name": "embeddings"}, "STANDALONE"),
        ({"http.method": "GET"}, None),
    ],
)
def test_otel_spans_to_scale_gp_are_typed(
    attributes: dict[str, str], expected: str | None, receiver: Receiver, provider: TracerProvider, spool_path: Path
) -> None:
    """The Scale GP type, from OpenInference's span kind or the GenAI operation, through `SGPSink` to the receiver;
    each is one of the API's span types (`scale_gp_beta.types.SpanType`)."""
    from typing import get_args

    from scale_gp_beta.types.span_type import SpanType

    assert expected is None or expected in get_args(SpanType)
    sink = SGPSink(api_key="k", account_id="a", base_url=receiver.url)
    proc = SpoolSpanProcessor(spool_path, sink=sink, config=FAST)
    provider.add_span_processor(proc)
    with provider.get_tracer("t").start_as_current_span("s", attributes=attributes):
        pass
    assert proc.force_flush(20_000)
    (item,) = receiver.spans.values()
    assert item.get("type") == expected
    proc.shutdown()


def test_a_file_of_the_other_format_is_a_config_error(tmp_path: Path, receiver: Receiver) -> None:
    path = tmp_path / "s.db"
    proc = SpoolSpanProcessor(path, sink=SGPSink(api_key="k", account_id="a", base_url=receiver.url), config=FAST)
    proc.shutdown()
    with pytest.raises(SpoolConfigError, match=r"holds sgp spans.*OTLPSink|holds sgp spans.*SGPSink"):
        SpoolSpanProcessor(path, sink=OTLPSink(receiver.url + "/v1/traces"))


def test_export_import_round_trip(tmp_path: Path, provider: TracerProvider) -> None:
    path = tmp_path / "s.db"
    exporter = SpoolSpanExporter(path, sink=OTLPSink("http://127.0.0.1:9/v1/traces"), config=DOWN)
    made = _trace(provider)
    exporter.export([made["parent"], made["child"]])
    exporter.shutdown()
    runner = CliRunner()
    out = tmp_path / "spans.jsonl"
    assert runner.invoke(app, ["export", str(out), "--path", str(path)]).exit_code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["span"]["name"] for line in lines} == {"place-order", "charge"}
    assert all(len(line["span"]["traceId"]) == 32 for line in lines)
    back = runner.invoke(app, ["import", str(out), "--path", str(tmp_path / "new.db")])
    assert back.exit_code == 0, back.output
    assert "2 new" in back.stdout
    again = tmp_path / "again.jsonl"
    assert runner.invoke(app, ["export", str(again), "--path", str(tmp_path / "new.db")]).exit_code == 0
    assert again.read_text() == out.read_text()
    wrong = runner.invoke(app, ["import", str(out), "--path", str(tmp_path / "sgp.db")])
    assert wrong.exit_code == 0  # a new file takes the lines' format
    sgp_line = tmp_path / "sgp.jsonl"
    sgp_line.write_text(
        json.dumps({"trace_id": "t", "id": "i", "name": "n", "start_timestamp": "2026-01-01T00:00:00Z"})
    )
    refused = runner.invoke(app, ["import", str(sgp_line), "--path", str(tmp_path / "new.db")])
    assert refused.exit_code != 0 and "holds otlp spans" in refused.output


def test_receiver_takes_otlp_json(receiver: Receiver) -> None:
    import httpx

    trace, span = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "curl"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "manual"},
                        "spans": [
                            {
                                "traceId": trace,
                                "spanId": span,
                                "name": "hello",
                                "kind": 1,
                                "startTimeUnixNano": "1",
                                "endTimeUnixNano": "2",
                            }
                        ],
                    }
                ],
            }
        ]
    }
    resp = httpx.post(receiver.url + "/v1/traces", json=doc)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert receiver.spans[(trace, span)]["span"]["name"] == "hello"
    bad = httpx.post(
        receiver.url + "/v1/traces", content=b"\xff\xff", headers={"content-type": "application/x-protobuf"}
    )
    assert bad.status_code == 400


@pytest.mark.parametrize("command", [["stats"], ["stats", "--json"], ["dead", "list"], ["check"]])
def test_commands_that_send_no_otlp_import_no_opentelemetry(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "s.db"
    exporter = SpoolSpanExporter(path, sink=OTLPSink("http://127.0.0.1:9/v1/traces"), config=DOWN)
    exporter.export(_spans(TracerProvider(), 3))
    exporter.shutdown()
    code = (
        "import sys; from spool.cli import main;"
        f"sys.argv = ['spool', *{command!r}, '--path', {str(path)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'google.protobuf')))\n"
        "print(bad, code); sys.exit(1 if bad or code else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    if command == ["stats"]:
        assert "otlp" in done.stdout


def test_import_spool_stays_free_of_opentelemetry() -> None:
    code = (
        "import sys, spool; spool.OTLPSink; spool.Spool; spool.SGPSink;"
        "from spool.cli import app;"
        "bad = sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'google.protobuf')));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_otlp_spool_refuses_sgp_items_and_dead_letters_a_broken_row(
    tmp_path: Path, receiver: Receiver, otlp: OTLPSink, provider: TracerProvider
) -> None:
    import anyio

    from spool._items import Encoded
    from spool._otlpencode import OTLPEncoder
    from spool._store import Store

    path = tmp_path / "s.db"
    store = Store(path, FAST)
    store.claim_format("otlp")
    encode = OTLPEncoder().encode
    store.append([encode(s) for s in _spans(provider, 3)] + [Encoded("t" * 32, "s" * 16, True, b"\xff\xfe not otlp")])
    store.close()

    async def go() -> tuple[bool, Any]:
        async with Spool(path, sink=otlp, config=FAST) as sp:
            with pytest.raises(ValueError, match="otlp spool"):
                sp.put({"trace_id": "t", "id": "i", "name": "n", "start_timestamp": "2026-01-01T00:00:00Z"})
            return await sp.flush(30), await sp.stats()

    ok, stats = anyio.run(go)
    assert ok and stats.dead == 1 and stats.pending == 0
    assert len(receiver.spans) == 3


def test_the_fronts_count_and_ignore_what_is_not_a_span(spool_path: Path, otlp: OTLPSink) -> None:
    """The contract: never raise into the application, whatever it hands over."""
    proc = SpoolSpanProcessor(spool_path, sink=otlp, config=FAST)
    for garbage in (None, object(), 5, "span"):
        proc.on_end(garbage)  # type: ignore[arg-type]
    assert proc.force_flush(None) is True  # type: ignore[arg-type]  # (the default timeout)
    assert proc.dropped == 4
    proc.shutdown()
    exporter = SpoolSpanExporter(spool_path.with_name("e.db"), sink=otlp, config=FAST)
    for garbage in (None, 5, [None]):
        assert exporter.export(garbage) == SpanExportResult.FAILURE  # type: ignore[arg-type]
    assert exporter.export([]) == SpanExportResult.SUCCESS
    assert exporter.dropped == 3
    exporter.shutdown()


_NO_OTEL = "import sys; sys.modules.update(dict.fromkeys(['opentelemetry', 'google', 'google.protobuf']))\n"
"""A child's first line: the `otel` extra is not installed (importing it raises `ModuleNotFoundError`)."""


def _without_otel(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _NO_OTEL + textwrap.dedent(code)], capture_output=True, text=True)


def test_without_the_otel_extra_every_otlp_path_names_it(tmp_path: Path, receiver: Receiver) -> None:
    path = tmp_path / "s.db"
    exporter = SpoolSpanExporter(path, sink=OTLPSink("http://127.0.0.1:9/v1/traces"), config=DOWN)
    exporter.export(_spans(TracerProvider(), 3))
    exporter.shutdown()
    lines = tmp_path / "otlp.jsonl"
    assert CliRunner().invoke(app, ["export", str(lines), "--path", str(path)]).exit_code == 0
    extra = "pip install 'span-spool[otel]'"
    imported = _without_otel(
        """
        try:
            import spool.otel
        except ImportError as exc:
            print(type(exc).__name__, exc)
        """
    )
    assert imported.stdout.startswith("MissingExtraError spool.otel needs the otel extra") and extra in imported.stdout
    for args in (["export", "-", "--path", str(path)], ["import", str(lines), "--path", str(tmp_path / "new.db")]):
        cli = _without_otel(f"from spool.cli import main; sys.argv = ['spool', *{args!r}]; main()")
        assert cli.returncode == 2, cli.stderr
        assert cli.stderr.startswith("Error: OTLP spans in JSON need the otel extra") and extra in cli.stderr
        assert cli.stderr.count("\n") == 1 and "Traceback" not in cli.stderr
    served = _without_otel(
        """
        import httpx
        from spool.testing import Receiver
        with Receiver() as rx:
            r = httpx.post(rx.url + "/v1/traces", content=b"", headers={"content-type": "application/x-protobuf"})
        print(r.status_code, r.json()["detail"])
        """
    )
    assert served.stdout.startswith("501 OTLP spans in JSON need the otel extra"), served.stdout + served.stderr


def test_receiver_out_writes_one_format_per_file_that_import_takes_back(tmp_path: Path) -> None:
    import httpx

    from spool._receiver import otlp_out

    out = tmp_path / "captured.jsonl"
    with Receiver(out=str(out)) as rx:
        sgp = SGPSink(api_key="k", account_id="a", base_url=rx.url)
        sgp.send_blocking([json.dumps(_sgp_item()).encode()], timeout=10)
        sgp.close()
        exporter = SpoolSpanExporter(tmp_path / "o.db", sink=OTLPSink(rx.url + "/v1/traces"), config=FAST)
        exporter.export(_spans(TracerProvider(), 2))
        assert exporter.force_flush(10_000)
        exporter.shutdown()
        assert httpx.get(rx.url + "/_stats").json()["spans"] == 3
    assert otlp_out(out) == str(tmp_path / "captured.otlp.jsonl")
    assert len(out.read_text().splitlines()) == 1 and len(Path(otlp_out(out)).read_text().splitlines()) == 2
    for src, n in ((out, 1), (Path(otlp_out(out)), 2)):
        r = CliRunner().invoke(app, ["import", str(src), "--path", str(tmp_path / f"{src.stem}.db")])
        assert r.exit_code == 0 and f"{n} new, 0 updated, 0 unchanged, 0 skipped" in r.stdout, r.output


def _sgp_item() -> dict[str, str]:
    return {"trace_id": "t", "id": "s", "name": "n", "start_timestamp": "2026-11-28T10:00:00Z"}
