"""`SpoolConfig`: every knob, each with a `SPOOL_<FIELD>` environment fallback, validated once."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from ._errors import SpoolConfigError

__all__ = ["SpoolConfig", "default_path"]

T = TypeVar("T")
Overflow = Literal["drop_newest", "drop_oldest"]
Synchronous = Literal["NORMAL", "FULL"]


def default_path() -> Path:
    """`$SPOOL_PATH`, else `$XDG_STATE_HOME/span-spool/spans.db` (`~/.local/state/span-spool/spans.db`)."""
    if p := os.environ.get("SPOOL_PATH"):
        return Path(p).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state).expanduser() / "span-spool" / "spans.db"


_BUILT_IN: dict[str, Any] = {}
"""Each field's default when the environment does not set it (`SpoolConfig.defaults()`)."""


def _env(name: str, parse: Callable[[str], T], default: T) -> Callable[[], T]:
    """A default factory: `SPOOL_<NAME>` parsed when set, else `default`. Runs only when the field is not given."""
    var = "SPOOL_" + name.upper()
    _BUILT_IN[name] = default

    def factory() -> T:
        raw = os.environ.get(var)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except ValueError:
            raise SpoolConfigError(f"{var}={raw!r} is not a valid {name}") from None

    return factory


def _upper(s: str) -> str:
    return s.upper()


def _lower(s: str) -> str:
    return s.lower()


_MiB = 1024 * 1024


def _from_env(var: str, value: Any) -> bool:
    """`value` is what the environment variable `var` says (so an error names the variable, not the field)."""
    raw = os.environ.get(var, "").strip()
    if not raw:
        return False
    try:
        return raw.lower() == str(value).lower() or type(value)(raw) == value
    except ValueError:
        return False


@dataclass(frozen=True)
class SpoolConfig:
    """Settings for a `Spool`. A field not given reads `SPOOL_<FIELD>` from the environment, else its default.

    Raises `SpoolConfigError` (a `ValueError`) naming the field when a value is out of range.
    """

    batch_size: int = field(default_factory=_env("batch_size", int, 50))
    """Spans per request, 1..1000."""
    flush_interval: float = field(default_factory=_env("flush_interval", float, 4.0))
    """Seconds between drains when fewer than `flush_trigger` rows are pending."""
    flush_trigger: int = field(default_factory=_env("flush_trigger", int, 200))
    """Pending rows that wake the drainer before `flush_interval`."""
    max_attempts: int = field(default_factory=_env("max_attempts", int, 4))
    """Attempts per batch before its rows cool down (they are kept, not dropped)."""
    backoff_initial: float = field(default_factory=_env("backoff_initial", float, 0.4))
    backoff_max: float = field(default_factory=_env("backoff_max", float, 20.0))
    cooldown_max: float = field(default_factory=_env("cooldown_max", float, 300.0))
    """Cap of the growing pause after a batch ran out of attempts, or after a credentials failure."""
    lease_seconds: float = field(default_factory=_env("lease_seconds", float, 60.0))
    """How long a claimed batch belongs to its drainer. Always longer than `request_timeout`."""
    request_timeout: float = field(default_factory=_env("request_timeout", float, 30.0))
    commit_interval: float = field(default_factory=_env("commit_interval", float, 0.005))
    """Group-commit linger: the loss window on a hard crash."""
    max_item_bytes: int = field(default_factory=_env("max_item_bytes", int, _MiB))
    max_bytes: int = field(default_factory=_env("max_bytes", int, 1024 * _MiB))
    """Bound on database + WAL + SHM bytes."""
    overflow: Overflow = field(default_factory=_env("overflow", _lower, "drop_newest"))  # type: ignore[arg-type]
    synchronous: Synchronous = field(default_factory=_env("synchronous", _upper, "NORMAL"))  # type: ignore[arg-type]
    shutdown_timeout: float = field(default_factory=_env("shutdown_timeout", float, 10.0))
    max_inflight: int = field(default_factory=_env("max_inflight", int, 2))
    """Batches on the wire at once per drainer."""
    max_pending_bytes: int = field(default_factory=_env("max_pending_bytes", int, 64 * _MiB))
    """Bound on the encoded bytes `put` holds in memory before they are committed: past it `put` drops the newest
    span (counted as `dropped_memory`), never blocks or raises."""

    def __post_init__(self) -> None:
        checks: dict[str, tuple[Any, bool, str]] = {
            "batch_size": (self.batch_size, 1 <= self.batch_size <= 1000, "1..1000"),
            "flush_interval": (self.flush_interval, self.flush_interval > 0, "> 0"),
            "flush_trigger": (self.flush_trigger, self.flush_trigger >= 1, ">= 1"),
            "max_attempts": (self.max_attempts, self.max_attempts >= 1, ">= 1"),
            "backoff_initial": (self.backoff_initial, self.backoff_initial >= 0, ">= 0"),
            "backoff_max": (self.backoff_max, self.backoff_max >= self.backoff_initial, ">= backoff_initial"),
            "cooldown_max": (self.cooldown_max, self.cooldown_max > 0, "> 0"),
            "request_timeout": (self.request_timeout, self.request_timeout > 0, "> 0"),
            "lease_seconds": (
                self.lease_seconds,
                self.lease_seconds > self.request_timeout,
                f"> request_timeout ({self.request_timeout})",
            ),
            "commit_interval": (self.commit_interval, 0 <= self.commit_interval <= 10, "0..10"),
            "max_item_bytes": (self.max_item_bytes, self.max_item_bytes >= 1024, ">= 1024"),
            "max_bytes": (self.max_bytes, self.max_bytes >= 256 * 1024, ">= 262144"),
            "overflow": (self.overflow, self.overflow in ("drop_newest", "drop_oldest"), "drop_newest|drop_oldest"),
            "synchronous": (self.synchronous, self.synchronous in ("NORMAL", "FULL"), "NORMAL|FULL"),
            "shutdown_timeout": (self.shutdown_timeout, self.shutdown_timeout >= 0, ">= 0"),
            "max_inflight": (self.max_inflight, 1 <= self.max_inflight <= 64, "1..64"),
            "max_pending_bytes": (
                self.max_pending_bytes,
                self.max_pending_bytes >= self.max_item_bytes,
                f">= max_item_bytes ({self.max_item_bytes})",
            ),
        }
        for name, (value, ok, expected) in checks.items():
            if not ok:
                var = "SPOOL_" + name.upper()
                from_env = _from_env(var, value)
                source = f"{var}={os.environ[var].strip()}" if from_env else f"SpoolConfig.{name}={value!r}"
                raise SpoolConfigError(f"{source} is out of range (expected {expected})")

    @classmethod
    def defaults(cls) -> SpoolConfig:
        """The built-in defaults, whatever the environment says (for commands that only read a file)."""
        return cls(**_BUILT_IN)
