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
  not delivered stays in the file. Safe to call twice; also run at interpreter exit.

Both are fronts of `spool._host`: the spool, the counters, the loop thread and the exit hook are its.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._config import SpoolConfig
from ._host import Host, Redact, ThreadHost
from ._mapping import agentex_source_metadata, map_span
from ._sink import SGPSink

if TYPE_CHECKING:
    from ._sink import Sink
    from ._stats import SpoolStats

__all__ = ["SpoolTracingProcessor", "SyncSpoolTracingProcessor"]


class _Agentex(Host):
    """The agentex fronts' constructor (``sink=None``: `SGPSink()` from the environment) and one span event's way
    in: mapped (`map_span`), then put."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        sink: Sink | None = None,
        config: SpoolConfig | None = None,
        *,
        wait_for_commit: bool = False,
        redact: Redact | None = None,
    ) -> None:
        self._extra = agentex_source_metadata()
        self._wait = wait_for_commit
        super().__init__(path, sink if sink is not None else SGPSink(), config, redact)  # (no credentials: raises)

    def _take(self, span: object, end: bool) -> bool:
        """Map and put one span event; True when it is in the spool and the caller should then wait for the commit.
        Never raises."""
        if self._closed:
            self.refuse()
            return False
        try:
            item = map_span(span, end, self._extra, False)
        except Exception as exc:
            self.fail("mapping a span", exc, dropped=1)
            return False
        return self.put(item) and self._wait

    def _take_many(self, spans: Iterable[object], end: bool) -> bool:
        if self._closed:
            self.refuse(_count(spans))
            return False
        wait = False
        try:
            for span in spans:
                wait = self._take(span, end) or wait
        except Exception as exc:  # a failing iterable
            self.fail("iterating spans", exc)
        return wait


def _count(spans: Iterable[object]) -> int:
    try:
        return len(spans)  # type: ignore[arg-type]
    except Exception:
        return 1


class SpoolTracingProcessor(_Agentex):
    """Async agentex tracing processor backed by a durable spool.

    ``SpoolTracingProcessor(path=None, sink=None, config=None, *, wait_for_commit=False)``;
    with no ``sink`` it builds ``SGPSink()`` from ``SGP_API_KEY``/``SGP_ACCOUNT_ID``/
    ``SGP_CLIENT_BASE_URL`` (raises `SpoolConfigError` when missing). One processor may
    serve successive event loops (``asyncio.run()`` per request): the spool re-binds its
    tasks to the running loop; events put under a finished loop are
    committed on the next one, or by ``shutdown``/interpreter exit. Use it from one
    event loop at a time; for several threads each running a loop, use
    `SyncSpoolTracingProcessor`.
    """

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
            self.fail("commit", exc)

    async def flush(self, timeout: float | None = 30) -> bool:
        """Commit, then deliver until nothing deliverable is left; True if the spool is empty."""
        try:
            return await self._spool.flush(timeout)
        except Exception as exc:
            self.fail("flush", exc)
            return False

    async def stats(self) -> SpoolStats | None:
        """The spool's `SpoolStats` (None if they cannot be read)."""
        try:
            return await self._spool.stats()
        except Exception as exc:
            self.fail("stats", exc)
            return None

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting, commit, drain up to ``timeout`` (default: ``config.shutdown_timeout``),
        release leases, close. Undelivered spans stay in the file. Safe twice; never raises.
        """
        await self.aclose(timeout)


class SyncSpoolTracingProcessor(_Agentex, ThreadHost):
    """Sync agentex tracing processor: plain methods, safe from any thread.

    Same constructor as `SpoolTracingProcessor`. One daemon thread owns an event loop on
    which the spool commits and drains; ``on_*`` only ``put`` (thread-safe, non-blocking).
    ``shutdown`` is idempotent and runs at interpreter exit (see `ExitHook`).
    """

    def on_span_start(self, span: Any) -> None:
        """Record a span start (one ``put``)."""
        if self._take(span, False):
            self.commit()

    def on_span_end(self, span: Any) -> None:
        """Record a span end (one ``put``); coalesces with a pending start in the spool."""
        if self._take(span, True):
            self.commit()

    def on_spans_start(self, spans: Iterable[Any]) -> None:
        """Record several span starts."""
        if self._take_many(spans, False):
            self.commit()

    def on_spans_end(self, spans: Iterable[Any]) -> None:
        """Record several span ends."""
        if self._take_many(spans, True):
            self.commit()
