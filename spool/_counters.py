"""What `Spool.metrics()` counts and measures, declared once: the names, units and descriptions that
`metrics()`, the OpenTelemetry instruments (`spool.otel.instrument`) and any later exposition share."""

from __future__ import annotations

__all__ = ["COUNTERS", "DROP_REASONS", "GAUGES"]

COUNTERS: dict[str, tuple[str, str]] = {
    # key: (unit, description); this process, since the spool was opened
    "delivered": ("{span}", "Spans the backend took (deleted from the spool)"),
    "retried": ("{request}", "Failed transient attempts (timeouts, 408/429/5xx, connection errors); retried"),
    "rejected": ("{request}", "Requests refused as invalid (400/409/413/422), splits of a rejected batch included"),
    "dead_lettered": ("{span}", "Spans moved to dead letters"),
    "credentials_refused": ("{request}", "Requests refused for credentials (401/403); draining paused"),
    "cooldowns": ("{batch}", "Batches that ran out of attempts; their rows were kept and cool down"),
    "requests": ("{request}", "Successful requests"),
    "partial_rejected": ("{span}", "Spans an OTLP server refused in a partial_success (not retried)"),
    "store_errors": ("{round}", "Drain rounds the spool file refused (a full or failing disk); rows kept"),
}
"""The drainer's and the sink's counters (a sink's `counters()` adds to these keys)."""

DROP_REASONS = ("overflow", "disk_error", "memory", "redacted")
"""Why a span can be dropped (`metrics()` has `dropped` and `dropped_<reason>` for each, always present). `redacted`:
the redactor dropped it, or raised (a choice, not a loss: not in the file's `dropped_total`)."""

GAUGES: dict[str, tuple[str, str]] = {
    # SpoolStats field: (unit, description); the whole file, every process
    "pending": ("{span}", "Rows not yet delivered, in flight included"),
    "inflight": ("{span}", "Rows leased by a drainer right now"),
    "dead": ("{span}", "Dead letters in the file"),
    "oldest_age_s": ("s", "Age of the oldest pending row (no observation when nothing is pending)"),
    "db_bytes": ("By", "Database + WAL bytes on disk"),
    "delivered_total": ("{span}", "Spans delivered from this file, all processes, across restarts"),
    "dropped_total": ("{span}", "Spans dropped, all processes, across restarts"),
}
