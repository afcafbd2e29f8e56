"""Map agentex spans (or plain dicts) to Scale GP ``SpanCreateParam``-shaped items.

I/O-free and import-light: agentex is never imported; spans are duck-typed by the
attributes of ``agentex.types.span.Span`` (``id``, ``name``, ``trace_id``,
``parent_id``, ``start_time``, ``end_time``, ``input``, ``output``, ``data``).

The mapping mirrors agentex's own ``SGPAsyncTracingProcessor`` (``_build_sgp_span``
plus ``scale_gp_beta.lib.tracing.span.BaseSpan.to_request_params``):

- ``start_time`` / ``end_time`` -> ISO 8601 ``start_timestamp`` / ``end_timestamp``
  (a naive datetime is taken as UTC, so the string always carries an offset);
- ``data`` -> ``metadata`` (plus agentex's ``__source__`` keys when asked for),
  ``data["__span_type__"]`` -> ``type`` (default ``"STANDALONE"``);
- an error recorded by agentex under ``data["__error__"]`` -> ``status="ERROR"`` and
  ``metadata["error"|"error_type"|"error_message"|"error_category"...]``, else
  ``status="SUCCESS"``;
- ``input`` / ``output`` pass through (dict or list of dicts); empty -> ``{}``.

The hot path neither copies deeply nor dumps pydantic models nor mints ids (a
missing id is left out; the spool assigns one at ``put``). Values that the spool
cannot serialize are handled by :func:`jsonable`, which the processors call only
after ``put`` refused an item.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import math
import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "SPAN_ERROR_KEY",
    "SPAN_TYPE_KEY",
    "agentex_source_metadata",
    "iso_timestamp",
    "jsonable",
    "map_span",
    "span_to_item",
]

SPAN_TYPE_KEY = "__span_type__"
"""Key of ``Span.data`` that agentex reads the SGP span type from."""

SPAN_ERROR_KEY = "__error__"
"""Key of ``Span.data`` under which agentex records a failure (``{"type", "message", ...}``)."""

_DEFAULT_TYPE = "STANDALONE"
_UTC = _dt.UTC
_datetime = _dt.datetime
_ERROR_CATEGORIES = frozenset({"application", "platform", "unknown"})
# Optional classifier fields agentex copies from the recorded error into metadata.
_ERROR_EXTRA_KEYS = ("category_source", "classifier_version", "category_reason")
_MAX_DEPTH = 64
_INT_MIN, _INT_MAX = -(2**63), 2**64  # what the spool's JSON encoder (orjson) holds


def agentex_source_metadata(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the metadata keys agentex's SGP processor adds to every span.

    ``{"__source__": "agentex"}`` plus ``__acp_type__`` / ``__agent_name__`` /
    ``__agent_id__`` from ``ACP_TYPE`` / ``AGENT_NAME`` / ``AGENT_ID`` when set.
    Read once (by the processor's constructor), never per span.
    """
    env = os.environ if environ is None else environ
    out = {"__source__": "agentex"}
    for var, key in (
        ("ACP_TYPE", "__acp_type__"),
        ("AGENT_NAME", "__agent_name__"),
        ("AGENT_ID", "__agent_id__"),
    ):
        value = env.get(var)
        if value is not None:
            out[key] = value
    return out


def iso_timestamp(value: object, field: str = "timestamp") -> str:
    """Return ``value`` as an ISO 8601 string with a UTC offset.

    Strings pass through unchanged (the exact bytes are what the server keys on);
    a naive ``datetime`` is taken as UTC; ints/floats are Unix epoch seconds.
    Raises ``ValueError`` naming ``field`` for anything else.
    """
    ts = _timestamp(value, field)
    return ts if type(ts) is str else ts.isoformat()  # type: ignore[union-attr]


def _timestamp(value: object, field: str) -> str | _datetime:
    """Normalize a timestamp to a str (unchanged) or an offset-aware datetime."""
    if type(value) is str:
        return value
    if isinstance(value, _datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=_UTC)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return _datetime.fromtimestamp(value, _UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"{field}: not a valid epoch timestamp: {value!r}") from exc
    raise ValueError(f"{field}: expected a datetime or ISO 8601 string, got {type(value).__name__}")


def _normalize_category(value: object) -> str:
    if isinstance(value, str):
        normalized = value.strip().lower()
        if normalized in _ERROR_CATEGORIES:
            return normalized
    return "unknown"


def _from_fields(
    f: Mapping[str, Any],
    end: bool,
    extra: Mapping[str, Any] | None,
    iso: bool,
) -> dict[str, Any]:
    """Map agentex span fields (a span's ``__dict__`` or an agentex-shaped dict).

    Reads every key of `_SPAN_FIELDS` by subscript (raises ``KeyError`` if one is missing:
    callers complete the mapping and retry, off the common path).
    """
    status = "SUCCESS"
    span_type: Any = _DEFAULT_TYPE
    metadata: Any
    data = f["data"]
    if type(data) is not dict and isinstance(data, Mapping):
        data = dict(data)
    if type(data) is dict:
        span_type = data.get(SPAN_TYPE_KEY, _DEFAULT_TYPE)
        if type(span_type) is not str:
            span_type = str(span_type)
        error = data.get(SPAN_ERROR_KEY)
        if error is not None:
            # Shallow copy: never mutate the caller's span.data.
            metadata = {**data, **extra} if extra else dict(data)
            if isinstance(error, Mapping):
                status = "ERROR"
                metadata["error"] = True
                metadata["error_type"] = error.get("type")
                metadata["error_message"] = error.get("message")
                metadata["error_category"] = _normalize_category(error.get("category"))
                for key in _ERROR_EXTRA_KEYS:
                    if key in error:
                        metadata["error_" + key] = error[key]
        elif extra:
            metadata = {**data, **extra}
        else:
            metadata = data
    elif data is None:
        metadata = {**extra} if extra else {}
    else:
        # agentex passes list-shaped data through unchanged (no source keys);
        # the SDK sends an empty value as ``{}``.
        metadata = data if data else {}

    start = f["start_time"]
    if type(start) is not str and not (type(start) is _datetime and start.tzinfo is not None):
        start = _timestamp(start, "start_time")
    end_time = None
    if end:
        end_time = f["end_time"]
        if end_time is None:
            end_time = _datetime.now(_UTC)
        elif type(end_time) is not str and not (type(end_time) is _datetime and end_time.tzinfo is not None):
            end_time = _timestamp(end_time, "end_time")
    input_ = f["input"]
    output = f["output"]
    span_id = f["id"]
    parent_id = f["parent_id"]
    # One literal with every key, then out with those the event lacks: a dict grown past 10 keys is rebuilt.
    item: dict[str, Any] = {
        "name": f["name"],
        "trace_id": f["trace_id"],
        "start_timestamp": start,
        "input": input_ if input_ else {},
        "output": output if output else {},
        "metadata": metadata,
        "status": status,
        "type": span_type,
        "id": span_id,
        "parent_id": parent_id,
        "end_timestamp": end_time,
    }
    if not span_id:
        del item["id"]
    if parent_id is None:
        del item["parent_id"]
    if not end:
        del item["end_timestamp"]
    if iso:
        _iso_in_place(item)
    return item


def _iso_in_place(item: dict[str, Any]) -> None:
    for key in ("start_timestamp", "end_timestamp"):
        value = item.get(key)
        if isinstance(value, _datetime):
            item[key] = iso_timestamp(value, key)


_SPAN_FIELDS = ("id", "name", "trace_id", "parent_id", "start_time", "end_time", "input", "output", "data")


def _complete(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {key: fields.get(key) for key in _SPAN_FIELDS}


def span_to_item(
    span: object,
    *,
    end: bool,
    extra_metadata: Mapping[str, Any] | None = None,
    iso: bool = True,
) -> dict[str, Any]:
    """Map one span event to an SGP item dict (``SpanCreateParam`` shape).

    ``span`` is an agentex ``Span`` (any object with its attributes), an
    agentex-shaped dict (``start_time`` key), or an SGP item dict
    (``start_timestamp`` key). ``end=True`` makes it an end event: an
    ``end_timestamp`` is always present (``end_time``, or now when unset), as
    agentex's ``end_span`` guarantees. ``extra_metadata`` (e.g.
    :func:`agentex_source_metadata`) is merged into dict-shaped metadata of
    agentex spans; SGP item dicts are passed through as given.

    Timestamps come out as ISO 8601 strings with an offset (``iso=True``) or, with
    ``iso=False``, as offset-aware ``datetime`` objects that the spool serializes
    to ISO 8601 itself, off the Python hot path (``datetime.isoformat`` costs more
    than the rest of the mapping). Strings given as timestamps are kept as is.

    The result may share ``input``/``output``/``metadata`` objects with ``span``;
    the spool serializes it at ``put``. Raises ``ValueError`` on an unusable
    timestamp and ``AttributeError`` when ``span`` lacks ``name``, ``trace_id``
    or ``start_time``.
    """
    return map_span(span, end, extra_metadata, iso)


def map_span(span: object, end: bool, extra_metadata: Mapping[str, Any] | None, iso: bool) -> dict[str, Any]:
    """`span_to_item` with positional arguments (the processors' hot path: no keyword matching per call)."""
    fields = getattr(span, "__dict__", None)
    if type(fields) is dict and "start_time" in fields:
        # An agentex Span (pydantic keeps fields in __dict__): the hot path.
        try:
            return _from_fields(fields, end, extra_metadata, iso)
        except KeyError:
            pass  # some field is a property or class default: read the attributes
    elif isinstance(span, Mapping):
        return _mapping_to_item(span, end, extra_metadata, iso)
    # Not a plain attribute object (slots, properties): read the attributes.
    attrs = {key: getattr(span, key, None) for key in _SPAN_FIELDS}
    for key in ("name", "trace_id", "start_time"):
        if attrs[key] is None:
            raise AttributeError(f"{type(span).__name__} has no span attribute {key!r}")
    return _from_fields(attrs, end, extra_metadata, iso)


def _mapping_to_item(span: Mapping[str, Any], end: bool, extra: Mapping[str, Any] | None, iso: bool) -> dict[str, Any]:
    if "start_timestamp" not in span and "start_time" in span:
        # An agentex span as a dict (e.g. ``Span.model_dump()``).
        return _from_fields(_complete(span), end, extra, iso)
    # An SGP item: passed through (the spool validates it); only an end event
    # without an end_timestamp gets one, and ``iso`` formats datetimes.
    item = span if type(span) is dict else dict(span)
    needs_end = end and item.get("end_timestamp") is None
    if needs_end or (
        iso and (isinstance(item.get("start_timestamp"), _datetime) or isinstance(item.get("end_timestamp"), _datetime))
    ):
        item = dict(item)
        if needs_end:
            item["end_timestamp"] = _datetime.now(_UTC)
        if iso:
            _iso_in_place(item)
    return item


def jsonable(value: Any) -> Any:
    """Return a JSON-safe copy of ``value``: anything unknown is stringified.

    Dicts (keys made ``str``), lists/tuples/sets, str/int/bool/None and finite
    floats are kept; datetimes/dates/times -> ISO strings; bytes and strings with
    lone surrogates -> UTF-8 text (replacement characters); enums -> their value;
    pydantic models -> ``model_dump``; dataclasses -> dicts; integers beyond 64 bits,
    non-finite floats, cycles, depth over 64 and everything else -> ``str(value)``
    (``repr`` if ``str`` fails). Never raises.
    """
    return _jsonable(value, 0, set())


def _stringify(value: Any) -> str:
    try:
        return _text(str(value))
    except Exception:
        try:
            return _text(repr(value))
        except Exception:
            return f"<unprintable {type(value).__name__}>"


def _text(value: str) -> str:
    """``value`` as a plain str that encodes to UTF-8 (lone surrogates replaced)."""
    value = str.__str__(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
    return value


def _jsonable(value: Any, depth: int, seen: set[int]) -> Any:
    if value is None or value is True or value is False:
        return value
    if isinstance(value, enum.Enum) and isinstance(value, str | int | float):
        return _jsonable(value.value, depth + 1, seen)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int):
        value = int(value)
        return value if _INT_MIN <= value < _INT_MAX else str(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else _stringify(value)
    if depth >= _MAX_DEPTH:
        return _stringify(value)
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        marker = id(value)
        if marker in seen:
            return _stringify(type(value).__name__ + " cycle")
        seen.add(marker)
        try:
            if isinstance(value, Mapping):
                return {
                    _text(k) if isinstance(k, str) else _stringify(k): _jsonable(v, depth + 1, seen)
                    for k, v in value.items()
                }
            return [_jsonable(v, depth + 1, seen) for v in value]
        except Exception:
            return _stringify(value)
        finally:
            seen.discard(marker)
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, enum.Enum):
        return _jsonable(value.value, depth + 1, seen)
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        try:
            return _jsonable(dump(), depth + 1, seen)
        except Exception:
            return _stringify(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        try:
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        except Exception:
            return _stringify(value)
        return _jsonable(fields, depth + 1, seen)
    return _stringify(value)
