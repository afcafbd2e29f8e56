"""Make the OpenAI Agents SDK's traces durable (`openai-agents`; `pip install 'span-spool[openai-agents]'`).

`SpoolAgentsProcessor(path=None, sink=None, config=None, *, redact=None)` is a `TracingProcessor` of the SDK in front
of a spool; `install(...)` makes it the SDK's only one (`set_trace_processors`), in place of the default
`BatchTraceProcessor`, which holds up to 8,192 items in memory and drops what is still queued 5 s into the exit.
To keep OpenAI's own dashboard as well, add it instead: `agents.add_trace_processor(SpoolAgentsProcessor())`.

Shaped as the Scale GP SDK's own integration (`scale_gp_beta.lib.tracing.integrations.openai`, whose functions this
uses): a trace becomes a root span (id: the trace id, type `AGENT_WORKFLOW`, its group id, `openai_metadata`), each
span an item typed by that integration's map (generation/response -> `COMPLETION`, agent -> `AGENT_WORKFLOW`, function
-> `CODE_EXECUTION`, handoff/custom/others -> `CUSTOM`, guardrail/speech/transcription/MCP -> `STANDALONE`), with its
input, output and metadata, and an error as `status: ERROR` with its message. With an `OTLPSink` (an `otlp` spool),
OTLP spans with the OpenTelemetry GenAI attributes instead.

Durable once the group commit after `on_span_end` passed (`commit_interval`, 5 ms by default): nothing is held in
memory in front of the spool but a trace's start time. A start is stored too (`sgp`), so a span still open when the
process dies is kept as a start. Works from sync and async code (the spool runs on a loop thread of its own); no
method raises into the agent: what cannot be stored is counted in `dropped`.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agents.tracing import Span, Trace, TracingProcessor, set_trace_processors

from .._config import SpoolConfig
from .._formats import format_named
from .._host import Redact, ThreadHost
from .._sink import SGPSink

if TYPE_CHECKING:
    from .._sink import Sink
    from .._spool import Spool
    from .._stats import SpoolStats

__all__ = ["SpoolAgentsProcessor", "install"]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class SpoolAgentsProcessor(TracingProcessor):
    """The SDK's tracing interface in front of a `spool._host.ThreadHost`. `sink=None`: `SGPSink()` from the
    environment (the constructor raises `SpoolConfigError` without credentials)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        sink: Sink | None = None,
        config: SpoolConfig | None = None,
        *,
        redact: Redact | None = None,
    ) -> None:
        self._host = ThreadHost(path, sink if sink is not None else SGPSink(), config, redact)
        fmt = format_named(self._host.spool.format)
        self._otel = None if fmt.takes_items else fmt.otel_writer(self._host.spool)  # (an otlp spool: OTel spans)
        self._started: dict[str, str] = {}  # trace id -> its start (the SDK's Trace carries none)
        self._lock = threading.Lock()

    @property
    def dropped(self) -> int:
        """Traces and spans that did not make it into the spool."""
        return self._host.dropped

    @property
    def spool(self) -> Spool:
        """The underlying spool."""
        return self._host.spool

    # -- the SDK's interface (never raises) ----------------------------------------------------------------------

    def on_trace_start(self, trace: Trace) -> None:
        self._guard("a trace start", lambda: self._trace(trace, end=False))

    def on_trace_end(self, trace: Trace) -> None:
        self._guard("a trace end", lambda: self._trace(trace, end=True))

    def on_span_start(self, span: Span[Any]) -> None:
        if self._otel is None:  # (OTLP stores finished spans only)
            self._guard("a span start", lambda: self._host.put(_span_item(span, end=False)))

    def on_span_end(self, span: Span[Any]) -> None:
        if self._otel is not None:
            write = self._otel
            self._guard("a span end", lambda: write(_otel_span(span)))
        else:
            self._guard("a span end", lambda: self._host.put(_span_item(span, end=True)))

    def force_flush(self) -> None:
        """Commit, then deliver what can be delivered within 30 s."""
        self._host.flush(30)

    def shutdown(self) -> None:
        """Commit, deliver for up to `shutdown_timeout`, keep the rest on disk, close. Safe twice."""
        self._host.shutdown()

    def stats(self) -> SpoolStats | None:
        return self._host.stats()

    def _guard(self, what: str, store: Callable[[], object]) -> None:
        if self._host.closed:
            self._host.refuse()
            return
        try:
            store()
        except Exception as exc:
            self._host.fail(f"storing {what}", exc, dropped=1)

    def _trace(self, trace: Trace, end: bool) -> None:
        with self._lock:
            start = self._started.pop(trace.trace_id, None) if end else self._started.setdefault(trace.trace_id, _now())
        start = start or _now()
        if self._otel is not None:
            if end:
                self._otel(_otel_trace(trace, start))
            return
        item: dict[str, Any] = {
            "trace_id": trace.trace_id,
            "id": trace.trace_id,
            "name": trace.name or "Agent Workflow",
            "type": "AGENT_WORKFLOW",
            "start_timestamp": start,
            "metadata": {"openai_metadata": getattr(trace, "metadata", None) or {}},
            "status": "SUCCESS",
        }
        if group := getattr(trace, "group_id", None):
            item["group_id"] = group
        if end:
            item["end_timestamp"] = _now()
        self._host.put(item)


def install(
    path: str | os.PathLike[str] | None = None,
    sink: Sink | None = None,
    config: SpoolConfig | None = None,
    *,
    redact: Redact | None = None,
) -> SpoolAgentsProcessor:
    """Make a `SpoolAgentsProcessor` the SDK's only trace processor (its default in-memory exporter is replaced);
    returns it. Raises what the constructor raises."""
    processor = SpoolAgentsProcessor(path, sink, config, redact=redact)
    set_trace_processors([processor])
    return processor


# -- Scale GP items, as the Scale GP SDK's own integration shapes them ------------------------------------------------


def _span_item(span: Span[Any], end: bool) -> dict[str, Any]:
    from scale_gp_beta.lib.tracing.integrations.openai.openai_span_type_map import openai_span_type_map
    from scale_gp_beta.lib.tracing.integrations.openai.utils import (  # type: ignore[attr-defined]  # (untyped)
        extract_response,
        parse_input_output,
        parse_metadata,
        sgp_span_name,
    )

    data = span.span_data
    item: dict[str, Any] = {
        "trace_id": span.trace_id,
        "id": span.span_id,
        "parent_id": span.parent_id or span.trace_id,
        "name": sgp_span_name(span),
        "type": openai_span_type_map(data.type if data else None),
        "start_timestamp": span.started_at or _now(),
    }
    if not end:
        return item
    item["end_timestamp"] = span.ended_at or _now()
    if data is not None and data.type == "response":
        response = extract_response(span)
        item["input"] = {"input": getattr(data, "input", None)}
        item["output"] = {"output": response.get("output") if response else None}
    else:
        item["input"] = parse_input_output(span, "input")
        item["output"] = parse_input_output(span, "output")
    metadata = parse_metadata(span)
    item["status"] = "SUCCESS"
    if span.error:
        item["status"] = "ERROR"
        metadata.update(error=True, error_type=None, error_message=str(span.error), error_category="unknown")
    item["metadata"] = metadata
    return item


# -- OTLP spans with the GenAI semantic conventions -----------------------------------------------------------------

_OPERATION = {
    "generation": "chat",
    "response": "chat",
    "function": "execute_tool",
    "agent": "invoke_agent",
}


def _ns(iso: str | None) -> int:
    when = dt.datetime.fromisoformat(iso) if iso else dt.datetime.now(dt.UTC)
    return int(when.timestamp() * 1e9)


def _hex_id(sdk_id: str, bits: int) -> int:
    """An OTel id from the SDK's `trace_<32 hex>` / `span_<24 hex>` (its leading hex digits)."""
    digits = sdk_id.rsplit("_", 1)[-1]
    try:
        return int(digits[: bits // 4], 16) or 1
    except ValueError:
        return (hash(sdk_id) & ((1 << bits) - 1)) or 1


def _json(value: Any) -> str:
    import orjson

    from .._mapping import jsonable

    return orjson.dumps(jsonable(value)).decode()


def _readable(
    name: str,
    trace_id: str,
    span_id: int,
    parent: int | None,
    start: int,
    end: int,
    attrs: dict[str, Any],
    error: str | None,
) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    tid = _hex_id(trace_id, 128)
    context = SpanContext(tid, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    parent_ctx = SpanContext(tid, parent, is_remote=False) if parent is not None else None
    return ReadableSpan(
        name,
        context=context,
        parent=parent_ctx,
        resource=Resource.create({}),
        attributes={k: v for k, v in attrs.items() if v is not None},
        kind=SpanKind.INTERNAL,
        status=Status(StatusCode.ERROR, error) if error else Status(StatusCode.OK),
        start_time=start,
        end_time=end,
        instrumentation_scope=InstrumentationScope("openai-agents"),
    )


def _otel_trace(trace: Trace, start: str) -> Any:
    attrs = {
        "gen_ai.system": "openai",
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.conversation.id": getattr(trace, "group_id", None),
    }
    root = _hex_id(trace.trace_id, 64)
    return _readable(trace.name or "Agent Workflow", trace.trace_id, root, None, _ns(start), _ns(None), attrs, None)


def _otel_span(span: Span[Any]) -> Any:
    data = span.span_data
    kind = data.type if data else "custom"
    exported = data.export() if data else {}
    attrs: dict[str, Any] = {"gen_ai.system": "openai", "gen_ai.operation.name": _OPERATION.get(kind, kind)}
    if kind == "generation":
        attrs["gen_ai.request.model"] = exported.get("model")
        usage = exported.get("usage") or {}
        attrs["gen_ai.usage.input_tokens"] = usage.get("input_tokens")
        attrs["gen_ai.usage.output_tokens"] = usage.get("output_tokens")
        attrs["gen_ai.input.messages"] = _json(exported.get("input"))
        attrs["gen_ai.output.messages"] = _json(exported.get("output"))
    elif kind == "response":
        attrs["gen_ai.response.id"] = exported.get("response_id")
    elif kind == "function":
        attrs["gen_ai.tool.name"] = exported.get("name")
        attrs["gen_ai.tool.call.arguments"] = exported.get("input")
        attrs["gen_ai.tool.call.result"] = exported.get("output")
    elif kind == "agent":
        attrs["gen_ai.agent.name"] = exported.get("name")
    else:
        attrs["openai.agents.span_data"] = _json(exported)
    root = _hex_id(span.trace_id, 64)
    parent = _hex_id(span.parent_id, 64) if span.parent_id else root
    name = str(exported.get("name") or kind)
    error = str(span.error) if span.error else None
    start, end = _ns(span.started_at), _ns(span.ended_at)
    return _readable(name, span.trace_id, _hex_id(span.span_id, 64), parent, start, end, attrs, error)
