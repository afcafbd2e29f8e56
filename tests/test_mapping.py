"""Unit tests of spool._mapping: agentex spans -> SGP items, exactly like agentex's SGP processor."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from agentex.types.span import Span
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from scale_gp_beta.lib.tracing.span import BaseSpan

from spool._items import encode_item
from spool._mapping import (
    SPAN_ERROR_KEY,
    agentex_source_metadata,
    iso_timestamp,
    jsonable,
    map_span,
    span_to_item,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
T1 = T0 + timedelta(seconds=2)
SOURCE = {"__source__": "agentex"}


def _span(**kw: Any) -> Span:
    fields: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "name": "op",
        "trace_id": "trace-1",
        "start_time": T0,
    }
    fields.update(kw)
    return Span(**fields)


def _sdk_reference(span: Span, *, end: bool, metadata: Any) -> dict[str, Any]:
    """What agentex's SGP processor sends: `create_span(...)` + `start_time = isoformat()` + `to_request_params()`."""
    data = span.data
    span_type = str(data.get("__span_type__", "STANDALONE")) if isinstance(data, dict) else "STANDALONE"
    sgp = BaseSpan(
        name=span.name,
        trace_id=span.trace_id,
        span_id=span.id,
        parent_span_id=span.parent_id,
        input=span.input,  # type: ignore[arg-type]
        output=span.output,  # type: ignore[arg-type]
        metadata=metadata,
        span_type=span_type,  # type: ignore[arg-type]
    )
    sgp.start_time = span.start_time.isoformat()
    if end:
        assert span.end_time is not None
        sgp.end_time = span.end_time.isoformat()
    return dict(sgp.to_request_params())


def test_nested_spans_map_like_agentex_sgp_processor() -> None:
    root = _span(
        name="turn",
        input={"message": "hi"},
        data={"__span_type__": "AGENT_WORKFLOW", "turn": 1},
    )
    child = _span(
        name="llm",
        parent_id=root.id,
        input={"messages": [{"role": "user", "content": "hi"}]},
        output={"text": "hello"},
        data={"__span_type__": "COMPLETION", "model": "m"},
        end_time=T1,
    )
    root.end_time = T1
    for span in (root, child):
        for end in (False, True):
            got = span_to_item(span, end=end, extra_metadata=SOURCE)
            assert isinstance(span.data, dict)
            expected = _sdk_reference(span, end=end, metadata={**span.data, **SOURCE})
            assert got == expected
    item = span_to_item(child, end=True, extra_metadata=SOURCE)
    assert item["parent_id"] == root.id
    assert item["type"] == "COMPLETION"
    assert item["status"] == "SUCCESS"
    assert item["start_timestamp"] == "2025-03-01T12:00:00.123456+00:00"
    assert item["end_timestamp"] == "2025-03-01T12:00:02.123456+00:00"
    assert item["metadata"] == {"__span_type__": "COMPLETION", "model": "m", "__source__": "agentex"}
    assert "parent_id" not in span_to_item(root, end=False)


def test_start_event_has_no_end_timestamp_even_if_span_has_end_time() -> None:
    span = _span(end_time=T1)
    assert "end_timestamp" not in span_to_item(span, end=False)
    assert span_to_item(span, end=True)["end_timestamp"] == T1.isoformat()


def test_end_without_end_time_gets_now() -> None:
    before = datetime.now(UTC)
    item = span_to_item(_span(start_time=before), end=True)
    end = datetime.fromisoformat(item["end_timestamp"])
    assert before <= end <= datetime.now(UTC)


def test_defaults_type_standalone_and_empty_io() -> None:
    item = span_to_item(_span(), end=False)
    assert item["type"] == "STANDALONE"
    assert item["input"] == {} and item["output"] == {} and item["metadata"] == {}
    assert span_to_item(_span(), end=False, extra_metadata=SOURCE)["metadata"] == SOURCE


def test_non_string_span_type_is_stringified() -> None:
    assert span_to_item(_span(data={"__span_type__": 7}), end=False)["type"] == "7"


def test_list_shapes_pass_through_and_get_no_source_keys() -> None:
    span = _span(input=[{"a": 1}], output=[{"b": 2}], data=[{"c": 3}])
    item = span_to_item(span, end=True, extra_metadata=SOURCE)
    assert item["input"] == [{"a": 1}]
    assert item["output"] == [{"b": 2}]
    assert item["metadata"] == [{"c": 3}]
    assert item["type"] == "STANDALONE"
    assert span_to_item(_span(data=[]), end=False)["metadata"] == {}


def test_error_recorded_by_agentex_becomes_status_error() -> None:
    error = {
        "type": "ValueError",
        "message": "boom",
        "category": "Application",
        "category_source": "stack_trace",
        "classifier_version": "1",
        "category_reason": "stack_rule:application_module",
    }
    data = {"__span_type__": "TOOL", SPAN_ERROR_KEY: error}
    span = _span(data=data)
    item = span_to_item(span, end=True, extra_metadata=SOURCE)
    assert item["status"] == "ERROR"
    md = item["metadata"]
    assert md["error"] is True
    assert md["error_type"] == "ValueError"
    assert md["error_message"] == "boom"
    assert md["error_category"] == "application"
    assert md["error_category_source"] == "stack_trace"
    assert md["error_classifier_version"] == "1"
    assert md["error_category_reason"] == "stack_rule:application_module"
    assert md["__source__"] == "agentex"
    assert md[SPAN_ERROR_KEY] == error
    # The caller's span is never mutated.
    assert span.data == {"__span_type__": "TOOL", SPAN_ERROR_KEY: error}
    # The same as the SDK's own set_error.
    sdk = BaseSpan(name="op", trace_id="t", metadata={})
    sdk.set_error(error_type="ValueError", error_message="boom", error_category="application")
    assert {k: md[k] for k in sdk.metadata} == sdk.metadata
    assert sdk.status == "ERROR"


def test_unknown_error_category_is_unknown() -> None:
    item = span_to_item(_span(data={SPAN_ERROR_KEY: {"type": "E"}}), end=True)
    assert item["metadata"]["error_category"] == "unknown"
    assert item["metadata"]["error_message"] is None


def test_data_is_not_copied_without_extras() -> None:
    data = {"k": "v"}
    span = _span(data=data)
    assert span_to_item(span, end=False)["metadata"] is span.data
    assert span_to_item(span, end=False, extra_metadata=SOURCE)["metadata"] is not span.data


def test_missing_id_is_left_for_the_spool() -> None:
    span = _span()
    span.id = ""
    assert "id" not in span_to_item(span, end=False)


def test_keys_come_in_one_order_whatever_the_event_lacks() -> None:
    """The stored bytes follow the key order: the same event must always encode to the same bytes (a re-put of
    identical bytes is no update), so the keys an event lacks are left out without moving the others."""
    order = ["name", "trace_id", "start_timestamp", "input", "output", "metadata", "status", "type"]
    child = _span(parent_id="root", end_time=T1)
    assert list(span_to_item(child, end=True)) == [*order, "id", "parent_id", "end_timestamp"]
    assert list(span_to_item(child, end=False)) == [*order, "id", "parent_id"]
    root = _span(id="")
    assert list(span_to_item(root, end=True)) == [*order, "end_timestamp"]
    assert list(span_to_item(root, end=False)) == order
    for end in (False, True):  # the processors' positional entry maps the same
        assert map_span(child, end, SOURCE, False) == span_to_item(child, end=end, extra_metadata=SOURCE, iso=False)


def test_iso_false_keeps_offset_aware_datetimes_for_the_encoder() -> None:
    naive = datetime(2025, 1, 1, 8, 30)
    span = _span(start_time=naive, end_time=naive + timedelta(seconds=1))
    item = span_to_item(span, end=True, iso=False)
    assert item["start_timestamp"] == naive.replace(tzinfo=UTC)
    assert item["start_timestamp"].tzinfo is not None
    stored = orjson.loads(encode_item(item, 1 << 20).body)
    assert stored["start_timestamp"] == "2025-01-01T08:30:00+00:00"
    assert stored["end_timestamp"] == "2025-01-01T08:30:01+00:00"
    assert span_to_item(span, end=True)["start_timestamp"] == "2025-01-01T08:30:00+00:00"


def test_other_offsets_are_kept() -> None:
    tz = timezone(timedelta(hours=2))
    item = span_to_item(_span(start_time=T0.astimezone(tz)), end=False)
    assert item["start_timestamp"] == "2025-03-01T14:00:00.123456+02:00"


def test_agentex_shaped_dict_maps_like_the_span() -> None:
    span = _span(parent_id="p", input={"a": 1}, data={"__span_type__": "TOOL"}, end_time=T1)
    assert span_to_item(span.model_dump(), end=True, extra_metadata=SOURCE) == span_to_item(
        span, end=True, extra_metadata=SOURCE
    )


def test_sgp_item_dict_passes_through() -> None:
    item = {"name": "n", "trace_id": "t", "id": "i", "start_timestamp": "2025-01-01T00:00:00+00:00"}
    assert span_to_item(item, end=False, extra_metadata=SOURCE) is item
    ended = span_to_item(item, end=True)
    assert "end_timestamp" not in item  # not mutated
    assert datetime.fromisoformat(ended["end_timestamp"]).tzinfo is not None
    with_dt = {**item, "end_timestamp": T1}
    assert span_to_item(with_dt, end=True)["end_timestamp"] == T1.isoformat()
    assert span_to_item(with_dt, end=True, iso=False)["end_timestamp"] is T1


def test_duck_typed_objects() -> None:
    class Slotted:
        __slots__ = ("data", "id", "name", "start_time", "trace_id")

        def __init__(self) -> None:
            self.id, self.name, self.trace_id, self.start_time, self.data = "i", "n", "t", T0, None

    class WithProperty:
        def __init__(self) -> None:
            self.start_time, self.trace_id, self.id = T0, "t", "i"

        @property
        def name(self) -> str:
            return "from property"

    assert span_to_item(WithProperty(), end=False)["name"] == "from property"

    item = span_to_item(Slotted(), end=False)
    assert item["id"] == "i" and item["name"] == "n" and item["start_timestamp"] == T0.isoformat()
    with pytest.raises(AttributeError):
        span_to_item(object(), end=False)


def test_bad_timestamp_raises_value_error_naming_field() -> None:
    with pytest.raises(ValueError, match="start_time"):
        span_to_item({"name": "n", "trace_id": "t", "start_time": [1]}, end=False)
    assert iso_timestamp(0) == "1970-01-01T00:00:00+00:00"
    assert iso_timestamp("2025-01-01T00:00:00Z") == "2025-01-01T00:00:00Z"


def test_agentex_source_metadata_reads_env() -> None:
    env = {"ACP_TYPE": "sync", "AGENT_NAME": "a", "AGENT_ID": "id-1"}
    assert agentex_source_metadata(env) == {
        "__source__": "agentex",
        "__acp_type__": "sync",
        "__agent_name__": "a",
        "__agent_id__": "id-1",
    }
    assert agentex_source_metadata({}) == {"__source__": "agentex"}


# -- jsonable -------------------------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


class Model(BaseModel):
    x: int
    when: datetime


@dataclasses.dataclass
class Point:
    x: int
    tags: set[str]


def test_jsonable_stringifies_what_json_cannot_hold() -> None:
    marker = object()
    cyc: list[Any] = [1]
    cyc.append(cyc)
    value = {
        "obj": marker,
        "dt": T0,
        "date": T0.date(),
        "bytes": b"ab\xff",
        "set": {1},
        "tuple": (1, "a"),
        "nan": math.nan,
        "enum": Color.RED,
        "model": Model(x=1, when=T0),
        "dc": Point(1, {"a"}),
        "uuid": uuid.UUID(int=1),
        3: "int key",
        "cycle": cyc,
        "nested": {"deeper": [marker]},
    }
    out = jsonable(value)
    text = json.dumps(out, allow_nan=False)
    assert out["obj"] == str(marker)
    assert out["dt"] == T0.isoformat()
    assert out["date"] == "2025-03-01"
    assert out["bytes"] == "ab\ufffd"
    assert out["set"] == [1] and out["tuple"] == [1, "a"]
    assert out["nan"] == "nan"
    assert out["enum"] == "red"
    assert out["model"] == {"x": 1, "when": T0.isoformat()}
    assert out["dc"] == {"x": 1, "tags": ["a"]}
    assert out["uuid"] == "00000000-0000-0000-0000-000000000001"
    assert out["3"] == "int key"
    assert out["cycle"][0] == 1 and isinstance(out["cycle"][1], str)
    assert out["nested"]["deeper"] == [str(marker)]
    assert "object object" in text


def test_jsonable_survives_hostile_str() -> None:
    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert jsonable([Hostile()]) == ["<unprintable Hostile>"]


def test_jsonable_fixes_what_the_spool_encoder_refuses() -> None:
    value = {"big": 2**70, "neg": -(2**63) - 1, "ok": 2**63, "sur\ud800": "x\udfffy"}
    out = jsonable(value)
    assert out["big"] == str(2**70) and out["neg"] == str(-(2**63) - 1) and out["ok"] == 2**63
    assert out["sur\ufffd"] == "x\ufffdy"
    encode_item({"name": "n", "trace_id": "t", "start_timestamp": T0, "input": out}, 1 << 20)


def test_jsonable_deep_nesting_is_cut() -> None:
    deep: Any = "leaf"
    for _ in range(200):
        deep = [deep]
    json.dumps(jsonable(deep))


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.text(st.characters(codec=None, categories=["Cs", "Ll"]), max_size=3),
    st.binary(max_size=8),
    st.datetimes(),
    st.builds(object),
    st.builds(Color, st.just("red")),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), inner, max_size=4),
    ),
    max_leaves=20,
)


@given(_values)
def test_jsonable_output_always_encodes(value: Any) -> None:
    json.dumps(jsonable(value), allow_nan=False)
    orjson.dumps(jsonable(value))
