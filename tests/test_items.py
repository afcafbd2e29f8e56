from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from spool._items import _find, _unserializable, encode_checked, encode_item, new_span_id

MiB = 1024 * 1024
BASE = {"trace_id": "t1", "id": "s1", "name": "llm", "start_timestamp": "2026-11-28T10:00:00+00:00"}


def test_valid_item_is_stored_as_its_json_bytes() -> None:
    enc = encode_item(BASE, MiB)
    assert (enc.trace_id, enc.span_id, enc.is_end) == ("t1", "s1", False)
    assert orjson.loads(enc.body) == BASE


def test_end_event_and_datetimes_with_offsets() -> None:
    start = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    naive_end = datetime(2026, 11, 28, 10, 0, 1)
    enc = encode_item({**BASE, "start_timestamp": start, "end_timestamp": naive_end}, MiB)
    doc = orjson.loads(enc.body)
    assert enc.is_end
    assert doc["start_timestamp"] == "2026-11-28T10:00:00+00:00"
    assert doc["end_timestamp"] == "2026-11-28T10:00:01+00:00"  # naive means UTC
    other = datetime(2026, 11, 28, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert orjson.loads(encode_item({**BASE, "start_timestamp": other}, MiB).body)["start_timestamp"].endswith("+02:00")


def test_missing_id_gets_a_uuid4() -> None:
    item = {k: v for k, v in BASE.items() if k != "id"}
    enc = encode_item(item, MiB)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", enc.span_id)
    assert orjson.loads(enc.body)["id"] == enc.span_id
    assert "id" not in item  # the caller's dict is not modified
    assert len({new_span_id() for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    ("change", "exc", "key"),
    [
        ({"trace_id": None}, ValueError, "trace_id"),
        ({"trace_id": 5}, ValueError, "trace_id"),
        ({"trace_id": ""}, ValueError, "trace_id"),
        ({"name": None}, ValueError, "name"),
        ({"name": 3}, ValueError, "name"),
        ({"start_timestamp": None}, ValueError, "start_timestamp"),
        ({"start_timestamp": "yesterday"}, ValueError, "start_timestamp"),
        ({"start_timestamp": 1700000000}, ValueError, "start_timestamp"),
        ({"end_timestamp": "2026-11-28T09:00:00+00:00"}, ValueError, "end_timestamp"),
        ({"id": 12}, ValueError, "'id'"),
        ({"id": "x" * 257}, ValueError, "'id'"),
        ({"id": "a\x00b"}, ValueError, "'id'"),
        ({"parent_id": "p\x00"}, ValueError, "parent_id"),
        ({"name": "\ud800"}, ValueError, "name"),
        ({"metadata": {"k": object()}}, TypeError, "metadata"),
        ({"metadata": {"deep": [1, {"x": {1, 2}}]}}, TypeError, "deep"),
        ({"metadata": {"n": 2**70}}, ValueError, "'n'"),
    ],
)
def test_bad_items_raise_naming_the_key(change: dict[str, object], exc: type[Exception], key: str) -> None:
    with pytest.raises(exc, match=re.escape(key)):
        encode_item({**BASE, **change}, MiB)


def test_missing_required_key_is_named() -> None:
    for key in ("trace_id", "name", "start_timestamp"):
        with pytest.raises(ValueError, match=key):
            encode_item({k: v for k, v in BASE.items() if k != key}, MiB)
    with pytest.raises(ValueError, match=r"^item is missing 'trace_id'$"):  # (not "must be a string, got NoneType")
        encode_item({k: v for k, v in BASE.items() if k != "trace_id"}, MiB)


def test_not_a_mapping() -> None:
    with pytest.raises(TypeError, match="mapping"):
        encode_item(["trace_id"], MiB)  # type: ignore[arg-type]


def test_item_over_max_item_bytes() -> None:
    with pytest.raises(ValueError, match="max_item_bytes"):
        encode_item({**BASE, "input": {"prompt": "x" * 5000}}, 4096)


def test_non_string_keys_are_written_as_strings() -> None:
    doc = orjson.loads(encode_item({**BASE, "metadata": {1: "a", 2.5: "b"}}, MiB).body)
    assert doc["metadata"] == {"1": "a", "2.5": "b"}


def test_a_key_whose_repr_raises_is_still_a_type_error_naming_it() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("repr exploded")

    for item in (
        {"trace_id": "t", "name": "n", "start_timestamp": "2026-01-01T00:00:00Z", Hostile(): 1},
        {"trace_id": "t", "name": "n", "start_timestamp": "2026-01-01T00:00:00Z", "d": {Hostile(): 1}},
    ):
        with pytest.raises(TypeError, match="key <Hostile object> is not JSON-serializable"):
            encode_checked(item, 1 << 20)


def test_finding_the_bad_value_looks_at_each_shared_value_once() -> None:
    """4,000 references to one 100-deep chain, the bad value after them: each container is walked once (a walk per
    reference took 3.4 s), and the path names the bad value."""
    chain: dict[str, object] = {"v": 1}
    for _ in range(100):
        chain = {"next": chain, "x": 1}
    item = {**BASE, "input": {"chains": [chain] * 4000, "bad": object()}}
    asked = 0

    def bad(v: object) -> bool:
        nonlocal asked
        asked += 1
        return _unserializable(v)

    assert _find(item, bad) == "item['input']['bad']"
    assert asked < 4000 + 10 * 101 + 50  # each reference, each distinct value and key once, the item's own keys
    with pytest.raises(TypeError, match=re.escape("item['input']['bad'] is not JSON-serializable")):
        encode_item(item, 10**9)


def test_the_bad_value_deep_in_a_long_history_is_named() -> None:
    history = [{"role": "user", "content": "hi", "meta": {"i": i, "tags": ["a"]}} for i in range(20_000)]
    history[-1]["meta"]["tags"].append({1, 2})  # type: ignore[index]
    with pytest.raises(TypeError, match=re.escape("item['input'][19999]['meta']['tags'][1] is not JSON-serial")):
        encode_item({**BASE, "input": history}, 10**9)
