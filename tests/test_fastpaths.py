"""The speed-ups' contracts: the encoder's fast path (same result as the checked path), the heap trimmer, and the
sink's proxy choice (what httpx's `trust_env` would pick, now that the sink calls httpx's transport directly)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spool._items as items_mod
from spool._items import encode_item
from spool._sink import _proxy_for
from spool._trim import Trimmer, _malloc_trim


def test_proxy_comes_from_the_environment_like_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    assert _proxy_for("https://api.example.com/v5/spans/batch") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert _proxy_for("https://api.example.com/v5/spans/batch") == "http://proxy:3128"
    assert _proxy_for("http://127.0.0.1:9/v5/spans/batch") is None  # no http proxy set
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    assert _proxy_for("https://api.example.com/v5/spans/batch") is None


# -- encode_item's fast path gives exactly what the checked path gives ------------------------------------------------

_ids = st.one_of(st.text(max_size=300), st.integers(), st.none(), st.just(""), st.just("a\x00b"), st.just("é" * 200))
_stamps = st.one_of(
    st.just("2026-11-28T10:00:00+00:00"),
    st.just("2026-11-28T09:59:59.5+00:00"),
    st.just("2026-11-28T10:00:00"),
    st.just("2026-11-28T12:00:00+02:00"),
    st.just("2026-11-28T09:00:00-01:00"),
    st.just("2026-11-28T10:00:00.000001Z"),
    st.just("not a time"),
    st.just("2026-11-28T10:00:00\x00"),
    st.datetimes(min_value=datetime(2026, 11, 28), max_value=datetime(2026, 11, 29)),
    st.datetimes(min_value=datetime(2026, 11, 28), max_value=datetime(2026, 11, 29), timezones=st.just(UTC)),
    st.just(datetime(2026, 11, 28, 10, tzinfo=timezone(timedelta(hours=1, seconds=30)))),
    st.none(),
)


def _outcome(item: dict[str, Any], compact: bool = False) -> object:
    """What encode_item does with `item`; a minted id (missing `id`) is taken out so two calls compare equal."""
    try:
        enc = encode_item(item, 4096, compact=compact)
    except (ValueError, TypeError) as exc:
        return ("error", type(exc), str(exc))
    if "id" in item:
        return ("ok", enc)
    doc = orjson.loads(enc.body)
    del doc["id"]
    return ("ok", enc.trace_id, enc.is_end, doc)


@settings(max_examples=400, deadline=None)
@given(
    trace_id=_ids,
    span_id=_ids,
    parent_id=_ids,
    name=st.one_of(st.text(max_size=20), st.none(), st.integers()),
    start=_stamps,
    end=_stamps,
    extra=st.dictionaries(
        st.sampled_from(["input", "metadata", "group_id", "status"]),
        st.one_of(
            st.text(max_size=5000),
            st.integers(),
            st.floats(),
            st.none(),
            st.just({1: "x"}),
            st.just({"o": object()}),
        ),
        max_size=3,
    ),
    compact=st.booleans(),
)
def test_fast_path_matches_the_checked_path(
    trace_id: object,
    span_id: object,
    parent_id: object,
    name: object,
    start: object,
    end: object,
    extra: dict[str, Any],
    compact: bool,
) -> None:
    item: dict[str, Any] = {"trace_id": trace_id, "name": name, "start_timestamp": start, **extra}
    for key, value in (("id", span_id), ("parent_id", parent_id), ("end_timestamp", end)):
        if value is not None:
            item[key] = value
    fast = _outcome(item, compact)
    saved = items_mod.encode_fast
    items_mod.encode_fast = lambda *a: None  # type: ignore[assignment]
    try:
        checked = _outcome(item, compact)
    finally:
        items_mod.encode_fast = saved
    assert fast == checked


def test_the_fast_path_takes_the_common_shapes() -> None:
    """The shapes the hot path is for never fall through to the checked path (a silent slowdown otherwise)."""
    base = {"trace_id": "t", "id": "s", "parent_id": "p", "name": "n"}
    t0, t1 = datetime(2026, 11, 28, 10, tzinfo=UTC), datetime(2026, 11, 28, 11, tzinfo=UTC)
    for start, end in ((t0, t1), (t0.isoformat(), t1.isoformat()), (t0.replace(tzinfo=None), None)):
        item = {**base, "start_timestamp": start, "end_timestamp": end, "group_id": None}
        assert items_mod.encode_fast(item, 4096, None, False) == encode_item(item, 4096)
    compacted = items_mod.encode_fast({**base, "start_timestamp": t0}, 4096, None, True)
    assert compacted is not None and orjson.loads(compacted.body)["id"] == "s"


# -- the heap trimmer -------------------------------------------------------------------------------------------------


def test_trim_is_due_after_every_bytes_or_after_idle_bytes_when_idle() -> None:
    t = Trimmer(every_bytes=100, idle_bytes=10)
    t.committed(9)
    assert not t.due(idle=True)
    t.committed(1)
    assert not t.due(idle=False)
    assert t.due(idle=True) is (_malloc_trim is not None)
    assert not t.due(idle=True)  # the count restarted (or there is nothing to trim with)
    t.committed(100)
    assert t.due(idle=False) is (_malloc_trim is not None)
    Trimmer.trim()  # returns free pages; never raises
