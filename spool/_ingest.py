"""What `spool serve` takes in, as rows of a spool: I/O-free.

An OTLP `ExportTraceServiceRequest` is split into rows on the wire: each span's bytes, under its resource and scope
bytes as they came, without decoding a span (only its trace and span ids are read, to key the row). OTLP JSON is
parsed into that message first (it needs `opentelemetry-proto`). A Scale GP `{"items": [...]}` body becomes its
items, which `Spool.put` validates. What is not a span is counted and named (`Parsed`), and the rest is kept: OTLP's
`partial_success`, or the Scale GP API's 422 naming the item.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from ._items import Encoded
from ._otlpwire import field as pb_field
from ._otlpwire import fields

__all__ = ["MAX_BODY", "MAX_INFLATED", "Parsed", "TooLarge", "inflate", "otlp_rows", "sgp_items"]

MAX_BODY = 16 << 20
"""A request body larger than this is refused (413)."""
MAX_INFLATED = 64 << 20
"""A compressed body that inflates past this is refused (413)."""


class TooLarge(ValueError):
    """A body over `MAX_BODY`, or over `MAX_INFLATED` once inflated."""


@dataclass(slots=True)
class Parsed:
    """The rows a request holds, and the spans it held that are not rows (counted, the first reasons kept)."""

    rows: list[Encoded] = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, why: str) -> None:
        self.rejected += 1
        if len(self.reasons) < 5:
            self.reasons.append(why)

    @property
    def message(self) -> str:
        more = self.rejected - len(self.reasons)
        return "; ".join(self.reasons) + (f" (and {more} more)" if more > 0 else "")


def inflate(body: bytes, encoding: str | None) -> bytes:
    """`body` as sent, undone of its `Content-Encoding` (gzip, deflate or none). Raises `TooLarge` past
    `MAX_INFLATED`, `ValueError` for an encoding it does not know or bytes that are not what it says."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate", "x-gzip"):
        raise ValueError(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, MAX_INFLATED + 1)
    except zlib.error as exc:
        raise ValueError(f"the body is not {encoding}: {exc}") from None
    if len(out) > MAX_INFLATED or d.unconsumed_tail:
        raise TooLarge(f"the body inflates past {MAX_INFLATED >> 20} MiB")
    return out


def otlp_rows(body: bytes, as_json: bool, max_item_bytes: int) -> Parsed:
    """The spans of an `ExportTraceServiceRequest` as `otlp` rows. Raises `ValueError` for a body that is not such
    a message at all; a span without a 16-byte trace id and an 8-byte span id, or larger than `max_item_bytes`, is
    rejected alone."""
    if as_json:
        body = _json_to_protobuf(body)
    out = Parsed()
    try:
        for number, wire, start, end in fields(body):
            if number == 1 and wire == 2:
                _resource_spans(body[start:end], out, max_item_bytes)
    except ValueError as exc:
        raise ValueError(f"not an OTLP ExportTraceServiceRequest: {exc}") from None
    return out


def _resource_spans(rs: bytes, out: Parsed, max_item_bytes: int) -> None:
    head = b"".join(pb_field(n, rs[s:e]) for n, w, s, e in fields(rs) if w == 2 and n != 2)  # resource, schema_url
    for number, wire, start, end in fields(rs):
        if number != 2 or wire != 2:
            continue
        ss = rs[start:end]
        scope = b"".join(pb_field(n, ss[s:e]) for n, w, s, e in fields(ss) if w == 2 and n != 2)
        for n, w, s, e in fields(ss):
            if n == 2 and w == 2:
                _span(head, scope, ss[s:e], out, max_item_bytes)


def _span(head: bytes, scope: bytes, span: bytes, out: Parsed, max_item_bytes: int) -> None:
    trace_id = span_id = b""
    for n, w, s, e in fields(span):
        if n == 1 and w == 2:
            trace_id = span[s:e]
        elif n == 2 and w == 2:
            span_id = span[s:e]
    if len(trace_id) != 16 or not any(trace_id) or len(span_id) != 8 or not any(span_id):
        out.reject("a span without a valid trace_id (16 bytes) and span_id (8 bytes)")
        return
    row = head + pb_field(2, scope + pb_field(2, span))
    if len(row) > max_item_bytes:
        out.reject(f"span {span_id.hex()} is {len(row)} bytes; at most {max_item_bytes} are allowed")
        return
    out.rows.append(Encoded(trace_id.hex(), span_id.hex(), True, row))


def _json_to_protobuf(body: bytes) -> bytes:
    """OTLP JSON (hex ids, as the spec says) to the protobuf message's bytes."""
    from ._otlpcodec import request_from_json

    return request_from_json(body)


def sgp_items(body: bytes) -> list[Any]:
    """The items of a Scale GP batch body, as sent (each is validated when it is put). Raises `ValueError` for a body
    that is not `{"items": [...]}`."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"body: invalid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise ValueError("body: must be a JSON object with an 'items' list")
    return list(doc["items"])
