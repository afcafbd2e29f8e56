"""The host every integration fronts: one spool, its failure counters, its exit hook, and (`ThreadHost`) an event
loop in a thread of its own. The agentex processors, the OpenTelemetry fronts and the Scale GP SDK route only turn
their framework's objects into spool rows and call it.

Contract: the constructors may raise (bad configuration: `SpoolConfigError`, a file of another format). Nothing else
does: a span that cannot be stored is counted in `dropped` (every failure also in `errors`) and logged once per kind;
`flush`, `stats` and `shutdown` never raise. `shutdown` stops accepting, commits, delivers for up to its timeout
(default `shutdown_timeout`), releases leases and closes; what was not delivered stays in the file. It also runs at
interpreter exit (`ExitHook`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._config import SpoolConfig
from ._fork import watch_fork
from ._loopthread import LoopThread
from ._mapping import jsonable
from ._spool import Spool

if TYPE_CHECKING:
    from ._sink import Sink
    from ._stats import SpoolStats

__all__ = ["ExitHook", "Host", "ThreadHost"]

log = logging.getLogger("spool.processors")

_T = TypeVar("_T")
Redact = Callable[[Mapping[str, Any]], Mapping[str, Any] | None]

_inherited: list[asyncio.AbstractEventLoop] = []
"""Event loops a fork child inherited: kept, never closed (closing would touch the parent's wake-up pipe)."""

_COMMIT_WAIT = 30.0  # seconds a sync commit waits for the group commit
_THREAD_START_WAIT = 30.0


class ExitHook:
    """Runs ``fn`` once at interpreter exit unless cancelled first (then drops the reference).

    Registered with ``threading._register_atexit`` (what ``concurrent.futures`` uses), not
    ``atexit``: those hooks run *before* ``concurrent.futures`` stops every thread pool,
    while ``atexit`` handlers run after it, when every pool refuses new work (``asyncio``'s default executor among
    them) and a shutdown that needs one could not finish. Later registrations run first. Falls back to ``atexit``.
    """

    def __init__(self, fn: Callable[[], object]) -> None:
        self._fn: Callable[[], object] | None = fn
        try:
            threading._register_atexit(self)  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):  # other Pythons; or already shutting down
            atexit.register(self)

    def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            try:
                fn()
            except Exception:  # pragma: no cover - the hooked functions never raise
                log.exception("span-spool: exit hook failed")

    def cancel(self) -> None:
        self._fn = None


class Host:
    """A spool and the failure counters of the front that feeds it; the spool runs on the caller's event loop."""

    dropped: int
    """Span events that did not make it into the spool (unmappable, refused, after shutdown)."""
    errors: int
    """Failures of any kind (dropped events, failed commits/flushes/shutdowns)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        sink: Sink | None,
        config: SpoolConfig | None,
        redact: Redact | None = None,
    ) -> None:
        self.config = config if config is not None else SpoolConfig()
        self.dropped = 0
        self.errors = 0
        self._logged: set[str] = set()
        self._count_lock = threading.Lock()
        self._closed = False
        self._spool = Spool(path, sink=sink, config=self.config, redact=redact)
        self._shutdown_done = False
        self._exit_hook = ExitHook(self._at_exit)

    @property
    def spool(self) -> Spool:
        """The underlying spool (for ``stats``/``flush`` from its own loop)."""
        return self._spool

    @property
    def closed(self) -> bool:
        """True once ``shutdown`` has been called: new span events are dropped."""
        return self._closed

    def fail(self, kind: str, exc: BaseException | None, *, dropped: int = 0) -> None:
        """Count a failure (and `dropped` span events); log the first of each kind. Never raises."""
        try:
            with self._count_lock:
                self.errors += 1
                self.dropped += dropped
                key = kind if exc is None else f"{kind}:{type(exc).__name__}"
                first = key not in self._logged
                if first:
                    self._logged.add(key)
            if first:
                log.error(
                    "span-spool: %s failed%s (further failures of this kind are only counted)",
                    kind,
                    "" if exc is None else f": {type(exc).__name__}: {exc}",
                )
        except Exception:  # pragma: no cover - logging itself failed
            pass

    def refuse(self, n: int = 1) -> None:
        """`n` span events came after shutdown: counted as dropped."""
        self.fail("span event after shutdown", None, dropped=n)

    def put(self, item: Mapping[str, Any]) -> bool:
        """`Spool.put`, with a value JSON cannot hold stringified rather than the span lost; False (counted, logged
        once) when it could not be stored. Never raises."""
        try:
            self._spool.put(item)
            return True
        except (TypeError, ValueError) as exc:
            first_exc: Exception = exc
        except Exception as exc:
            self.fail("put", exc, dropped=1)
            return False
        try:
            self._spool.put(jsonable(item))
            return True
        except Exception as exc:
            self.fail(f"put ({type(first_exc).__name__})", exc, dropped=1)
            return False

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop accepting, commit, drain up to ``timeout`` (default: ``config.shutdown_timeout``), release leases,
        close (on the running loop). Undelivered spans stay in the file. Safe twice; never raises."""
        self._closed = True
        if self._shutdown_done:
            return
        self._shutdown_done = True
        self._exit_hook.cancel()
        try:
            await self._spool.aclose(timeout)
        except Exception as exc:
            self.fail("shutdown", exc)

    def _at_exit(self) -> None:
        """Interpreter exit without a shutdown: `aclose` on a fresh event loop."""
        if self._shutdown_done:
            return
        if asyncio._get_running_loop() is None:
            asyncio.run(self.aclose())
            return
        thread = threading.Thread(target=lambda: asyncio.run(self.aclose()), name="span-spool-exit", daemon=True)
        thread.start()
        thread.join(self.config.shutdown_timeout + 10)


class ThreadHost(Host):
    """A `Host` whose spool commits and drains on an event loop in a daemon thread of its own: every method is a plain
    one, safe from any thread (``put`` never waits). A fork child gets a loop and thread of its own."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        sink: Sink | None,
        config: SpoolConfig | None,
        redact: Redact | None = None,
    ) -> None:
        super().__init__(path, sink, config, redact)
        self._shutdown_lock = threading.Lock()
        self._shutdown_started = False
        self._start_loop()
        try:
            # Bind the spool (writer, drainer) to the background loop now, so puts from other threads signal it.
            self.call(self._spool.commit(), _THREAD_START_WAIT)
        except BaseException:
            with contextlib.suppress(BaseException):
                self.call(self._spool.aclose(0), 10)
            self._runner.stop(5.0)
            self._exit_hook.cancel()
            raise
        watch_fork(self)

    def _start_loop(self) -> None:
        self._runner = LoopThread("span-spool", on_error=self.fail).start()
        self._loop = self._runner.loop

    def _before_fork(self) -> None:
        pass

    def _after_fork(self, child: bool) -> None:
        """In a fork child (the spool has already been told): a loop and thread of its own, the spool bound to
        them. The parent's loop is left as it is: its selector and wake-up pipe are the parent's too."""
        if not child:
            return
        self._count_lock, self._shutdown_lock = threading.Lock(), threading.Lock()
        if self._shutdown_started:
            return
        _inherited.append(self._loop)
        self._start_loop()
        self._runner.submit(self._spool.commit())

    def _at_exit(self) -> None:
        self.shutdown()

    def on_loop_thread(self) -> bool:
        return self._runner.on_thread()

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float | None) -> _T:
        """Run ``coro`` on the background loop and wait for it (raises what it raises)."""
        return self._runner.call(coro, timeout)

    def commit(self) -> bool:
        """Wait for the group commit of every earlier put (not from the loop's own thread, where it would deadlock:
        the commit follows shortly anyway). True once it returned."""
        if self.on_loop_thread():
            return False
        try:
            self.call(self._spool.commit(), _COMMIT_WAIT)
            return True
        except Exception as exc:
            self.fail("commit", exc)
            return False

    def flush(self, timeout: float | None = 30) -> bool:
        """Commit, then deliver until nothing deliverable is left; True if the spool is empty."""
        if self._shutdown_started or self.on_loop_thread():
            return False
        try:
            wait = None if timeout is None else timeout + 10
            return self.call(self._spool.flush(timeout), wait)
        except Exception as exc:
            self.fail("flush", exc)
            return False

    def stats(self) -> SpoolStats | None:
        """The spool's `SpoolStats` (None if they cannot be read, e.g. after shutdown)."""
        if self._shutdown_started or self.on_loop_thread():
            return None
        try:
            return self.call(self._spool.stats(), 30)
        except Exception as exc:
            self.fail("stats", exc)
            return None

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting, commit, drain up to ``timeout`` (default ``config.shutdown_timeout``),
        release leases, close, stop the thread. Idempotent; never raises."""
        self._closed = True
        with self._shutdown_lock:
            if self._shutdown_started:
                return
            self._shutdown_started = True
        self._exit_hook.cancel()
        if self.on_loop_thread():
            # Called from a callback on our own loop: cannot block; close, then stop.
            task = self._loop.create_task(self._spool.aclose(timeout))
            task.add_done_callback(lambda _: self._loop.stop())
            return
        drain = self.config.shutdown_timeout if timeout is None else timeout
        try:
            self.call(self._spool.aclose(timeout), drain + 10)
        except Exception as exc:
            self.fail("shutdown", exc)
        finally:
            self._runner.stop(10.0)
