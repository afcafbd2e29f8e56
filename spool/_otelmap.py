"""OpenTelemetry SDK spans to Scale GP span items (`SpoolSpanProcessor` with `sink=SGPSink()`): I/O-free.

`trace_id` / `id` / `parent_id` are the W3C hex ids; times are UTC datetimes (written as ISO 8601); attributes go to
`metadata` (with `otel.kind`, `otel.scope` and the resource's attributes under `otel.resource`); OpenInference
(`input.value`, `output.value`) and GenAI (`gen_ai.prompt*`, `gen_ai.completion*`, `gen_ai.input.messages`,
`gen_ai.output.messages`) attributes fill `input` / `output`; an error status sets `status` to `ERROR` with its
description in `metadata["error_message"]`.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["otel_to_sgp"]

_KINDS = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_ERROR = 2  # opentelemetry.trace.StatusCode.ERROR
_INPUT_KEYS = ("input.value", "gen_ai.input.messages", "gen_ai.prompt")
_OUTPUT_KEYS = ("output.value", "gen_ai.output.messages", "gen_ai.completion")


def _time(ns: int | None) -> _dt.datetime | None:
    if ns is None:
        return None
    return _dt.datetime.fromtimestamp(ns // 1_000_000_000, _dt.UTC).replace(microsecond=(ns // 1000) % 1_000_000)


def _payload(value: Any) -> dict[str, Any]:
    """An SGP `input`/`output` (a dict) from an attribute: a JSON object or array is parsed, other text wrapped."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
        else:
            return parsed if isinstance(parsed, dict) else {"value": parsed}
    return {"value": value}


def _io(attrs: Mapping[str, Any], keys: tuple[str, ...], indexed: str) -> dict[str, Any]:
    for key in keys:
        if key in attrs:
            return _payload(attrs[key])
    # Older GenAI instrumentations: gen_ai.prompt.0.role, gen_ai.prompt.0.content, ...
    found: dict[str, dict[str, Any]] = {}
    for key, value in attrs.items():
        if key.startswith(indexed):
            index, _, rest = key[len(indexed) :].partition(".")
            found.setdefault(index, {})[rest or "value"] = value
    if found:
        return {"messages": [found[k] for k in sorted(found, key=lambda s: (len(s), s))]}
    return {}


def otel_to_sgp(span: Any) -> dict[str, Any]:
    """The SGP item for a finished SDK span (`ReadableSpan`)."""
    ctx = span.context
    parent = span.parent
    attrs: Mapping[str, Any] = span.attributes or {}
    metadata: dict[str, Any] = dict(attrs)  # (the SDK's sequences are tuples: JSON arrays to orjson)
    metadata["otel.kind"] = _KINDS[span.kind.value] if 0 <= span.kind.value < len(_KINDS) else str(span.kind)
    scope = span.instrumentation_scope
    if scope is not None and scope.name:
        metadata["otel.scope"] = scope.name
    resource = getattr(span.resource, "attributes", None)
    if resource:
        metadata["otel.resource"] = dict(resource)
    status = "SUCCESS"
    if span.status is not None and span.status.status_code.value == _ERROR:
        status = "ERROR"
        if span.status.description:
            metadata["error_message"] = span.status.description
    start = _time(span.start_time)
    end = _time(span.end_time)
    item: dict[str, Any] = {
        "trace_id": f"{ctx.trace_id:032x}",
        "id": f"{ctx.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "name": span.name,
        "start_timestamp": start,
        "end_timestamp": end if end is not None and start is not None and end >= start else start,
        "input": _io(attrs, _INPUT_KEYS, "gen_ai.prompt."),
        "output": _io(attrs, _OUTPUT_KEYS, "gen_ai.completion."),
        "metadata": metadata,
        "status": status,
    }
    if span.events:
        metadata["otel.events"] = [
            {"name": e.name, "time": _time(e.timestamp), "attributes": dict(e.attributes or {})} for e in span.events
        ]
    return item
