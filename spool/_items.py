"""Validating and encoding one span item: I/O-free, on the producer's hot path."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

__all__ = ["Encoded", "encode_item", "new_span_id"]

_OPTS = orjson.OPT_NAIVE_UTC
_OPTS_ANY_KEYS = _OPTS | orjson.OPT_NON_STR_KEYS  # slower: only for items that need it
_ID_KEYS = ("trace_id", "id", "parent_id")
_MAX_ID_LEN = 256


class Encoded(NamedTuple):
    """A validated item: its key, whether it is an end event, and the exact bytes to store and send."""

    trace_id: str
    span_id: str
    is_end: bool
    body: bytes


def new_span_id() -> str:
    """A random (version 4) UUID string; cheaper than `str(uuid.uuid4())`."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _check_id(key: str, value: object) -> None:
    if type(value) is not str:
        raise ValueError(f"item[{key!r}] must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"item[{key!r}] must not be empty")
    if len(value) > _MAX_ID_LEN:
        raise ValueError(f"item[{key!r}] is {len(value)} characters; at most {_MAX_ID_LEN} are allowed")
    if "\x00" in value:
        raise ValueError(f"item[{key!r}] contains a NUL character")


def _timestamp(key: str, value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    if type(value) is str:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"item[{key!r}]={value[:64]!r} is not an ISO 8601 timestamp") from None
    raise ValueError(f"item[{key!r}] must be a datetime or an ISO 8601 string, got {type(value).__name__}")


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def _find(value: object, bad: Callable[[object], bool], path: str = "item") -> str | None:
    """The path of the first value inside `value` for which `bad` holds (error messages only: slow is fine)."""
    if bad(value):
        return path
    if isinstance(value, Mapping):
        for k, v in value.items():
            if bad(k):
                return f"{path} key {k!r}"
            if (p := _find(v, bad, f"{path}[{k!r}]")) is not None:
                return p
    elif isinstance(value, list | tuple | set | frozenset):
        for i, v in enumerate(value):
            if (p := _find(v, bad, f"{path}[{i}]")) is not None:
                return p
    return None


def _has_surrogate(v: object) -> bool:
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _unserializable(v: object) -> bool:
    try:
        orjson.dumps(v, option=_OPTS_ANY_KEYS)
    except TypeError:
        return not isinstance(v, Mapping | list | tuple)
    return False


def encode_item(
    item: Mapping[str, Any],
    max_item_bytes: int,
    default: Callable[[Any], Any] | None = None,
) -> Encoded:
    """Validate `item` (an SGP `SpanCreateParam`-shaped mapping) and encode it once.

    Assigns a uuid4 `id` when missing. `datetime` timestamps are written as ISO 8601 with an offset (naive means
    UTC). Raises `ValueError` for a missing or ill-typed required key, an id the server would refuse, an end before
    its start, or an item over `max_item_bytes`; `TypeError` for a value JSON cannot hold (unless `default` maps it).
    Each message names the key.
    """
    if type(item) is not dict and not isinstance(item, Mapping):
        raise TypeError(f"item must be a mapping (an SGP span dict), got {type(item).__name__}")
    trace_id = item.get("trace_id")
    _check_id("trace_id", trace_id)
    name = item.get("name")
    if type(name) is not str:
        raise ValueError(
            "item is missing required key 'name'"
            if name is None
            else f"item['name'] must be a string, got {type(name).__name__}"
        )
    start = item.get("start_timestamp")
    if start is None:
        raise ValueError("item is missing required key 'start_timestamp'")
    start_ts = _timestamp("start_timestamp", start)
    end = item.get("end_timestamp")
    if end is not None and _utc(_timestamp("end_timestamp", end)) < _utc(start_ts):
        raise ValueError("item['end_timestamp'] is before item['start_timestamp']")
    if (parent_id := item.get("parent_id")) is not None:
        _check_id("parent_id", parent_id)
    span_id = item.get("id")
    if span_id is None:
        span_id = new_span_id()
        item = {**item, "id": span_id}
    else:
        _check_id("id", span_id)
    try:
        body = orjson.dumps(item, default=default, option=_OPTS)
    except TypeError as exc:
        if "key must be str" not in str(exc):
            raise _explain(item, exc) from None
        try:
            body = orjson.dumps(item, default=default, option=_OPTS_ANY_KEYS)
        except TypeError as exc2:
            raise _explain(item, exc2) from None
    if len(body) > max_item_bytes:
        raise ValueError(f"item is {len(body)} bytes encoded; max_item_bytes is {max_item_bytes}")
    return Encoded(trace_id, span_id, end is not None, body)  # type: ignore[arg-type]


def _explain(item: Mapping[str, Any], exc: TypeError) -> ValueError | TypeError:
    msg = str(exc)
    if "surrogates" in msg or "UTF-8" in msg:
        return ValueError(f"{_find(item, _has_surrogate) or 'item'} is not valid UTF-8 (lone surrogate)")
    if "Integer" in msg:
        path = _find(item, lambda v: type(v) is int and not -(2**63) <= v < 2**64)
        return ValueError(f"{path or 'item'} is an integer out of the 64-bit range")
    if "Recursion" in msg:
        return ValueError("item is nested too deeply (or contains a reference cycle)")
    path = _find(item, _unserializable)
    return TypeError(f"{path or 'item'} is not JSON-serializable ({msg})")
