"""`SpoolStats`: what `Spool.stats()` and `spool stats --json` report."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["SpoolStats"]


@dataclass(frozen=True)
class SpoolStats:
    """A snapshot of one spool file. Totals persist across restarts."""

    pending: int
    """Rows not yet delivered, in-flight included (dead letters excluded)."""
    inflight: int
    """Rows leased by a drainer right now."""
    dead: int
    oldest_age_s: float | None
    """Age of the oldest pending row in seconds; None when nothing is pending."""
    db_bytes: int
    """Database + WAL (+ SHM) bytes on disk."""
    delivered_total: int
    dropped_total: int
    last_error: str | None
    """Set after every failed attempt, cleared by the next success."""
    format: str = "sgp"
    """What the rows hold, fixed when the file was created: `sgp` (Scale GP span JSON) or `otlp` (OTLP protobuf)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
