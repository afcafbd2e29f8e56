"""`SpoolSpanProcessor` and `SpoolSpanExporter`: the OpenTelemetry SDK's interfaces in front of a durable spool.

Both are thin fronts of `spool._host.ThreadHost` (the spool on a loop thread of its own, the failure counters,
shutdown at interpreter exit). With an `OTLPSink` (the default) the file is an `otlp` spool and a finished
span is queued as it is, encoded to OTLP protobuf on the database thread just before its commit; with an `SGPSink`
it is mapped to a Scale GP item (`otel_to_sgp`) and put. Neither raises into the application: a span that cannot be
stored is counted in `dropped` and logged once per kind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._config import SpoolConfig
from ._formats import format_named
from ._host import Redact, ThreadHost
from ._otlpsink import OTLPSink

if TYPE_CHECKING:
    from ._sink import Sink
    from ._spool import Spool
    from ._stats import SpoolStats

__all__ = ["SpoolSpanExporter", "SpoolSpanProcessor"]


class _Front:
    """What the processor and the exporter share: the host, and one span's way into the spool."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        sink: Sink | None = None,
        config: SpoolConfig | None = None,
        *,
        redact: Redact | None = None,
    ) -> None:
        self._host = ThreadHost(path, sink if sink is not None else OTLPSink(), config, redact)
        self._spool = self._host.spool
        self._refused_seen = 0  # spans moved to dead letters, as of the last `force_flush`
        self._write = format_named(self._spool.format).otel_writer(self._spool)

    @property
    def spool(self) -> Spool:
        return self._spool

    @property
    def dropped(self) -> int:
        """Spans that did not make it into the spool (after shutdown, or refused)."""
        return self._host.dropped

    def _put(self, span: ReadableSpan) -> bool:
        """Queue one finished span; False (counted, logged once) if it could not be, or if it is not a finished span
        of the SDK at all (garbage is counted and ignored). Never raises."""
        if self._host.closed:
            self._host.refuse()
            return False
        if not isinstance(span, ReadableSpan):
            self._host.fail(f"storing a {type(span).__name__} (not a span)", None, dropped=1)
            return False
        try:
            self._write(span)
            return True
        except Exception as exc:
            self._host.fail("storing a span", exc, dropped=1)
            return False

    def stats(self) -> SpoolStats | None:
        """The spool's `SpoolStats` (None if they cannot be read)."""
        return self._host.stats()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Commit, then deliver until nothing is pending or `timeout_millis` passes; True once the spool is empty and
        no span was refused by the server (moved to dead letters) since the previous `force_flush`. Never raises."""
        try:
            timeout = float(timeout_millis) / 1000
        except (TypeError, ValueError):
            timeout = 30.0
        ok = self._host.flush(timeout)
        refused, self._refused_seen = self._refused_seen, int(self._spool.metrics(gauges=False)["dead_lettered"] or 0)
        return ok and refused == self._refused_seen

    def shutdown(self) -> None:
        """Commit, deliver for up to `shutdown_timeout`, keep the rest on disk, close. Safe twice; never raises.
        Spans ended afterwards are dropped and counted."""
        self._host.shutdown()


class SpoolSpanProcessor(_Front, SpanProcessor):
    """A `SpanProcessor` with a durable spool and no in-memory queue in front of it.

    `SpoolSpanProcessor(path=None, sink=None, config=None)`: `sink=None` is `OTLPSink()` (endpoint and headers from
    `OTEL_EXPORTER_OTLP_*`). `on_end` queues the finished (sampled) span for the next group commit: no network, no
    wait for the disk, never raises. `on_start` records nothing. The constructor raises `SpoolConfigError` for a bad
    configuration or a file of the other format.
    """

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        try:
            sampled = span.context.trace_flags.sampled
        except Exception:  # not a span: counted and ignored by `_put`
            sampled = True
        if sampled:
            self._put(span)


class SpoolSpanExporter(_Front, SpanExporter):
    """A `SpanExporter` whose `export` is durable: `SUCCESS` once the spans are committed to the spool file,
    `FAILURE` if any could not be stored. Delivery is the spool's (put it behind the SDK's `BatchSpanProcessor`
    to keep spans off the disk path of the application's threads). Same constructor as `SpoolSpanProcessor`."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        before = self._drops()
        try:
            spans = list(spans)
        except TypeError:  # not a sequence of spans: counted, and FAILURE
            self._host.fail(f"exporting a {type(spans).__name__} (not spans)", None, dropped=1)
            return SpanExportResult.FAILURE
        stored = all([self._put(span) for span in spans])
        if not stored:
            return SpanExportResult.FAILURE
        if not self._host.commit():
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if self._drops() == before else SpanExportResult.FAILURE

    def _drops(self) -> int:
        """Spans the spool dropped so far (the disk cap, a failing disk, memory): a commit that dropped any did
        not store every span of the export."""
        return int(self._spool.metrics(gauges=False)["dropped"] or 0)
