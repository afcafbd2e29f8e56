"""span-spool for OpenTelemetry applications (the `otel` extra: `pip install 'span-spool[otel]'`).

- `SpoolSpanProcessor`, `SpoolSpanExporter`: durable export of the SDK's spans, to any OTLP endpoint (`OTLPSink`,
  the default) or to Scale GP (`sink=SGPSink()`).
- `instrument(spool)`: the spool's own metrics as OpenTelemetry instruments.

`import spool` never imports OpenTelemetry; this module does.
"""

from __future__ import annotations

try:
    from ._otelmetrics import COUNTERS, GAUGES, instrument
    from ._otelspans import SpoolSpanExporter, SpoolSpanProcessor
except ImportError as exc:
    if not (exc.name or "").startswith(("opentelemetry", "google")):
        raise
    from ._errors import MissingExtraError

    raise MissingExtraError(
        f"spool.otel needs the otel extra ({exc.name} is not installed): pip install 'span-spool[otel]'"
    ) from None

__all__ = ["COUNTERS", "GAUGES", "SpoolSpanExporter", "SpoolSpanProcessor", "instrument"]
