"""Give freed heap memory back to the OS after large commits.

Span bodies pass through the process once (encoded at `put`, committed, freed), but glibc's malloc keeps the freed
chunks of a burst of large bodies (tens of KB each: prompts, chat histories) in its arenas, so the process keeps the
burst's RSS after the spans are safely on disk: after a 10,000 x 50 KB burst the process stayed at ~210 MB while
the backlog drained, ~85 MB with a trim (scripts/bench.py, `agents`). `malloc_trim(0)` returns those pages (a few
ms; ctypes releases the GIL, and the spool runs it on its store thread, so the event loop does not wait). Only where
the C library has it (glibc); elsewhere `due` is always False.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

__all__ = ["Trimmer"]

_MiB = 1024 * 1024


def _load() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the C library this process already uses
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    result: Callable[[int], int] = fn
    return result


_malloc_trim = _load()


class Trimmer:
    """Counts committed bytes (as `rows_cost` estimates them: bodies plus ~1/8, ids and ~100 bytes a row). A trim is
    due once `every_bytes` went through since the last one, or, when the writer has nothing left to commit (a burst
    ended), once `idle_bytes` did."""

    def __init__(self, every_bytes: int = 64 * _MiB, idle_bytes: int = 8 * _MiB) -> None:
        self.every_bytes = every_bytes
        self.idle_bytes = idle_bytes
        self._since = 0

    def committed(self, nbytes: int) -> None:
        self._since += nbytes

    def due(self, *, idle: bool) -> bool:
        """True (and the count restarts) when a trim should run now."""
        if _malloc_trim is None or self._since < (self.idle_bytes if idle else self.every_bytes):
            return False
        self._since = 0
        return True

    @staticmethod
    def trim() -> None:
        """Return free heap pages to the OS (blocks the calling thread for a few ms; the GIL is released)."""
        if _malloc_trim is not None:
            _malloc_trim(0)
