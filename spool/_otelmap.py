"""OpenTelemetry SDK spans to Scale GP span items (`SpoolSpanProcessor` with `sink=SGPSink()`): I/O-free.

`trace_id` / `id` / `parent_id` are the W3C hex ids; times are UTC datetimes (written as ISO 8601); attributes go to
`metadata` (with `otel.kind`, `otel.scope` and the resource's attributes under `otel.resource`); OpenInference
(`input.value`, `output.value`) and GenAI (`gen_ai.prompt*`, `gen_ai.completion*`, `gen_ai.input.messages`,
`gen_ai.output.messages`) attributes fill `input` / `output` and are moved there, not copied (a prompt is stored
once); `openinference.span.kind`, else `gen_ai.operation.name`, sets the item's `type` (`span_type`); an error status
sets `status` to `ERROR` with its description in `metadata["error_message"]`.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["otel_to_sgp", "span_type"]

_KINDS = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_ERROR = 2  # opentelemetry.trace.StatusCode.ERROR
_INPUT_KEYS = ("input.value", "gen_ai.input.messages", "gen_ai.prompt")
_OUTPUT_KEYS = ("output.value", "gen_ai.output.messages", "gen_ai.completion")

_OPENINFERENCE_TYPES = {
    "LLM": "COMPLETION",
    "TOOL": "CODE_EXECUTION",
    "AGENT": "AGENT_WORKFLOW",
    "RETRIEVER": "KB_RETRIEVAL",
    "RERANKER": "RERANKING",
    "GUARDRAIL": "GUARDRAIL",
    "EVALUATOR": "EVALUATION",
}
_GENAI_TYPES = {
    "chat": "COMPLETION",
    "text_completion": "COMPLETION",
    "generate_content": "COMPLETION",
    "execute_tool": "CODE_EXECUTION",
    "invoke_agent": "AGENT_WORKFLOW",
    "create_agent": "AGENT_WORKFLOW",
}


def span_type(attrs: Mapping[str, Any]) -> str | None:
    """The Scale GP span type an instrumentation's attributes say: `openinference.span.kind` (LLM -> COMPLETION, TOOL
    -> CODE_EXECUTION, AGENT -> AGENT_WORKFLOW, RETRIEVER -> KB_RETRIEVAL, RERANKER -> RERANKING, GUARDRAIL,
    EVALUATOR -> EVALUATION, any other kind STANDALONE), else `gen_ai.operation.name` (chat, text_completion,
    generate_content -> COMPLETION; execute_tool -> CODE_EXECUTION; invoke_agent, create_agent -> AGENT_WORKFLOW;
    any other STANDALONE); None when neither is there."""
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str):
        return _OPENINFERENCE_TYPES.get(kind.upper(), "STANDALONE")
    operation = attrs.get("gen_ai.operation.name")
    if isinstance(operation, str):
        return _GENAI_TYPES.get(operation, "STANDALONE")
    return None


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


def _io(attrs: dict[str, Any], keys: tuple[str, ...], indexed: str) -> dict[str, Any]:
    """The `input` or `output` the attributes hold; the attributes used are taken out of `attrs` (moved, not copied)."""
    for key in keys:
        if key in attrs:
            return _payload(attrs.pop(key))
    # Older GenAI instrumentations: gen_ai.prompt.0.role, gen_ai.prompt.0.content, ...
    found: dict[str, dict[str, Any]] = {}
    for key in [k for k in attrs if k.startswith(indexed)]:
        index, _, rest = key[len(indexed) :].partition(".")
        found.setdefault(index, {})[rest or "value"] = attrs.pop(key)
    if found:
        return {"messages": [found[k] for k in sorted(found, key=lambda s: (len(s), s))]}
    return {}


def otel_to_sgp(span: Any) -> dict[str, Any]:
    """The SGP item for a finished SDK span (`ReadableSpan`)."""
    ctx = span.context
    parent = span.parent
    attrs: Mapping[str, Any] = span.attributes or {}
    metadata: dict[str, Any] = dict(attrs)  # (the SDK's sequences are tuples: JSON arrays to orjson)
    kind = span_type(attrs)
    inputs = _io(metadata, _INPUT_KEYS, "gen_ai.prompt.")
    outputs = _io(metadata, _OUTPUT_KEYS, "gen_ai.completion.")
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
        "input": inputs,
        "output": outputs,
        "metadata": metadata,
        "status": status,
    }
    if kind is not None:
        item["type"] = kind
    if span.events:
        metadata["otel.events"] = [
            {"name": e.name, "time": _time(e.timestamp), "attributes": dict(e.attributes or {})} for e in span.events
        ]
    return item
