"""OpenTelemetry SDK spans to the rows of an `otlp` spool, written field by field in protobuf's wire format, with
no dependency (what protobuf's serializer writes for the same span: tests/test_otlpencode.py compares the two).
I/O-free."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from ._items import Encoded
from ._otlpwire import field, resource_spans
from ._otlpwire import ld as _ld
from ._otlpwire import varint as _varint

_BYTE = [bytes((i,)) for i in range(0x80)]

__all__ = ["OTLPEncoder", "encode_span"]

_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200


_pack_d, _pack_q, _pack_i = struct.Struct("<d").pack, struct.Struct("<Q").pack, struct.Struct("<I").pack
_U64 = (1 << 64) - 1


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
    if isinstance(v, str):  # subclasses (a str enum, ...): as their base type
        return _ld(b"\x0a", _text(str(v)))
    if isinstance(v, int):
        return _any(int(v))
    if isinstance(v, float):
        return _any(float(v))
    if isinstance(v, Mapping):
        return _ld(b"\x32", b"".join(_ld(b"\x0a", _kv(str(k), x)) for k, x in v.items()))
    if isinstance(v, Sequence):
        return _ld(b"\x2a", b"".join(_ld(b"\x0a", _any(x)) for x in v))
    return _ld(b"\x0a", _text(str(v)))  # not an OTel attribute type: kept as text, never lost


def _kv(key: str, v: Any) -> bytes:
    return _key(key) + _ld(b"\x12", _any(v))


_FIELDS: dict[str, bytes] = {}
"""Attribute keys seen, as their field's bytes: an application uses a few hundred, over and over."""


def _key(key: str) -> bytes:
    """`key` as a `KeyValue.key` field."""
    b = _FIELDS.get(key)
    if b is None:
        b = _ld(b"\x0a", _text(key))
        if len(_FIELDS) < 4096:
            _FIELDS[key] = b
    return b


def _attributes(attrs: Mapping[str, Any] | None, tag: bytes) -> bytes:
    """Repeated `KeyValue` fields under `tag` (a string or int64 value, the common ones, written inline)."""
    if not attrs:
        return b""
    out = []
    for k, v in attrs.items():
        t = type(v)
        if t is str:
            b = v.encode("utf-8", "replace")
            value = b"\x0a" + (_BYTE[len(b)] if len(b) < 0x80 else _varint(len(b))) + b
        elif t is int and -(2**63) <= v < 2**63:
            value = b"\x18" + _varint(v & _U64)
        else:
            value = _any(v)
        kv = _key(k) + b"\x12" + (_BYTE[len(value)] if len(value) < 0x80 else _varint(len(value))) + value
        out.append(tag + (_BYTE[len(kv)] if len(kv) < 0x80 else _varint(len(kv))) + kv)
    return b"".join(out)


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
        body = b"\x09" + _pack_q(e.timestamp) if e.timestamp else b""
        if e.name:
            body += _ld(b"\x12", _text(e.name))
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
    status_body = _ld(b"\x12", _text(message)) if message else b""
    if code:
        status_body += b"\x18" + _varint(code)
    out.append(_ld(b"\x7a", status_body))
    out.append(b"\x85\x01" + _pack_i(_flags(ctx, parent)))
    return b"".join(out)


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
        attrs = _attributes(getattr(obj, "attributes", None), b"\x0a" if resource else b"\x1a")
        if resource:  # resource.v1.Resource: attributes (1)
            part = field(1, attrs)
        else:  # common.v1.InstrumentationScope: name (1), version (2), attributes (3)
            name, version = getattr(obj, "name", "") or "", getattr(obj, "version", "") or ""
            part = field(
                1,
                (_ld(b"\x0a", _text(name)) if name else b"")
                + (_ld(b"\x12", _text(version)) if version else b"")
                + attrs,
            )
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
