"""Hostile input, property-based: every item either lands intact or raises the documented ValueError / TypeError.

"Intact" means the stored bytes decode (strict UTF-8, valid JSON) to the item as JSON would hold it: tuples become
lists, non-string keys their JSON strings, NaN and infinities null, datetimes ISO 8601 with an offset (the same
instant). And nothing stored is refused by the receiver's checks, which copy the API's (400 for a NUL or invalid
UTF-8 in an id field, 422 for the rest). Example counts stay modest: the whole file runs in seconds.
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import tempfile
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from spool import Spool, SpoolConfig
from spool._items import encode_item
from spool._receiver import _check_batch, _Reject

MAX = 64 * 1024
EXAMPLES = int(os.environ.get("SPOOL_TEST_EXAMPLES", "150"))  # raise it for a long hunt
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ---------------------------------------------------------------------------------------------

HOSTILE_CHARS = ["a", "Z", "é", "\x00", "\x1f", "\ud800", "\udc80", "\U0001f600", '"', "\\", "\n", "\u2028"]
hostile_text = st.text(alphabet=st.sampled_from(HOSTILE_CHARS), max_size=8)
plain_text = st.text(max_size=20)  # any code point but lone surrogates
large_text = st.builds(lambda n, c: c * n, st.integers(200, 80_000), st.sampled_from(["x", "é", "\U0001f600"]))
any_text = st.one_of(plain_text, hostile_text, large_text)

whole_minute_tz = st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-23 * 60 - 59, 23 * 60 + 59))
odd_tz = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23, minutes=59), max_value=timedelta(hours=23, minutes=59))
)
any_tz = st.one_of(st.none(), st.just(UTC), whole_minute_tz, odd_tz, st.timezones())
nested_datetimes = st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), whole_minute_tz))

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    any_text,
    nested_datetimes,
)
keys = st.one_of(plain_text, hostile_text, st.integers(-3, 3), st.booleans(), st.none())
json_ish = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(keys, inner, max_size=4)
    ),
    max_leaves=12,
)


def _iso(dt: datetime, sep: str, spec: str) -> str:
    return dt.isoformat(sep=sep, timespec=spec)


timestamps = st.one_of(
    st.datetimes(timezones=any_tz),
    st.builds(
        _iso,
        st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), whole_minute_tz)),
        st.sampled_from(["T", " "]),
        st.sampled_from(["auto", "seconds", "milliseconds", "microseconds"]),
    ),
    st.sampled_from(["2026-01-01", "2026-01-01T00:00:00Z", "20260101T000000", "2026-01-01T00:00:00+05:30"]),
    any_text,  # garbage, NUL separators, surrogates
    st.integers(0, 2**40),  # epoch numbers are not accepted
    st.builds(date, st.integers(1, 9999), st.integers(1, 12), st.integers(1, 28)),
)
ids = st.one_of(
    st.uuids().map(str),
    plain_text,
    hostile_text,
    st.builds(lambda n, c: c * n, st.integers(100, 300), st.sampled_from(["a", "é"])),
    st.integers(),
    st.none(),
)


valid_timestamps = st.one_of(
    st.datetimes(timezones=any_tz),
    st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), whole_minute_tz)).map(lambda d: d.isoformat()),
)
valid_ids = st.one_of(st.uuids().map(str), st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t))


def mostly(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid seven times in eight, so that items get past the first check and the rest of them is exercised."""
    return st.integers(0, 7).flatmap(lambda n: valid if n else hostile)


@st.composite
def hostile_items(draw: st.DrawFn) -> dict[Any, Any]:
    item: dict[Any, Any] = {}
    required = (
        ("trace_id", mostly(valid_ids, ids)),
        ("name", mostly(plain_text, st.one_of(any_text, st.integers()))),
        ("start_timestamp", mostly(valid_timestamps, timestamps)),
    )
    optional = (
        ("id", mostly(valid_ids, ids)),
        ("end_timestamp", mostly(valid_timestamps, timestamps)),
        ("parent_id", mostly(valid_ids, ids)),
        ("group_id", mostly(valid_ids, ids)),
        ("metadata", json_ish),
        ("output", json_ish),
    )
    for key, values in required:
        if draw(st.integers(0, 15)):  # now and then a required key is missing
            item[key] = draw(values)
    for key, values in optional:
        if draw(st.booleans()):
            item[key] = draw(values)
    item.update(draw(st.dictionaries(keys, json_ish, max_size=3)))
    return item


# -- the oracle ---------------------------------------------------------------------------------------------


def _json_key(k: object) -> str:
    if isinstance(k, str):
        return k
    if k is None:
        return "null"
    if isinstance(k, bool):
        return "true" if k else "false"
    return str(k)


def _instant(value: object) -> timedelta:
    """The instant as time since 0001-01-01 UTC: comparable across zones (also in a DST gap or fold, where Python's
    interzone `==` says False) and never out of range."""
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return (dt.replace(tzinfo=None) - datetime.min) - (dt.utcoffset() or timedelta(0))


def expected_json(value: Any) -> Any:
    """What JSON should hold for `value` (datetimes compared separately, as instants)."""
    if isinstance(value, dict):
        return {_json_key(k): expected_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [expected_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return _instant(value)
    return value


def decoded_for_compare(value: Any, like: Any) -> Any:
    """`value` from the stored JSON, with strings parsed back to instants wherever the original had a datetime."""
    if isinstance(like, dict) and isinstance(value, dict):
        return {k: decoded_for_compare(v, like.get(k)) for k, v in value.items()}
    if isinstance(like, list) and isinstance(value, list):
        return [decoded_for_compare(v, w) for v, w in zip(value, like, strict=True)]
    if isinstance(like, timedelta) and isinstance(value, str):  # was a datetime
        return _instant(value)
    return value


def assert_intact(item: dict[Any, Any], body: bytes, span_id: str) -> None:
    body.decode("utf-8")  # strict: valid UTF-8
    stored = orjson.loads(body)
    want = expected_json(item)
    want.setdefault("id", span_id)
    if want.get("id") is None:
        want["id"] = span_id
    assert decoded_for_compare(stored, want) == want
    try:
        _check_batch({"items": [stored]})  # what the receiver (the API's rules) would do with it
    except _Reject as rej:
        pytest.fail(f"stored item refused by the server's rules: {rej.status} {rej.detail}")


def encode_or_documented_error(item: dict[Any, Any]) -> tuple[str, str, bytes] | None:
    try:
        enc = encode_item(item, MAX)
    except (ValueError, TypeError) as exc:
        assert str(exc)  # a message, naming what is wrong
        return None
    return enc.trace_id, enc.span_id, enc.body


# -- properties -------------------------------------------------------------------------------------------


@FAST
@given(hostile_items())
def test_hostile_item_lands_intact_or_raises_documented_error(item: dict[Any, Any]) -> None:
    got = encode_or_documented_error(item)
    event("accepted" if got is not None else "refused")
    if got is not None:
        trace_id, span_id, body = got
        assert trace_id == item["trace_id"]
        assert_intact(item, body, span_id)


def _later(start: datetime, duration: timedelta) -> datetime:
    """`start + duration` as an instant: `+` on a zoned time drops `fold`, which moves an ambiguous local time."""
    if start.tzinfo is None:
        return start + duration
    return (start.astimezone(UTC) + duration).astimezone(start.tzinfo)


@FAST
@given(
    trace_id=st.uuids().map(str),
    name=plain_text,
    start=st.datetimes(timezones=any_tz),
    duration=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)),
    metadata=st.dictionaries(
        plain_text,
        st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), plain_text),
        max_size=5,
    ),
)
def test_valid_items_are_never_refused(
    trace_id: str, name: str, start: datetime, duration: timedelta, metadata: dict[str, Any]
) -> None:
    assume(timedelta(days=4) < _instant(start) < _instant(datetime.max) - timedelta(days=4))
    item = {
        "trace_id": trace_id,
        "name": name,
        "start_timestamp": start,
        "end_timestamp": _later(start, duration),
        "metadata": metadata,
    }
    enc = encode_item(item, MAX)  # must not raise
    assert enc.is_end
    assert_intact(item, enc.body, enc.span_id)


@FAST
@given(
    key=st.sampled_from(["trace_id", "id", "parent_id", "group_id"]),
    bad=st.sampled_from(["a\x00b", "\ud800", "x\udfffy", ""]),
)
def test_bad_bytes_in_id_fields_are_refused(key: str, bad: str) -> None:
    item = {"trace_id": "t", "id": "i", "name": "n", "start_timestamp": "2026-01-01T00:00:00+00:00", key: bad}
    with pytest.raises(ValueError, match=key):
        encode_item(item, MAX)


@settings(max_examples=40, deadline=None)
@given(depth=st.integers(1, 400), container=st.sampled_from(["list", "dict"]))
def test_deep_nesting_lands_or_says_too_deep(depth: int, container: str) -> None:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value] if container == "list" else {"k": value}
    item = {"trace_id": "t", "id": "i", "name": "n", "start_timestamp": "2026-01-01T00:00:00Z", "metadata": value}
    try:
        enc = encode_item(item, MAX)
    except ValueError as exc:
        assert "nested too deeply" in str(exc)
        assert depth > 200
        return
    assert orjson.loads(enc.body)["metadata"] == value


def test_reference_cycle_is_a_value_error() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="nested too deeply"):
        encode_item({"trace_id": "t", "name": "n", "start_timestamp": "2026-01-01T00:00:00Z", "metadata": loop}, MAX)


@FAST
@given(value=st.sampled_from([{1}, b"bytes", object(), 1 + 2j, frozenset(), bytearray(b"x")]), where=plain_text)
def test_unserializable_values_are_type_errors_naming_the_path(value: object, where: str) -> None:
    item = {"trace_id": "t", "name": "n", "start_timestamp": "2026-01-01T00:00:00Z", "metadata": {where: value}}
    with pytest.raises(TypeError, match="metadata"):
        encode_item(item, MAX)


def test_colliding_keys_are_refused_not_merged() -> None:
    item = {"trace_id": "t", "name": "n", "start_timestamp": "2026-01-01T00:00:00Z", "metadata": {1: "a", "1": "b"}}
    with pytest.raises(ValueError, match="metadata"):
        encode_item(item, MAX)


def test_a_start_with_a_seconds_offset_keeps_its_instant() -> None:
    start = datetime(1900, 1, 1, 12, 0, tzinfo=timezone(timedelta(minutes=19, seconds=32)))  # Amsterdam, 1900
    enc = encode_item({"trace_id": "t", "name": "n", "start_timestamp": start}, MAX)
    assert _instant(orjson.loads(enc.body)["start_timestamp"]) == _instant(start)


def test_any_mapping_is_accepted() -> None:
    from types import MappingProxyType

    item = MappingProxyType({"trace_id": "t", "id": "i", "name": "n", "start_timestamp": "2026-01-01T00:00:00Z"})
    assert orjson.loads(encode_item(item, MAX).body) == dict(item)


# -- through Spool.put into the file ------------------------------------------------------------------------


@settings(max_examples=max(25, EXAMPLES // 6), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_items(), min_size=1, max_size=25))
def test_put_stores_exactly_what_was_accepted(items: list[dict[Any, Any]]) -> None:
    """Through `Spool.put` into a real file: accepted items are stored intact, refused ones leave no row."""
    accepted: dict[tuple[str, str], dict[Any, Any]] = {}

    async def main(path: Path) -> None:
        async with Spool(path, config=SpoolConfig(commit_interval=0.0, max_item_bytes=MAX)) as sp:
            for n, item in enumerate(items):
                if item.get("id") is None:
                    item["id"] = f"given-{n}"  # known, so the row can be found
                if isinstance(item.get("trace_id"), str):
                    item["trace_id"] = f"{n}:{item['trace_id']}"  # unique: no coalescing, one row per accepted item
                try:
                    sp.put(item)
                except (ValueError, TypeError):
                    continue
                accepted[(item["trace_id"], item["id"])] = item
            await sp.commit()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spans.db"
        asyncio.run(main(path))
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT trace_id, span_id, is_end, body FROM spans").fetchall()
    assert len(rows) == len(accepted)
    for trace_id, span_id, is_end, body in rows:
        item = accepted[(trace_id, span_id)]
        assert bool(is_end) == (item.get("end_timestamp") is not None)
        assert_intact(item, bytes(body), span_id)
