"""OTLP's protobuf wire format, the little the spool needs of it, with no dependency: I/O-free.

A row of an `otlp` spool holds one span as a serialized `ResourceSpans` (its resource, one `ScopeSpans` with its
scope and the span). A request is an `ExportTraceServiceRequest` built from stored rows without decoding a span:
rows with the same resource and scope bytes are grouped under one `ResourceSpans` / `ScopeSpans`, as OTLP asks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

__all__ = [
    "field",
    "fields",
    "ld",
    "partial_rejected",
    "request_body",
    "resource_spans",
    "span_name",
    "split_row",
    "varint",
]


_BYTE = [bytes((i,)) for i in range(256)]
"""Each byte value as a one-byte `bytes` (a tag, a short length)."""


def varint(n: int) -> bytes:
    """`n` (unsigned) as a protobuf varint."""
    if n < 0x80:
        return _BYTE[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def ld(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field from its tag's bytes (precomputed: the encoder's hot path), its length, its bytes."""
    return tag + varint(len(data)) + data


def field(number: int, data: bytes) -> bytes:
    """A length-delimited field by number."""
    return ld(varint((number << 3) | 2), data)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated protobuf varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result >> 64:
                raise ValueError("protobuf varint over 64 bits")
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("protobuf varint too long")


def fields(buf: bytes) -> Iterator[tuple[int, int, int, int]]:
    """`(number, wire type, start, end)` of each top-level field of a message: for a length-delimited field (wire
    type 2) `buf[start:end]` is its content, for a varint its value is `start` (and `end` is -1). Raises
    `ValueError` for bytes that are not a protobuf message."""
    i, n = 0, len(buf)
    while i < n:
        tag, i = _read_varint(buf, i)
        number, wire = tag >> 3, tag & 7
        if wire == 2:
            size, i = _read_varint(buf, i)
            if i + size > n:
                raise ValueError("truncated protobuf field")
            yield number, wire, i, i + size
            i += size
        elif wire == 0:
            value, i = _read_varint(buf, i)
            yield number, wire, value, -1
        elif wire == 1:
            yield number, wire, i, i + 8
            i += 8
        elif wire == 5:
            yield number, wire, i, i + 4
            i += 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not supported")
        if i > n:
            raise ValueError("truncated protobuf field")


def resource_spans(resource: bytes, scope: bytes, span: bytes) -> bytes:
    """A row: `ResourceSpans` bytes from the `Resource` part (field 1 with its schema_url), the `ScopeSpans` head
    (scope and schema_url) and one serialized `Span`."""
    return resource + field(2, scope + field(2, span))


def split_row(row: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """A stored `ResourceSpans`: its resource part, its scope part and its spans' fields (each `field(2, span)`)."""
    resource: list[bytes] = []
    scope, spans = b"", []
    for number, wire, start, end in fields(row):
        if number == 2 and wire == 2:
            inner = row[start:end]
            parts = []
            for n2, w2, s2, e2 in fields(inner):
                if n2 == 2 and w2 == 2:
                    spans.append(field(2, inner[s2:e2]))
                elif w2 == 2:
                    parts.append(field(n2, inner[s2:e2]))
            scope = b"".join(parts)
        elif wire == 2:
            resource.append(field(number, row[start:end]))
    return b"".join(resource), scope, spans


def request_body(rows: Sequence[bytes]) -> bytes:
    """An `ExportTraceServiceRequest` of `rows`: one `ResourceSpans` per resource, one `ScopeSpans` per scope in it,
    in the order first seen. A row with the same resource and scope as the one before (the common case: one
    application, one instrumentation) is taken by comparing its head in place; any other row is parsed."""
    groups: dict[bytes, dict[bytes, list[bytes]]] = {}
    res = scope = b""
    spans: list[bytes] = []
    for row in rows:
        if res and row.startswith(res) and row[len(res) : len(res) + 1] == b"\x12":
            size, at = _read_varint(row, len(res) + 1)
            end = at + len(scope)
            if at + size == len(row) and row.startswith(scope, at) and row[end : end + 1] == b"\x12":
                spans.append(row[end:])  # the span field(s) after the same head
                continue
        res, scope, found = split_row(row)
        spans = groups.setdefault(res, {}).setdefault(scope, [])
        spans.extend(found)
    return b"".join(
        field(1, resource + b"".join(field(2, scope + b"".join(spans)) for scope, spans in scopes.items()))
        for resource, scopes in groups.items()
    )


def span_name(row: bytes) -> str | None:
    """The name of the (first) span of a stored row; None when the bytes are not such a row."""
    try:
        _, _, spans = split_row(row)
        if not spans:
            return None
        span = spans[0]
        for _, _, start, end in fields(span):  # the field(2, ...) wrapper: its content is the span
            for number, wire, s2, e2 in fields(span[start:end]):
                if number == 5 and wire == 2:
                    return span[start:end][s2:e2].decode("utf-8", "replace")
            return None
    except ValueError:
        pass
    return None


def partial_rejected(body: bytes) -> tuple[int, str]:
    """`partial_success` of an `ExportTraceServiceResponse`: `(rejected_spans, error_message)`; (0, "") when it has
    none or cannot be read (malformed protobuf, a count that is not a non-negative int64: garbage, never a count)."""
    try:
        for number, wire, start, end in fields(body):
            if number == 1 and wire == 2:
                rejected, message, inner = 0, "", body[start:end]
                for n2, w2, s2, e2 in fields(inner):
                    if n2 == 1 and w2 == 0:
                        if s2 >> 63:  # an int64 count below zero, or garbage
                            return 0, ""
                        rejected = s2
                    elif n2 == 2 and w2 == 2:
                        message = inner[s2:e2].decode("utf-8", "replace")
                return rejected, message
    except ValueError:
        pass
    return 0, ""
