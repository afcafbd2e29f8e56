"""Stored OTLP rows to and from the OTLP JSON mapping (`spool export` and `spool import` of an `otlp` spool), and the
receiver's side of OTLP/HTTP (requests in, responses out). Needs `opentelemetry-proto` (the `otel` extra); I/O-free.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from ._errors import MissingExtraError
from ._items import Encoded
from ._otlpwire import field, resource_spans

try:
    from google.protobuf import json_format  # type: ignore[import-untyped]
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span
except ImportError as exc:
    raise MissingExtraError(
        f"OTLP spans in JSON need the otel extra ({exc.name} is not installed): pip install 'span-spool[otel]'"
    ) from None

__all__ = ["request_from_json", "request_rows", "response_body", "row_from_json", "row_to_json"]

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(d: dict[str, Any], to_hex: bool) -> dict[str, Any]:
    """The OTLP JSON mapping writes ids in hex where protobuf's JSON writes base64: convert one way or the other."""
    for key in _ID_FIELDS:
        value = d.get(key)
        if value:
            d[key] = base64.b64decode(value).hex() if to_hex else base64.b64encode(bytes.fromhex(value)).decode()
    for link in d.get("links", ()):
        _hex_ids(link, to_hex)
    return d


def _to_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, use_integers_for_enums=True)  # type: ignore[no-any-return]


def row_to_json(body: bytes) -> dict[str, Any]:
    """A stored row as `{"resource": ..., "scope": ..., "span": ...}` in the OTLP JSON mapping (lowerCamelCase keys,
    hex ids), with `resourceSchemaUrl` / `scopeSchemaUrl` when set."""
    rs = ResourceSpans.FromString(body)
    ss = rs.scope_spans[0]
    out: dict[str, Any] = {"resource": _to_dict(rs.resource), "scope": _to_dict(ss.scope)}
    out["span"] = _hex_ids(_to_dict(ss.spans[0]), True)
    if rs.schema_url:
        out["resourceSchemaUrl"] = rs.schema_url
    if ss.schema_url:
        out["scopeSchemaUrl"] = ss.schema_url
    return out


def row_from_json(obj: Any) -> Encoded:
    """`row_to_json`'s output back into a row. Raises `ValueError` naming what is wrong."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("span"), Mapping):
        raise ValueError('an OTLP line must be an object with a "span" object (and "resource", "scope")')
    span = dict(obj["span"])
    for key in ("traceId", "spanId"):
        value = span.get(key)
        if not isinstance(value, str) or len(value) != (32 if key == "traceId" else 16):
            raise ValueError(f"span.{key} must be {32 if key == 'traceId' else 16} hex digits, got {value!r}")
    try:
        span = _hex_ids(span, False)
        pb = json_format.ParseDict(span, Span())
        resource = json_format.ParseDict(obj.get("resource") or {}, Resource())
        scope = json_format.ParseDict(obj.get("scope") or {}, InstrumentationScope())
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise ValueError(f"not an OTLP span: {exc}") from None
    res_part = field(1, resource.SerializeToString())
    if url := obj.get("resourceSchemaUrl"):
        res_part += field(3, str(url).encode())
    scope_part = field(1, scope.SerializeToString())
    if url := obj.get("scopeSchemaUrl"):
        scope_part += field(3, str(url).encode())
    body = resource_spans(res_part, scope_part, pb.SerializeToString())
    return Encoded(pb.trace_id.hex(), pb.span_id.hex(), True, body)


def request_rows(body: bytes, as_json: bool, keep: bool = True) -> list[tuple[str, str, dict[str, Any] | None]]:
    """The spans of an `ExportTraceServiceRequest` (protobuf, or OTLP JSON with `as_json`): `(trace id, span id,
    row_to_json's dict or None without keep)` each. Raises `ValueError` naming what is wrong."""
    request = _request(body, as_json)
    out: list[tuple[str, str, dict[str, Any] | None]] = []
    for rs in request.resource_spans:
        resource = _to_dict(rs.resource) if keep else None
        for ss in rs.scope_spans:
            scope = _to_dict(ss.scope) if keep else None
            for span in ss.spans:
                row = None
                if keep:
                    row = {"resource": resource, "scope": scope, "span": _hex_ids(_to_dict(span), True)}
                out.append((span.trace_id.hex(), span.span_id.hex(), row))
    return out


def _request(body: bytes, as_json: bool) -> Any:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        if as_json:
            doc = json.loads(body) if body else {}
            for rs in doc.get("resourceSpans", doc.get("resource_spans", ())):
                for ss in rs.get("scopeSpans", rs.get("scope_spans", ())):
                    for span in ss.get("spans", ()):
                        _hex_ids(span, False)
            return json_format.ParseDict(doc, ExportTraceServiceRequest())
        return ExportTraceServiceRequest.FromString(body)
    except Exception as exc:  # protobuf's DecodeError, json_format's ParseError, bad hex: all "not OTLP"
        raise ValueError(f"not an OTLP ExportTraceServiceRequest: {type(exc).__name__}: {exc}") from None


def request_from_json(body: bytes) -> bytes:
    """An OTLP/JSON `ExportTraceServiceRequest` (hex ids) as the protobuf message's bytes. Raises `ValueError`."""
    return bytes(_request(body, True).SerializeToString())


def response_body(rejected: int, message: str, as_json: bool) -> bytes:
    """An `ExportTraceServiceResponse`, with a `partial_success` when `rejected` > 0."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTracePartialSuccess,
        ExportTraceServiceResponse,
    )

    resp = ExportTraceServiceResponse()
    if rejected:
        resp.partial_success.CopyFrom(ExportTracePartialSuccess(rejected_spans=rejected, error_message=message))
    if as_json:
        return json_format.MessageToJson(resp, indent=None).encode()  # type: ignore[no-any-return]
    return resp.SerializeToString()  # type: ignore[no-any-return]
