"""The OTLP wire helpers against opentelemetry-proto's own decoder: requests built from stored rows without
decoding a span are the requests protobuf would build, grouped by resource and scope."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from spool._otlpwire import field, fields, partial_rejected, request_body, resource_spans, split_row


def _resource(service: str) -> bytes:
    attrs = [KeyValue(key="service.name", value=AnyValue(string_value=service))]
    return field(1, Resource(attributes=attrs).SerializeToString())


def _scope(name: str, schema: str = "") -> bytes:
    part = field(1, InstrumentationScope(name=name, version="1").SerializeToString())
    return part + (field(3, schema.encode()) if schema else b"")


def _span(i: int, name: str = "op") -> bytes:
    return Span(trace_id=bytes(16), span_id=i.to_bytes(8, "big"), name=name * 50).SerializeToString()  # > 127 bytes


def test_a_row_splits_back_into_its_parts() -> None:
    row = resource_spans(_resource("a"), _scope("s", "https://schema"), _span(1))
    assert split_row(row) == (_resource("a"), _scope("s", "https://schema"), [field(2, _span(1))])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("xy")), min_size=1, max_size=30))
def test_request_groups_by_resource_then_scope_in_order_first_seen(keys: list[tuple[str, str]]) -> None:
    rows = [resource_spans(_resource(r), _scope(s), _span(i)) for i, (r, s) in enumerate(keys)]
    request = ExportTraceServiceRequest.FromString(request_body(rows))
    got = [
        (
            rs.resource.attributes[0].value.string_value,
            ss.scope.name,
            [int.from_bytes(sp.span_id, "big") for sp in ss.spans],
        )
        for rs in request.resource_spans
        for ss in rs.scope_spans
    ]
    expected: dict[str, dict[str, list[int]]] = {}
    for i, (r, s) in enumerate(keys):
        expected.setdefault(r, {}).setdefault(s, []).append(i)
    assert got == [(r, s, ids) for r, scopes in expected.items() for s, ids in scopes.items()]
    assert len({rs.resource.SerializeToString() for rs in request.resource_spans}) == len(request.resource_spans)


def test_partial_success_is_read_from_the_response() -> None:
    resp = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=3, error_message="too old")
    ).SerializeToString()
    assert partial_rejected(resp) == (3, "too old")
    assert partial_rejected(ExportTraceServiceResponse().SerializeToString()) == (0, "")
    assert partial_rejected(b"\x0a\xff") == (0, "")  # truncated: not counted, never raised


def test_bytes_that_are_not_protobuf_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="truncated"):
        list(fields(b"\x0a\x05ab"))
    with pytest.raises(ValueError, match="wire type"):
        list(fields(b"\x0b"))
