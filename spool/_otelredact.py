"""A finished OpenTelemetry span as a redactor leaves it (`spool.redact`), for an `otlp` spool: its attributes and
its events' attributes, each passed through the redactor; the rest of the span as it was."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["redacted_span"]

Redact = Callable[[Mapping[str, Any]], Mapping[str, Any] | None]


class _Redacted:
    """`span`, with other attributes and events (what the encoder reads of it is otherwise the span's own)."""

    def __init__(self, span: Any, attributes: Mapping[str, Any], events: tuple[Any, ...]) -> None:
        self._span, self.attributes, self.events = span, attributes, events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._span, name)


def redacted_span(span: Any, redact: Redact) -> Any | None:
    """`span` with its attributes and its events' attributes redacted; None when the redactor dropped any of them
    (the span is dropped whole: nothing unredacted is written)."""
    from opentelemetry.sdk.trace import Event

    attributes = redact(dict(span.attributes or {}))
    if attributes is None:
        return None
    events = []
    for e in span.events:
        kept = redact(dict(e.attributes)) if e.attributes else e.attributes
        if kept is None:
            return None
        events.append(Event(e.name, kept, e.timestamp))
    return _Redacted(span, attributes, tuple(events))
