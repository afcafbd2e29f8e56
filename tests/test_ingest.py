"""`spool._ingest`: requests split into spool rows on the wire, without decoding a span."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from spool._ingest import MAX_INFLATED, TooLarge, inflate, otlp_rows, sgp_items
from spool._otlpwire import request_body


def _spans() -> list[Any]:
    out = []
    for service in ("checkout", "search"):  # two resources, two scopes each
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        for scope in ("http", "db"):
            with provider.get_tracer(scope, "1.0").start_as_current_span(
                f"{service}.{scope}", attributes={"n": 1}
            ) as s:
                pass
            out.append(s)
    return out


def test_a_request_splits_into_one_row_per_span_and_the_rows_make_the_same_request_again() -> None:
    request = encode_spans(_spans())
    parsed = otlp_rows(request.SerializeToString(), False, 1 << 20)
    assert parsed.rejected == 0 and len(parsed.rows) == 4
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [(r.trace_id, r.span_id) for r in parsed.rows] == [(s.trace_id.hex(), s.span_id.hex()) for s in spans]
    again = ExportTraceServiceRequest.FromString(request_body([r.body for r in parsed.rows]))
    assert again == request  # grouped back by resource and scope: the same message


def test_a_span_without_ids_or_too_big_is_refused_alone_and_json_is_read_too() -> None:
    good = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "g"}
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            good,
                            {**good, "spanId": "0000000000000000"},
                            {**good, "spanId": "eee19b7ec3c1b175", "name": "x" * 500},
                        ]
                    }
                ]
            }
        ]
    }
    parsed = otlp_rows(orjson.dumps(doc), True, 200)
    assert [r.span_id for r in parsed.rows] == ["eee19b7ec3c1b174"]
    assert parsed.rejected == 2 and "span_id" in parsed.message and "at most 200" in parsed.message
    with pytest.raises(ValueError, match="not an OTLP"):
        otlp_rows(b"\xff\xff\xff", False, 1 << 20)


def test_inflate_undoes_gzip_and_refuses_a_bomb() -> None:
    assert inflate(gzip.compress(b"abc"), "gzip") == b"abc"
    assert inflate(b"abc", None) == b"abc"
    with pytest.raises(TooLarge):
        inflate(gzip.compress(b"\0" * (MAX_INFLATED + 1)), "gzip")
    with pytest.raises(ValueError, match="br"):
        inflate(b"abc", "br")
    with pytest.raises(ValueError, match="not gzip"):
        inflate(b"abc", "gzip")


def test_a_scale_gp_batch_body_gives_its_items_as_sent() -> None:
    ok = {"trace_id": "t", "id": "s1", "name": "a", "start_timestamp": "2026-11-28T10:00:00Z"}
    assert sgp_items(orjson.dumps({"items": [ok, {"trace_id": "t"}]})) == [ok, {"trace_id": "t"}]
    with pytest.raises(ValueError, match="'items' list"):
        sgp_items(b"[]")
    with pytest.raises(ValueError, match="invalid JSON"):
        sgp_items(b"{")
