"""The OTLP encoder against protobuf's own serializer (differential, over generated spans, resources and scopes),
and the OTLP JSON mapping both ways (spool._otlpcodec)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, SpanKind, StatusCode
from opentelemetry.trace import Status as OtelStatus

from spool._otlpcodec import row_from_json, row_to_json
from spool._otlpencode import OTLPEncoder, encode_span


def _pb_value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, str):
        return AnyValue(string_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, dict):
        return AnyValue(kvlist_value=KeyValueList(values=_pb_attrs(v)))
    return AnyValue(array_value=ArrayValue(values=[_pb_value(x) for x in v]))


def _pb_attrs(attrs: Any) -> list[KeyValue]:
    return [KeyValue(key=k, value=_pb_value(v)) for k, v in (attrs or {}).items()]


def reference(span: Any) -> bytes:
    """What protobuf's classes serialize for the span (the official exporter's field choices)."""
    ctx, parent = span.context, span.parent
    remote = 0x200 if parent is not None and parent.is_remote else 0
    return Span(
        trace_id=ctx.trace_id.to_bytes(16, "big"),
        span_id=ctx.span_id.to_bytes(8, "big"),
        trace_state=",".join(f"{k}={v}" for k, v in ctx.trace_state.items()),
        parent_span_id=parent.span_id.to_bytes(8, "big") if parent else b"",
        flags=int(ctx.trace_flags) | 0x100 | remote,
        name=span.name,
        kind=span.kind.value + 1,  # type: ignore[arg-type]
        start_time_unix_nano=span.start_time,
        end_time_unix_nano=span.end_time,
        attributes=_pb_attrs(span.attributes),
        dropped_attributes_count=span.dropped_attributes,
        events=[
            Span.Event(time_unix_nano=e.timestamp, name=e.name, attributes=_pb_attrs(e.attributes)) for e in span.events
        ],
        dropped_events_count=span.dropped_events,
        links=[
            Span.Link(
                trace_id=link.context.trace_id.to_bytes(16, "big"),
                span_id=link.context.span_id.to_bytes(8, "big"),
                attributes=_pb_attrs(link.attributes),
                flags=int(link.context.trace_flags) | 0x100,
            )
            for link in span.links
        ],
        dropped_links_count=span.dropped_links,
        status=Status(code=span.status.status_code.value, message=span.status.description or ""),  # type: ignore[arg-type]
    ).SerializeToString()


_scalar = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
_value = st.one_of(_scalar, st.lists(st.text(max_size=5), max_size=3), st.lists(st.integers(0, 9), max_size=3))
_attrs = st.dictionaries(st.text(min_size=1, max_size=10), _value, max_size=6)
_provider = TracerProvider(resource=Resource.create({"service.name": "diff"}))


def _text_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=150, deadline=None)
@given(
    name=st.text(max_size=30).filter(_text_ok),
    attrs=_attrs.filter(lambda a: all(_text_ok(k) and (not isinstance(v, str) or _text_ok(v)) for k, v in a.items())),
    kind=st.sampled_from(list(SpanKind)),
    events=st.integers(0, 2),
    error=st.sampled_from([None, "", "boom"]),
    child=st.booleans(),
)
def test_encode_span_writes_what_protobuf_writes(
    name: str, attrs: dict[str, Any], kind: SpanKind, events: int, error: str | None, child: bool
) -> None:
    tracer = _provider.get_tracer("diff")
    with tracer.start_as_current_span("parent") as parent:
        span = tracer.start_span(name, kind=kind, attributes=attrs, links=[Link(parent.get_span_context(), attrs)])
        for i in range(events):
            span.add_event(f"e{i}", attrs)
        if error is not None:
            span.set_status(OtelStatus(StatusCode.ERROR, error))
        span.end()
    target = span if child else parent
    assert encode_span(target) == reference(target)


def test_rows_to_otlp_json_and_back() -> None:
    tracer = _provider.get_tracer("lib", "1.2")
    with tracer.start_as_current_span("op", attributes={"n": 7, "s": "x", "f": 0.5, "b": False, "l": ("a", "b")}) as s:
        s.add_event("ev")
    row = OTLPEncoder().encode(s)
    assert ResourceSpans.FromString(row.body).scope_spans[0].spans[0].name == "op"
    line = row_to_json(row.body)
    assert line["span"]["traceId"] == row.trace_id and line["span"]["spanId"] == row.span_id
    assert line["scope"] == {"name": "lib", "version": "1.2"}
    assert row_from_json(line) == row  # the same key and the same bytes back


@settings(max_examples=80, deadline=None)
@given(
    attrs=_attrs.filter(lambda a: all(_text_ok(k) and (not isinstance(v, str) or _text_ok(v)) for k, v in a.items())),
    name=st.text(max_size=10).filter(_text_ok),
    version=st.sampled_from(["", "1.0"]),
)
def test_resource_and_scope_heads_are_what_protobuf_writes(attrs: dict[str, Any], name: str, version: str) -> None:
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope as PbScope
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from spool._otlpwire import field

    encoder = OTLPEncoder()
    resource = Resource(attrs)
    assert encoder._head(resource, True) == field(1, PbResource(attributes=_pb_attrs(attrs)).SerializeToString())
    scope = InstrumentationScope(name, version, None, attrs)
    expected = PbScope(name=name, version=version, attributes=_pb_attrs(attrs)).SerializeToString()
    assert encoder._head(scope, False) == field(1, expected)
