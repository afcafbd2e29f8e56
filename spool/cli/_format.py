"""Human units for the CLI: sizes, durations, counts; and parsing a duration like `7d`. I/O-free."""

from __future__ import annotations

import re

__all__ = ["human_bytes", "human_count", "human_duration", "parse_duration", "plural"]

_UNITS = ("B", "KB", "MB", "GB", "TB")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def human_bytes(n: int | float) -> str:
    """`1.2 MB` (powers of 1024); whole bytes below 1 KB."""
    size = float(n)
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    """`850 ms`, `4.2s`, `45s`, `3m 20s`, `2h 5m`, `3d 4h`; `-` for None."""
    if seconds is None:
        return "-"
    s = max(0.0, float(seconds))
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 10:
        return f"{s:.1f}s"
    whole = int(s)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def human_count(n: int) -> str:
    """`1,234,567`."""
    return f"{n:,}"


def plural(n: int, word: str, words: str | None = None) -> str:
    """`1 span`, `3 spans`, `1,000 dead letters`."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def parse_duration(text: str) -> float:
    """Seconds in `30s`, `10m`, `2h`, `7d`, `1w`, `1h30m` or a bare number of seconds. Raises `ValueError`."""
    t = text.strip().lower().replace(" ", "")
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(t):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _SECONDS[m.group(2)]
        pos = m.end()
    if not t or pos != len(t):
        raise ValueError(f"invalid duration {text!r} (use e.g. 30s, 10m, 2h, 7d)")
    return total
