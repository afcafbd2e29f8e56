"""Fork safety: a spool, sink or processor made before `os.fork()` (a preloading server, a prefork worker pool,
multiprocessing's fork start method) keeps working in the child.

Threads do not survive a fork, and neither may an SQLite connection in use. So every registered object is told
around each fork (`os.register_at_fork`), in the order they were registered: `_before_fork()` in the parent (a
database thread finishes its call in progress and waits, so the fork never copies SQLite half-way through one),
then `_after_fork(child)` in both: the parent goes on; the child starts its own threads and connection, drops its
loop binding and leaves to the parent what the parent had queued. Nothing here ever raises into `os.fork()`.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Protocol

__all__ = ["ForkAware", "watch_fork"]

log = logging.getLogger("spool")


class ForkAware(Protocol):
    def _before_fork(self) -> None: ...

    def _after_fork(self, child: bool) -> None: ...


_watched: list[weakref.ref[ForkAware]] = []
_lock = threading.Lock()


def watch_fork(obj: ForkAware) -> None:
    """Tell `obj` about every later fork of this process (for as long as it lives)."""
    with _lock:
        _watched[:] = [ref for ref in _watched if ref() is not None]
        _watched.append(weakref.ref(obj))


def _each(phase: str, call: str, *args: bool) -> None:
    for ref in list(_watched):
        obj = ref()
        if obj is not None:
            try:
                getattr(obj, call)(*args)
            except Exception:  # never into os.fork(); the object reports its own state
                log.exception("spool: %s %r failed around a fork", phase, obj)


def _before() -> None:
    _each("preparing", "_before_fork")


def _parent() -> None:
    _each("resuming", "_after_fork", False)


def _child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    _each("restarting", "_after_fork", True)


os.register_at_fork(before=_before, after_in_parent=_parent, after_in_child=_child)
