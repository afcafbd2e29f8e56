"""OpenTelemetry metrics of a spool: `instrument(spool)` registers observable instruments fed by `spool.metrics()`.

Needs `opentelemetry-api` (the `otel` extra: `pip install 'span-spool[otel]'`).
Without an SDK `MeterProvider` configured the instruments are no-ops, as everywhere in OpenTelemetry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._counters import COUNTERS, DROP_REASONS, GAUGES

if TYPE_CHECKING:
    from ._spool import Spool

__all__ = ["COUNTERS", "GAUGES", "instrument"]


class _Snapshot:
    """One `spool.metrics()` read shared by all callbacks of one collection (each callback would read the file)."""

    def __init__(self, spool: Spool, max_age: float) -> None:
        self._spool, self._max_age = spool, max_age
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._data: dict[str, int | float | None] = {}

    def get(self) -> dict[str, int | float | None]:
        with self._lock:
            now = time.monotonic()
            if now - self._at > self._max_age:
                self._data = self._spool.metrics()
                self._at = now
            return self._data


def instrument(spool: Spool, meter: Any = None, *, max_age: float = 1.0) -> list[Any]:
    """Register `spool.<name>` observable instruments on `meter` (default: the global meter provider's
    `span-spool` meter); returns them. Counters per process (see `COUNTERS`, plus `spool.dropped` with a `reason`
    attribute), gauges of the file (`GAUGES`). Every observation carries `spool.path`.

    Callbacks run on the metrics reader's thread and share one `spool.metrics()` read per `max_age` seconds; once
    the spool is closed the gauges observe nothing and the counters keep their last values. Raises `ImportError`
    when `opentelemetry-api` is not installed.
    """
    try:
        from opentelemetry import metrics
    except ImportError as exc:  # pragma: no cover - the dev environment has it
        raise ImportError("spool.otel needs opentelemetry-api: pip install 'span-spool[otel]'") from exc
    if meter is None:
        from . import __version__

        meter = metrics.get_meter("span-spool", __version__)
    snap = _Snapshot(spool, max_age)
    attrs = {"spool.path": str(spool.path)}

    def observe(key: str) -> Callable[[Any], Iterable[Any]]:
        def callback(options: Any) -> Iterable[Any]:
            value = snap.get().get(key)
            return [] if value is None else [metrics.Observation(value, attrs)]

        return callback

    def observe_dropped(options: Any) -> Iterable[Any]:
        data = snap.get()
        reasons = sorted({*DROP_REASONS, *(k[len("dropped_") :] for k in data if k.startswith("dropped_"))})
        reasons = [r for r in reasons if r != "total"]  # `dropped_total` is the file's gauge
        return [metrics.Observation(data.get(f"dropped_{r}") or 0, {**attrs, "reason": r}) for r in reasons]

    made: list[Any] = []
    for key, (unit, description) in COUNTERS.items():
        made.append(
            meter.create_observable_counter(
                f"spool.{key}", callbacks=[observe(key)], unit=unit, description=description
            )
        )
    made.append(
        meter.create_observable_counter(
            "spool.dropped", callbacks=[observe_dropped], unit="{span}", description="Spans dropped, by reason"
        )
    )
    for key, (unit, description) in GAUGES.items():
        made.append(
            meter.create_observable_gauge(f"spool.{key}", callbacks=[observe(key)], unit=unit, description=description)
        )
    return made
