"""Validating and encoding one span item: I/O-free, on the producer's hot path."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

__all__ = ["Encoded", "encode_checked", "encode_fast", "encode_item", "new_span_id"]

_OPTS = orjson.OPT_NAIVE_UTC
_OPTS_ANY_KEYS = _OPTS | orjson.OPT_NON_STR_KEYS  # slower: only for items that need it
_ID_KEYS = ("trace_id", "id", "parent_id")
_MAX_ID_LEN = 256
_dumps = orjson.dumps
_fromisoformat = datetime.fromisoformat
_tuple_new = tuple.__new__
_join = b"".join


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
    if value is None:
        raise ValueError(f"item is missing {key!r}")
    if type(value) is not str:
        raise ValueError(f"item[{key!r}] must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"item[{key!r}] must not be empty")
    if len(value) > _MAX_ID_LEN:
        raise ValueError(f"item[{key!r}] is {len(value)} characters; at most {_MAX_ID_LEN} are allowed")
    if "\x00" in value:
        raise ValueError(f"item[{key!r}] contains a NUL character")
    if not value.isascii():  # the server counts UTF-8 bytes and refuses what is not UTF-8
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(f"item[{key!r}] is not valid UTF-8 (lone surrogate)") from None
        if size > _MAX_ID_LEN:
            raise ValueError(f"item[{key!r}] is {size} UTF-8 bytes; at most {_MAX_ID_LEN} are allowed")


def _timestamp(key: str, value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    if type(value) is str:
        try:
            if not (value.isascii() and value.isprintable()):  # fromisoformat takes any separator, NUL included
                raise ValueError
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"item[{key!r}]={value[:64]!r} is not an ISO 8601 timestamp") from None
    raise ValueError(f"item[{key!r}] must be a datetime or an ISO 8601 string, got {type(value).__name__}")


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def _key(k: object) -> str:
    """`repr(k)` for an error message; a key whose `__repr__` raises is named by its type (`put` raises only
    `ValueError` / `TypeError`)."""
    try:
        return repr(k)
    except Exception:
        return f"<{type(k).__name__} object>"


class _BadKey(NamedTuple):
    key: object


def _find(value: object, bad: Callable[[object], bool]) -> str | None:
    """The path (`item['a'][0]`) of the first value inside `value` for which `bad` holds, None if there is none.

    Linear in the item's size: each container is walked once, however often it is shared, and the path is written
    only for the value found. `bad` is asked about every value and key; it need only judge a container itself."""
    seen: set[int] = set()
    trail: list[object] = []  # the keys and indexes from the item to the value being looked at

    def walk(v: object) -> bool:
        if bad(v):
            return True
        keyed = type(v) is dict or (type(v) not in _PLAIN and isinstance(v, Mapping))  # exact types first: faster
        if keyed:
            pairs: Iterable[tuple[object, object]] = v.items()  # type: ignore[attr-defined]
        elif isinstance(v, list | tuple | set | frozenset):
            pairs = enumerate(v)
        else:
            return False
        if id(v) in seen:
            return False
        seen.add(id(v))
        for k, child in pairs:
            if keyed and bad(k):
                trail.append(_BadKey(k))
                return True
            trail.append(k)
            if walk(child):
                return True
            trail.pop()
        return False

    if not walk(value):
        return None
    return "item" + "".join(f" key {_key(k.key)}" if type(k) is _BadKey else f"[{_key(k)}]" for k in trail)


def _has_surrogate(v: object) -> bool:
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_PLAIN = frozenset({str, int, float, bool, type(None)})  # (an int out of range is `_explain`'s own check)


def _unserializable(v: object) -> bool:
    """JSON cannot hold `v` itself (a dict, list or tuple is judged by what it holds)."""
    if type(v) in _PLAIN or isinstance(v, dict | list | tuple):
        return False
    try:
        orjson.dumps(v, option=_OPTS_ANY_KEYS)
    except TypeError:
        return True
    return False


def _fast_ts(value: object) -> datetime | None:
    """A timestamp `encode_fast` takes as is: an ASCII string `fromisoformat` parses, or a datetime naive or in UTC."""
    if type(value) is str:
        if not (value.isascii() and value.isprintable()):
            return None
        try:
            return _fromisoformat(value)
        except ValueError:
            return None
    if type(value) is datetime and (value.tzinfo is None or value.tzinfo is UTC):
        return value
    return None


def encode_fast(
    item: dict[str, Any], max_item_bytes: int, default: Callable[[Any], Any] | None, compact: bool
) -> Encoded | None:
    """`encode_item`'s common case, checked inline (the put hot path): a plain dict with an `id`, ASCII ids,
    no `group_id`, timestamps `_fast_ts` takes. Returns exactly what `encode_checked` returns for such an item, or
    None for anything else, valid or not, so that every error is raised (and worded) by `encode_checked`."""
    try:
        trace_id, span_id, name, start = item["trace_id"], item["id"], item["name"], item["start_timestamp"]
    except KeyError:
        return None
    parent_id, end = item.get("parent_id"), item.get("end_timestamp")
    if not (
        type(trace_id) is str
        and type(span_id) is str
        and type(name) is str
        and 0 < len(trace_id) <= _MAX_ID_LEN
        and 0 < len(span_id) <= _MAX_ID_LEN
        and trace_id.isascii()
        and span_id.isascii()
        and "\x00" not in trace_id
        and "\x00" not in span_id
        and (
            parent_id is None
            or (
                type(parent_id) is str
                and 0 < len(parent_id) <= _MAX_ID_LEN
                and parent_id.isascii()
                and "\x00" not in parent_id
            )
        )
        and ("group_id" not in item or item["group_id"] is None)
    ):
        return None
    # `_fast_ts`, inlined for the two common shapes (a call costs about as much as a check).
    if type(start) is str and (end is None or type(end) is str):  # ISO strings: items made by hand, the SDK's
        if not (start.isascii() and start.isprintable()):
            return None
        try:
            start_ts = _fromisoformat(start)
            if end is not None:
                if not (end.isascii() and end.isprintable()):
                    return None
                if _fromisoformat(end) < start_ts:  # (naive against aware: TypeError)
                    return None
        except (ValueError, TypeError):
            return None
    elif type(start) is datetime and (end is None or type(end) is datetime):  # what the processors map spans to
        tz = start.tzinfo
        if (tz is not None and tz is not UTC) or (end is not None and (end.tzinfo is not tz or end < start)):
            return None
    else:
        first = _fast_ts(start)
        if first is None:
            return None
        if end is not None:
            last = _fast_ts(end)
            if last is None or (last.tzinfo is None) is not (first.tzinfo is None) or last < first:
                return None
    try:
        body = _dumps(item, default, _OPTS)
    except TypeError:
        return None
    if len(body) > max_item_bytes:
        return None
    if compact:
        body = _join((body, b""))
    return _tuple_new(Encoded, (trace_id, span_id, end is not None, body))


def encode_item(
    item: Mapping[str, Any],
    max_item_bytes: int,
    default: Callable[[Any], Any] | None = None,
    *,
    compact: bool = False,
) -> Encoded:
    """Validate `item` (an SGP `SpanCreateParam`-shaped mapping) and encode it once.

    Assigns a uuid4 `id` when missing. `datetime` timestamps are written as ISO 8601 with an offset (naive means
    UTC). Raises `ValueError` for a missing or ill-typed required key, an id the server would refuse, an end before
    its start, or an item over `max_item_bytes`; `TypeError` for a value JSON cannot hold (unless `default` maps it).
    Each message names the key. Non-string keys are written as JSON strings (ValueError if two become equal); NaN and
    infinities, which JSON cannot hold, are written as null. `compact=True` copies the body into an object of its
    own size (orjson's result keeps a buffer of 4-8 KiB; worth ~0.2 µs when many items wait in memory).
    """
    if type(item) is dict and (fast := encode_fast(item, max_item_bytes, default, compact)) is not None:
        return fast
    return encode_checked(item, max_item_bytes, default, compact=compact)


def encode_checked(
    item: Mapping[str, Any],
    max_item_bytes: int,
    default: Callable[[Any], Any] | None = None,
    *,
    compact: bool = False,
) -> Encoded:
    """`encode_item` without its fast path: every check in turn, each failure raised with its own message."""
    if type(item) is not dict:
        if not isinstance(item, Mapping):
            raise TypeError(f"item must be a mapping (an SGP span dict), got {type(item).__name__}")
        if not isinstance(item, dict):
            item = dict(item)
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
    if end is not None:
        end_ts = _timestamp("end_timestamp", end)
        try:
            before = _utc(end_ts) < _utc(start_ts)
        except (TypeError, OverflowError):  # a tzinfo without an offset, or beyond datetime's range in UTC
            raise ValueError("item['end_timestamp'] cannot be compared with item['start_timestamp']") from None
        if before:
            raise ValueError("item['end_timestamp'] is before item['start_timestamp']")
        if end_ts is end and _odd_offset(end_ts):
            item = {**item, "end_timestamp": _in_utc("end_timestamp", end_ts)}
    if start_ts is start and _odd_offset(start_ts):
        item = {**item, "start_timestamp": _in_utc("start_timestamp", start_ts)}
    if (parent_id := item.get("parent_id")) is not None:
        _check_id("parent_id", parent_id)
    if (group_id := item.get("group_id")) is not None:
        _check_id("group_id", group_id)
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
        if (where := _merged_keys(item, orjson.loads(body))) is not None:
            raise ValueError(f"{where} has keys that are equal as JSON strings (e.g. 1 and '1')") from None
    if len(body) > max_item_bytes:
        raise ValueError(f"item is {len(body)} bytes encoded; max_item_bytes is {max_item_bytes}")
    if compact:
        body = _join((body, b""))
    return Encoded(trace_id, span_id, end is not None, body)  # type: ignore[arg-type]


def _odd_offset(ts: datetime) -> bool:
    """A UTC offset with seconds (historic zones): orjson would write it cut to minutes, moving the instant."""
    off = ts.utcoffset()
    return off is not None and bool(off.seconds % 60 or off.microseconds)


def _in_utc(key: str, ts: datetime) -> datetime:
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"item[{key!r}] is out of range in UTC") from None


def _merged_keys(value: object, decoded: object, path: str = "item") -> str | None:
    """The path of the first mapping whose keys collided when written as JSON strings (`decoded` has fewer)."""
    if isinstance(value, Mapping):
        if not isinstance(decoded, dict) or len(decoded) != len(value):
            return path
        for (k, v), d in zip(value.items(), decoded.values(), strict=False):
            if (p := _merged_keys(v, d, f"{path}[{_key(k)}]")) is not None:
                return p
    elif isinstance(value, list | tuple) and isinstance(decoded, list):
        for i, (v, d) in enumerate(zip(value, decoded, strict=False)):
            if (p := _merged_keys(v, d, f"{path}[{i}]")) is not None:
                return p
    return None


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
