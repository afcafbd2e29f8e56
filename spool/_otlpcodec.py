"""OpenTelemetry SDK spans to stored OTLP rows, and rows to and from the OTLP JSON mapping (`spool export` and
`spool import` of an `otlp` spool). Needs `opentelemetry-proto` (the `otel` extra); I/O-free.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

try:
    from google.protobuf import json_format  # type: ignore[import-untyped]
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span
except ImportError as exc:  # pragma: no cover - the dev environment has it
    raise ImportError("OTLP spools need opentelemetry-proto: pip install 'span-spool[otel]'") from exc

from ._items import Encoded
from ._otlpwire import field, resource_spans
from ._otlpwire import varint as _varint

__all__ = ["OTLPEncoder", "encode_span", "request_rows", "response_body", "row_from_json", "row_to_json"]

_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


_pack_d, _pack_q, _pack_i = struct.Struct("<d").pack, struct.Struct("<Q").pack, struct.Struct("<I").pack
_U64 = (1 << 64) - 1


def _ld(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field: its tag byte(s), the length, the bytes."""
    n = len(data)
    return tag + _varint(n) + data


def _text(v: str) -> bytes:
    return v.encode("utf-8", "replace")  # a lone surrogate becomes "?" rather than losing the span


def _any(v: Any) -> bytes:
    """An `AnyValue`'s bytes (what `common.v1.AnyValue` serializes to)."""
    t = type(v)  # (a oneof: a zero value is written too)
    if t is str:
        return _ld(b"\x0a", _text(v))
    if t is bool:
        return b"\x10\x01" if v else b"\x10\x00"
    if t is int:
        if -(2**63) <= v < 2**63:
            return b"\x18" + _varint(v & _U64)
        return _ld(b"\x0a", str(v).encode())  # beyond int64: kept as text, never lost
    if t is float:
        return b"\x21" + _pack_d(v)
    if v is None:
        return b""
    if isinstance(v, bytes | bytearray):
        return _ld(b"\x3a", bytes(v))
    if isinstance(v, str | bool | int | float):  # subclasses: as their base type
        return _any(
            str(v)
            if isinstance(v, str)
            else bool(v)
            if isinstance(v, bool)
            else int(v)
            if isinstance(v, int)
            else float(v)
        )
    if isinstance(v, Mapping):
        return _ld(b"\x32", b"".join(_ld(b"\x0a", _kv(str(k), x)) for k, x in v.items()))
    if isinstance(v, Sequence):
        return _ld(b"\x2a", b"".join(_ld(b"\x0a", _any(x)) for x in v))
    return _ld(b"\x0a", _text(str(v)))  # not an OTel attribute type: kept as text, never lost


def _kv(key: str, v: Any) -> bytes:
    return _ld(b"\x0a", _text(key)) + _ld(b"\x12", _any(v))


def _attributes(attrs: Mapping[str, Any] | None, tag: bytes) -> bytes:
    """Repeated `KeyValue` fields under `tag`."""
    if not attrs:
        return b""
    return b"".join([_ld(tag, _ld(b"\x0a", _text(k)) + _ld(b"\x12", _any(v))) for k, v in attrs.items()])


def _count(tag: bytes, n: int) -> bytes:
    return tag + _varint(n) if n else b""


def _flags(ctx: Any, parent: Any) -> int:
    """`Span.flags` / `Link.flags`: the W3C trace flags of `ctx`, and whether `parent` (the span's parent, or the
    linked context) is remote."""
    remote = _IS_REMOTE if parent is not None and parent.is_remote else 0
    return int(ctx.trace_flags) | _HAS_IS_REMOTE | remote


def _trace_state(ctx: Any) -> str:
    state = getattr(ctx, "trace_state", None)
    return ",".join(f"{k}={v}" for k, v in state.items()) if state else ""


def encode_span(span: Any) -> bytes:
    """A finished SDK span's `trace.v1.Span` bytes, written field by field (what protobuf's serializer writes for
    the same span, at a third of its cost: tests/test_otlpcodec.py compares the two)."""
    ctx = span.context
    parent = span.parent
    out = [b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"), b"\x12\x08" + ctx.span_id.to_bytes(8, "big")]
    if state := _trace_state(ctx):
        out.append(_ld(b"\x1a", _text(state)))
    if parent is not None:
        out.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    if span.name:
        out.append(_ld(b"\x2a", _text(span.name)))
    kind = int(span.kind.value) + 1  # the SDK's INTERNAL is 0, OTLP's SPAN_KIND_INTERNAL 1
    out.append(b"\x30" + _varint(kind))
    if span.start_time:
        out.append(b"\x39" + _pack_q(span.start_time))
    if span.end_time:
        out.append(b"\x41" + _pack_q(span.end_time))
    out.append(_attributes(span.attributes, b"\x4a"))
    out.append(_count(b"\x50", span.dropped_attributes))
    for e in span.events:
        body = (b"\x09" + _pack_q(e.timestamp) if e.timestamp else b"") + (
            _ld(b"\x12", _text(e.name)) if e.name else b""
        )
        body += _attributes(e.attributes, b"\x1a") + _count(b"\x20", getattr(e, "dropped_attributes", 0))
        out.append(_ld(b"\x5a", body))
    out.append(_count(b"\x60", span.dropped_events))
    for link in span.links:
        lc = link.context
        body = b"\x0a\x10" + lc.trace_id.to_bytes(16, "big") + b"\x12\x08" + lc.span_id.to_bytes(8, "big")
        if state := _trace_state(lc):
            body += _ld(b"\x1a", _text(state))
        body += _attributes(link.attributes, b"\x22") + _count(b"\x28", getattr(link, "dropped_attributes", 0))
        body += b"\x35" + _pack_i(_flags(lc, lc))
        out.append(_ld(b"\x6a", body))
    out.append(_count(b"\x70", span.dropped_links))
    status = span.status
    code = int(status.status_code.value) if status is not None else 0
    message = (status.description or "") if status is not None else ""
    out.append(
        _ld(b"\x7a", (_ld(b"\x12", _text(message)) if message else b"") + (b"\x18" + _varint(code) if code else b""))
    )
    out.append(b"\x85\x01" + _pack_i(_flags(ctx, parent)))
    return b"".join(out)


def _pb_attributes(attrs: Mapping[str, Any] | None) -> list[KeyValue]:
    """Resource and scope attributes (encoded once per object) through protobuf's classes."""
    return [KeyValue.FromString(_kv(str(k), v)) for k, v in attrs.items()] if attrs else []


class OTLPEncoder:
    """Turns finished SDK spans (`ReadableSpan`) into `Encoded` rows of an `otlp` spool: key `(trace id, span id)`
    in lowercase hex, the body a `ResourceSpans` of the span alone. The resource and scope parts are encoded once
    per resource and scope object. Used from one thread at a time (the spool's database thread)."""

    def __init__(self) -> None:
        self._heads: dict[int, tuple[object, bytes]] = {}

    def _head(self, obj: Any, resource: bool) -> bytes:
        hit = self._heads.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        if resource:
            part = field(1, Resource(attributes=_pb_attributes(getattr(obj, "attributes", None))).SerializeToString())
        else:
            scope = InstrumentationScope(
                name=getattr(obj, "name", "") or "",
                version=getattr(obj, "version", "") or "",
                attributes=_pb_attributes(getattr(obj, "attributes", None)),
            )
            part = field(1, scope.SerializeToString())
        schema = getattr(obj, "schema_url", "") or ""
        if schema:
            part += field(3, schema.encode())
        if len(self._heads) > 256:
            self._heads.clear()
        self._heads[id(obj)] = (obj, part)  # the object is kept: its id cannot be reused while it is here
        return part

    def encode(self, span: Any) -> Encoded:
        """One row for `span`. Raises what the span's own attributes raise (never for a span the SDK made)."""
        ctx = span.context
        body = resource_spans(
            self._head(span.resource, True), self._head(span.instrumentation_scope, False), encode_span(span)
        )
        return Encoded(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", True, body)


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
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        if as_json:
            doc = json.loads(body) if body else {}
            for rs in doc.get("resourceSpans", doc.get("resource_spans", ())):
                for ss in rs.get("scopeSpans", rs.get("scope_spans", ())):
                    for span in ss.get("spans", ()):
                        _hex_ids(span, False)
            request = json_format.ParseDict(doc, ExportTraceServiceRequest())
        else:
            request = ExportTraceServiceRequest.FromString(body)
    except Exception as exc:  # protobuf's DecodeError, json_format's ParseError, bad hex: all "not OTLP"
        raise ValueError(f"not an OTLP ExportTraceServiceRequest: {type(exc).__name__}: {exc}") from None
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
