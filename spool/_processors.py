"""Drop-in tracing processors: agentex's processor interface in front of a `Spool`.

`SpoolTracingProcessor` (async methods) and `SyncSpoolTracingProcessor` (plain methods,
any thread) take agentex ``Span`` objects (duck-typed), agentex-shaped dicts or SGP item
dicts, map them with `spool._mapping.span_to_item` and ``put`` them into a durable spool.

Contract:

- The constructors may raise (bad configuration; no ``sink`` and no SGP credentials:
  `SpoolConfigError`). Nothing else does: the ``on_*`` methods, ``flush``, ``stats`` and
  ``shutdown`` never raise into the caller. A span that cannot be mapped or stored is
  counted in ``dropped`` (every failure also in ``errors``) and logged once per kind.
- The hot path is one ``put`` (no disk or network wait), unless
  ``wait_for_commit=True``, which also awaits the group commit ("on disk on return").
- A value that is not JSON-serializable is stringified (`spool._mapping.jsonable`)
  rather than losing the span.
- ``shutdown(timeout=None)`` stops accepting, commits, drains until empty or
  ``timeout`` (default ``config.shutdown_timeout``), releases leases and closes. What is
  not delivered stays in the file. Safe to call twice; also run at interpreter exit
  (`ExitHook`: before thread pools stop, which ``atexit`` handlers run too late for).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from ._config import SpoolConfig
from ._fork import watch_fork
from ._loopthread import LoopThread
from ._mapping import agentex_source_metadata, jsonable, map_span
from ._sink import SGPSink
from ._spool import Spool

if TYPE_CHECKING:
    from ._sink import Sink
    from ._stats import SpoolStats

__all__ = ["ExitHook", "SpoolTracingProcessor", "SyncSpoolTracingProcessor"]

log = logging.getLogger("spool.processors")

_T = TypeVar("_T")


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


_inherited: list[asyncio.AbstractEventLoop] = []
"""Event loops a fork child inherited: kept, never closed (closing would touch the parent's wake-up pipe)."""

_COMMIT_WAIT = 30.0  # seconds a sync `wait_for_commit` waits for the group commit
_THREAD_START_WAIT = 30.0


class _ProcessorBase:
    """Shared state: the spool, the mapping, the failure counters."""

    dropped: int
    """Span events that did not make it into the spool (unmappable, refused, after shutdown)."""
    errors: int
    """Failures of any kind (dropped events, failed commits/flushes/shutdowns)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        sink: Sink | None,
        config: SpoolConfig | None,
        wait_for_commit: bool,
    ) -> None:
        self.config = config if config is not None else SpoolConfig()
        if sink is None:
            sink = SGPSink()  # raises SpoolConfigError without credentials
        self.dropped = 0
        self.errors = 0
        self._logged: set[str] = set()
        self._count_lock = threading.Lock()
        self._closed = False
        self._wait = wait_for_commit
        self._extra = agentex_source_metadata()
        self._spool = Spool(path, sink=sink, config=self.config)

    @property
    def spool(self) -> Spool:
        """The underlying spool (for ``stats``/``flush`` from its own loop)."""
        return self._spool

    @property
    def closed(self) -> bool:
        """True once ``shutdown`` has been called: new span events are dropped."""
        return self._closed

    def _fail(self, kind: str, exc: BaseException | None, *, dropped: int = 0) -> None:
        """Count a failure; log the first of each kind (never raises)."""
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

    def _take(self, span: object, end: bool) -> bool:
        """Map and put one span event; True when it is in the spool and the caller should then wait for the commit.
        Never raises. (One method for the whole hot path: each Python call costs ~50 ns.)"""
        if self._closed:
            self._reject()
            return False
        try:
            item = map_span(span, end, self._extra, False)
        except Exception as exc:
            self._fail("mapping a span", exc, dropped=1)
            return False
        try:
            self._spool.put(item)
            return self._wait
        except (TypeError, ValueError) as exc:
            first_exc: Exception = exc
        except Exception as exc:
            self._fail("put", exc, dropped=1)
            return False
        # Not JSON-serializable (or otherwise refused): stringify what JSON cannot hold.
        try:
            self._spool.put(jsonable(item))
            return self._wait
        except Exception as exc:
            self._fail(f"put ({type(first_exc).__name__})", exc, dropped=1)
            return False

    def _take_many(self, spans: Iterable[object], end: bool) -> bool:
        if self._closed:
            self._reject(_count(spans))
            return False
        wait = False
        try:
            for span in spans:
                wait = self._take(span, end) or wait
        except Exception as exc:  # a failing iterable
            self._fail("iterating spans", exc)
        return wait

    def _reject(self, n: int = 1) -> None:
        self._fail("span event after shutdown", None, dropped=n)


def _count(spans: Iterable[object]) -> int:
    try:
        return len(spans)  # type: ignore[arg-type]
    except Exception:
        return 1


class SpoolTracingProcessor(_ProcessorBase):
    """Async agentex tracing processor backed by a durable spool.

    ``SpoolTracingProcessor(path=None, sink=None, config=None, *, wait_for_commit=False)``;
    with no ``sink`` it builds ``SGPSink()`` from ``SGP_API_KEY``/``SGP_ACCOUNT_ID``/
    ``SGP_CLIENT_BASE_URL`` (raises `SpoolConfigError` when missing). One processor may
    serve successive event loops (``asyncio.run()`` per request): the spool re-binds its
    tasks and HTTP client to the running loop; events put under a finished loop are
    committed on the next one, or by ``shutdown``/interpreter exit. Use it from one
    event loop at a time; for several threads each running a loop, use
    `SyncSpoolTracingProcessor`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        sink: Sink | None = None,
        config: SpoolConfig | None = None,
        *,
        wait_for_commit: bool = False,
    ) -> None:
        super().__init__(path, sink, config, wait_for_commit)
        self._shutdown_done = False
        self._exit_hook = ExitHook(self._atexit)

    async def on_span_start(self, span: Any) -> None:
        """Record a span start (one ``put``)."""
        if self._take(span, False):
            await self._commit()

    async def on_span_end(self, span: Any) -> None:
        """Record a span end (one ``put``); coalesces with a pending start in the spool."""
        if self._take(span, True):
            await self._commit()

    async def on_spans_start(self, spans: Iterable[Any]) -> None:
        """Record several span starts (one commit wait at most)."""
        if self._take_many(spans, False):
            await self._commit()

    async def on_spans_end(self, spans: Iterable[Any]) -> None:
        """Record several span ends (one commit wait at most)."""
        if self._take_many(spans, True):
            await self._commit()

    async def _commit(self) -> None:
        try:
            await self._spool.commit()
        except Exception as exc:
            self._fail("commit", exc)

    async def flush(self, timeout: float | None = 30) -> bool:
        """Commit, then deliver until nothing deliverable is left; True if the spool is empty."""
        try:
            return await self._spool.flush(timeout)
        except Exception as exc:
            self._fail("flush", exc)
            return False

    async def stats(self) -> SpoolStats | None:
        """The spool's `SpoolStats` (None if they cannot be read)."""
        try:
            return await self._spool.stats()
        except Exception as exc:
            self._fail("stats", exc)
            return None

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting, commit, drain up to ``timeout`` (default: ``config.shutdown_timeout``),
        release leases, close. Undelivered spans stay in the file. Safe twice; never raises.
        """
        self._closed = True
        if self._shutdown_done:
            return
        self._shutdown_done = True
        self._exit_hook.cancel()
        try:
            await self._spool.aclose(timeout)
        except Exception as exc:
            self._fail("shutdown", exc)

    def _atexit(self) -> None:
        """Interpreter exit without ``shutdown``: run it on a fresh event loop."""
        if self._shutdown_done:
            return
        if asyncio._get_running_loop() is None:
            asyncio.run(self.shutdown())
            return
        thread = threading.Thread(target=lambda: asyncio.run(self.shutdown()), name="span-spool-exit", daemon=True)
        thread.start()
        thread.join(self.config.shutdown_timeout + 10)


class SyncSpoolTracingProcessor(_ProcessorBase):
    """Sync agentex tracing processor: plain methods, safe from any thread.

    Same constructor as `SpoolTracingProcessor`. One daemon thread owns an event loop on
    which the spool commits and drains; ``on_*`` only ``put`` (thread-safe, non-blocking).
    ``shutdown`` is idempotent and runs at interpreter exit (see `ExitHook`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        sink: Sink | None = None,
        config: SpoolConfig | None = None,
        *,
        wait_for_commit: bool = False,
    ) -> None:
        super().__init__(path, sink, config, wait_for_commit)
        self._shutdown_lock = threading.Lock()
        self._shutdown_started = False
        self._start_loop()
        try:
            # Bind the spool (writer, drainer, HTTP client) to the background loop now,
            # so puts from other threads are signalled to it.
            self._call(self._spool.commit(), _THREAD_START_WAIT)
        except BaseException:
            with contextlib.suppress(BaseException):
                self._call(self._spool.aclose(0), 10)
            self._stop_thread(5.0)
            raise
        self._exit_hook = ExitHook(self.shutdown)
        watch_fork(self)

    # -- the background loop -------------------------------------------------------

    def _start_loop(self) -> None:
        self._runner = LoopThread("span-spool", on_error=self._fail).start()
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

    def _on_loop_thread(self) -> bool:
        return self._runner.on_thread()

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float | None) -> _T:
        """Run ``coro`` on the background loop and wait for it (raises what it raises)."""
        return self._runner.call(coro, timeout)

    def _stop_thread(self, timeout: float) -> None:
        self._runner.stop(timeout)

    # -- the processor interface ---------------------------------------------------

    def on_span_start(self, span: Any) -> None:
        """Record a span start (one ``put``)."""
        if self._take(span, False):
            self._commit()

    def on_span_end(self, span: Any) -> None:
        """Record a span end (one ``put``); coalesces with a pending start in the spool."""
        if self._take(span, True):
            self._commit()

    def on_spans_start(self, spans: Iterable[Any]) -> None:
        """Record several span starts."""
        if self._take_many(spans, False):
            self._commit()

    def on_spans_end(self, spans: Iterable[Any]) -> None:
        """Record several span ends."""
        if self._take_many(spans, True):
            self._commit()

    def _commit(self) -> None:
        if self._on_loop_thread():
            return  # would deadlock; the group commit follows shortly anyway
        try:
            self._call(self._spool.commit(), _COMMIT_WAIT)
        except Exception as exc:
            self._fail("commit", exc)

    def flush(self, timeout: float | None = 30) -> bool:
        """Commit, then deliver until nothing deliverable is left; True if the spool is empty."""
        if self._shutdown_started or self._on_loop_thread():
            return False
        try:
            wait = None if timeout is None else timeout + 10
            return self._call(self._spool.flush(timeout), wait)
        except Exception as exc:
            self._fail("flush", exc)
            return False

    def stats(self) -> SpoolStats | None:
        """The spool's `SpoolStats` (None if they cannot be read, e.g. after shutdown)."""
        if self._shutdown_started or self._on_loop_thread():
            return None
        try:
            return self._call(self._spool.stats(), 30)
        except Exception as exc:
            self._fail("stats", exc)
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
        if self._on_loop_thread():
            # Called from a callback on our own loop: cannot block; close, then stop.
            task = self._loop.create_task(self._spool.aclose(timeout))
            task.add_done_callback(lambda _: self._loop.stop())
            return
        drain = self.config.shutdown_timeout if timeout is None else timeout
        try:
            self._call(self._spool.aclose(timeout), drain + 10)
        except Exception as exc:
            self._fail("shutdown", exc)
        finally:
            self._stop_thread(10.0)
