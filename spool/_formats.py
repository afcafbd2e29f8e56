"""What each storage format means, in one record per format, registered once (`FORMATS`): the sink that delivers it
from the environment, what `Spool.put` and the OpenTelemetry fronts store in it, a request's size, a row's name in
SQL (a dead letter's name), and its `spool export` / `spool import` lines. Nothing else branches on the format: a
new format is one `Format` here, and a sink whose `format` names it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ._errors import SpoolConfigError
from ._items import Encoded, encode_item

if TYPE_CHECKING:
    from ._sink import Sink
    from ._spool import Spool

__all__ = ["FORMATS", "SGP", "Format", "format_named", "row_sql", "sniff_line"]


@dataclass(frozen=True, slots=True)
class Format:
    """One storage format. Its callables import what they need when called (`import spool` stays light)."""

    name: str
    sink_name: str
    """The sink class that delivers it (named when a sink of another format meets such a file)."""
    sink_from_env: Callable[[], Sink]
    """Its sink, configured from the environment; raises `SpoolConfigError` when that is incomplete."""
    takes_items: bool
    """`Spool.put` takes SGP items into it (else only `put_later` of OpenTelemetry spans)."""
    has_starts: bool
    """A row may be a span's start, which its end replaces: delivered ends are recorded so that a start arriving
    late is never sent after its end (`ended_keys`). False: every row is a finished span, and nothing is recorded."""
    otel_writer: Callable[[Spool], Callable[[Any], None]]
    """For a spool of this format: a function storing one finished OpenTelemetry span (non-blocking)."""
    request_bytes: Callable[[Sequence[bytes]], int]
    """A request's size from its rows' bodies (at least the bytes sent: a 413's size is compared with it)."""
    row_sql: str
    """SQL true for a `body` of this format (the file's rows are all of one format; older files held `sgp` only)."""
    name_sql: str
    """SQL for a row's span name (a dead letter's `name`)."""
    ended_sql: str
    """SQL true when a row is its span's end."""
    export_line: Callable[[], Callable[[bytes], bytes] | None]
    """How `spool export` writes a body as a line (None: as stored); raises `MissingExtraError` without its extra."""
    parse_line: Callable[[bytes, int], Encoded]
    """One `spool import` line to a row, validated (`max_item_bytes`); raises `ValueError`/`TypeError` with why."""
    line_is: Callable[[Any], bool]
    """A parsed import line is of this format."""
    route: tuple[str, str]
    """Where `spool serve` takes spans of this format: (method, path), the protocol's own."""
    check_lines: Callable[[], object]
    """Raises `MissingExtraError` when this format's lines need an extra that is not installed."""


def _sgp_line(line: bytes, max_item_bytes: int) -> Encoded:
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if isinstance(item, dict) and item.get("id") is None:  # an id from its bytes: importing twice adds no row
        digest = hashlib.sha256(line.strip()).digest()
        item["id"] = str(uuid.UUID(bytes=digest[:16], version=4))
    return encode_item(item, max_item_bytes)


def _otlp_line(line: bytes, max_item_bytes: int) -> Encoded:
    from ._otlpcodec import row_from_json

    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    enc = row_from_json(obj)
    if len(enc.body) > max_item_bytes:
        raise ValueError(f"span is {len(enc.body)} bytes; at most {max_item_bytes} are allowed")
    return enc


def _otlp_export() -> Callable[[bytes], bytes]:
    from ._otlpcodec import row_to_json

    return lambda body: orjson.dumps(row_to_json(body))


def _sgp_sink() -> Sink:
    from ._sink import SGPSink

    return SGPSink()


def _otlp_sink() -> Sink:
    from ._otlpsink import OTLPSink

    return OTLPSink()


def _sgp_otel(spool: Spool) -> Callable[[Any], None]:
    from ._otelmap import otel_to_sgp

    return lambda span: spool.put(otel_to_sgp(span))


def _otlp_otel(spool: Spool) -> Callable[[Any], None]:
    from ._otlpencode import OTLPEncoder

    encode = OTLPEncoder().encode
    if spool.redact is None:
        return lambda span: spool.put_later(span, encode)
    from ._otelredact import redacted_span

    def redacted(span: Any) -> Encoded | None:  # (on the database thread; a drop is counted by `redact_item`)
        kept = redacted_span(span, spool.redact_item)
        return None if kept is None else encode(kept)

    return lambda span: spool.put_later(span, redacted)


SGP = Format(
    name="sgp",
    sink_name="SGPSink",
    sink_from_env=_sgp_sink,
    takes_items=True,
    has_starts=True,
    otel_writer=_sgp_otel,
    request_bytes=lambda bodies: sum(len(b) + 1 for b in bodies) + 11,  # {"items":[...]}
    row_sql="substr(body, 1, 1) = X'7B'",  # a JSON object
    name_sql="json_extract(body, '$.name')",
    ended_sql="json_extract(body, '$.end_timestamp') IS NOT NULL",
    export_line=lambda: None,
    parse_line=_sgp_line,
    line_is=lambda obj: not (isinstance(obj, dict) and isinstance(obj.get("span"), dict)),
    route=("PUT", "/v5/spans/batch"),
    check_lines=lambda: None,
)

OTLP = Format(
    name="otlp",
    sink_name="OTLPSink",
    sink_from_env=_otlp_sink,
    takes_items=False,
    has_starts=False,
    otel_writer=_otlp_otel,
    request_bytes=lambda bodies: sum(map(len, bodies)),  # rows sharing a resource and scope send them once
    row_sql="1",
    name_sql="otlp_name(body)",
    ended_sql="1",  # a finished span only
    export_line=_otlp_export,
    parse_line=_otlp_line,
    line_is=lambda obj: isinstance(obj, dict) and isinstance(obj.get("span"), dict),
    route=("POST", "/v1/traces"),
    check_lines=_otlp_export,
)

FORMATS: dict[str, Format] = {f.name: f for f in (SGP, OTLP)}
"""Every storage format by name; a file without one recorded holds `sgp` (the only format before there were two)."""


def format_named(name: str) -> Format:
    """The registered format `name`; raises `SpoolConfigError` naming the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise SpoolConfigError(f"unknown spool format {name!r}: one of {', '.join(FORMATS)}") from None


def row_sql(what: Callable[[Format], str]) -> str:
    """A SQL expression giving `what(format)` (its `name_sql`, say) of a row, whatever format its body is in."""
    cases = " ".join(f"WHEN {f.row_sql} THEN {what(f)}" for f in FORMATS.values())
    return f"(CASE {cases} END)"


def sniff_line(line: bytes) -> Format:
    """The format of an import line (the first line says a file's); `sgp` for a line that is not JSON."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return SGP
    return next(f for f in FORMATS.values() if f.line_is(obj))
