"""`spool._formats`: each registered storage format, against the code that sends, stores and exports its rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import span
from opentelemetry.sdk.trace import TracerProvider

from spool import SpoolConfigError
from spool._formats import FORMATS, OTLP, SGP, format_named, row_sql, sniff_line
from spool._items import encode_item
from spool._otlpencode import OTLPEncoder
from spool._otlpwire import request_body
from spool._schema import register_functions
from spool._sink import join_items


def _span(name: str = "op") -> Any:
    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span(name) as s:
        pass
    return s


def _otlp_row(name: str = "op") -> bytes:
    return OTLPEncoder().encode(_span(name)).body


def test_every_format_is_registered_once_and_an_unknown_one_is_named() -> None:
    assert FORMATS == {"sgp": SGP, "otlp": OTLP}
    with pytest.raises(SpoolConfigError, match="'zipkin': one of sgp, otlp"):
        format_named("zipkin")


def test_a_request_is_never_bigger_than_its_format_says() -> None:
    sgp = [encode_item(span(i), 1 << 20).body for i in range(5)]
    assert SGP.request_bytes(sgp) == len(join_items(sgp))
    otlp = [_otlp_row(f"op{i}") for i in range(5)]
    assert OTLP.request_bytes(otlp) >= len(request_body(otlp))


def test_a_rows_name_and_end_in_sql_for_each_format() -> None:
    db = sqlite3.connect(":memory:")
    register_functions(db)
    ended = encode_item(span(7, end=True), 1 << 20).body
    started = encode_item(span(8), 1 << 20).body
    query = f"SELECT {row_sql(lambda f: f.name_sql)}, {row_sql(lambda f: f.ended_sql)} FROM (SELECT ? AS body)"
    assert db.execute(query, (ended,)).fetchone() == ("step 7", 1)
    assert db.execute(query, (started,)).fetchone() == ("step 8", 0)
    assert db.execute(query, (_otlp_row("GET /"),)).fetchone() == ("GET /", 1)


def test_export_and_import_lines_round_trip_and_say_their_format() -> None:
    sgp_body = encode_item(span(1), 1 << 20).body
    assert SGP.export_line() is None  # stored as its line
    assert SGP.parse_line(sgp_body, 1 << 20).body == sgp_body
    assert sniff_line(sgp_body) is SGP and sniff_line(b"not json") is SGP

    otlp_body = _otlp_row()
    to_line = OTLP.export_line()
    assert to_line is not None
    line = to_line(otlp_body)
    assert orjson.loads(line)["span"]["name"] == "op"
    assert sniff_line(line) is OTLP
    assert OTLP.parse_line(line, 1 << 20).body == otlp_body
    with pytest.raises(ValueError, match="at most 10"):
        OTLP.parse_line(line, 10)


@pytest.mark.parametrize(("fmt", "recorded"), [("sgp", 1), ("otlp", 0)])
def test_delivered_ends_are_recorded_only_where_a_start_can_come_late(tmp_path: Path, fmt: str, recorded: int) -> None:
    from spool import SpoolConfig
    from spool._store import Store

    store = Store(tmp_path / f"{fmt}.db", SpoolConfig())
    try:
        store.claim_format(fmt)
        store.append([encode_item(span(1, end=True), 1 << 20) if fmt == "sgp" else OTLPEncoder().encode(_span())])
        rows = store.claim("me", 10, 30)
        assert store.complete(rows) == 1
        assert store._db.execute("SELECT count(*) FROM ended_keys").fetchone()[0] == recorded
    finally:
        store.close()
