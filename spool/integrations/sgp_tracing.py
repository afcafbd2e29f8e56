"""Make the Scale GP SDK's own tracing (``scale_gp_beta.lib.tracing``) durable.

``init(path=None, sink=None, config=None)`` installs an ``export_fn`` in the SDK's
tracing queue manager (``scale_gp_beta.lib.tracing.init(export_fn=...)``), so the
batches the SDK would upsert (and drop after 4 failed attempts) are ``put`` into a
spool instead, owned by a `SyncSpoolTracingProcessor` (one background thread and
event loop). Spans made with ``create_trace`` / ``create_span`` / ``span.end()`` then
survive outages and restarts like any other spool row.

Credentials: with a ``sink`` given, none are needed. The SDK's queue manager only
exports when it holds an ``SGPClient``, so ``init`` registers a placeholder client
(api key ``"span-spool-unused"``, base URL ``http://127.0.0.1:9``) when it has none; it
never sends anything, because ``export_fn`` replaces the SDK's upsert. Without a
``sink``, the spool's ``SGPSink()`` reads ``SGP_API_KEY`` / ``SGP_ACCOUNT_ID`` /
``SGP_CLIENT_BASE_URL`` (and ``init`` raises `SpoolConfigError` when they are missing).

The SDK still holds spans in its own memory queue until its worker exports them
(every 4 s, or at 200 queued spans); `SGPTracingSpool.flush` and ``shutdown`` export
that queue first. This module imports ``scale_gp_beta`` (slow); ``import spool`` does not.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._config import SpoolConfig
from .._host import ExitHook, Redact
from .._processors import SyncSpoolTracingProcessor

if TYPE_CHECKING:
    from .._sink import Sink
    from .._stats import SpoolStats

__all__ = ["SGPTracingSpool", "init"]

log = logging.getLogger("spool.integrations.sgp_tracing")

PLACEHOLDER_API_KEY = "span-spool-unused"
PLACEHOLDER_ACCOUNT_ID = "span-spool-unused"
PLACEHOLDER_BASE_URL = "http://127.0.0.1:9"

_lock = threading.Lock()
_current: SGPTracingSpool | None = None


class SGPTracingSpool:
    """What `init` returns: the SDK's export hook in front of a `SyncSpoolTracingProcessor`.

    ``export(batch)`` is the ``export_fn`` (never raises). ``flush``/``stats``/``shutdown``
    act on the SDK's memory queue first, then on the spool; ``shutdown`` is idempotent
    and runs at interpreter exit before the spool's own exit hook and the SDK's ``atexit``
    hook, so the SDK's queue is exported into a live spool.
    """

    def __init__(self, processor: SyncSpoolTracingProcessor) -> None:
        self.processor = processor
        self._shutdown = False
        self._exit_hook = ExitHook(self.shutdown)  # registered after the processor's: runs first

    @property
    def dropped(self) -> int:
        """SDK span events that did not make it into the spool."""
        return self.processor.dropped

    @property
    def errors(self) -> int:
        """Failures of any kind (see `SyncSpoolTracingProcessor.errors`)."""
        return self.processor.errors

    def export(self, batch: Sequence[Mapping[str, Any]]) -> None:
        """The SDK's ``export_fn``: put each SGP item of ``batch`` into the spool. Never raises."""
        self.processor.on_spans_start(batch)

    def _export_sdk_queue(self) -> None:
        """Run the SDK's in-memory queue through ``export`` now (on this thread)."""
        try:
            from scale_gp_beta.lib.tracing import trace_queue_manager as tqm

            manager = tqm._global_tracing_queue_manager
            if manager is not None:
                manager.flush_queue()
        except Exception as exc:
            self.processor.fail("exporting the SDK's tracing queue", exc)

    def flush(self, timeout: float | None = 30) -> bool:
        """Export the SDK's queue into the spool, then deliver; True if the spool is empty."""
        if self._shutdown:
            return False
        self._export_sdk_queue()
        return self.processor.flush(timeout)

    def stats(self) -> SpoolStats | None:
        """The spool's `SpoolStats` (None after shutdown)."""
        return self.processor.stats()

    def shutdown(self, timeout: float | None = None) -> None:
        """Export the SDK's queue, then shut the spool down (drain up to ``timeout``).

        Spans the SDK exports afterwards are counted in ``dropped``. Idempotent; never raises.
        """
        global _current
        if self._shutdown:
            return
        self._shutdown = True
        self._exit_hook.cancel()
        self._export_sdk_queue()
        self.processor.shutdown(timeout)
        with _lock:
            if _current is self:
                _current = None


def init(
    path: str | os.PathLike[str] | None = None,
    sink: Sink | None = None,
    config: SpoolConfig | None = None,
    *,
    redact: Redact | None = None,
) -> SGPTracingSpool:
    """Route ``scale_gp_beta.lib.tracing`` through a spool at ``path``; return its handle.

    Call it at program start instead of (or after) ``scale_gp_beta.lib.tracing.init``.
    If the SDK's tracing is already initialized, its exporter is switched to the spool
    (the SDK itself refuses a new ``export_fn`` once initialized). Calling ``init`` again
    replaces the previous spool (which is shut down). Raises what
    `SyncSpoolTracingProcessor` raises (e.g. `SpoolConfigError` without a sink and
    without credentials); exporting never raises.
    """
    global _current
    from scale_gp_beta import SGPClient
    from scale_gp_beta.lib.tracing import trace_queue_manager as tqm
    from scale_gp_beta.lib.tracing.util import is_disabled

    processor = SyncSpoolTracingProcessor(path, sink, config, redact=redact)
    handle = SGPTracingSpool(processor)
    try:
        with _lock:
            previous, _current = _current, handle
            manager = tqm._global_tracing_queue_manager
            if manager is None:
                placeholder = SGPClient(
                    api_key=PLACEHOLDER_API_KEY,
                    account_id=PLACEHOLDER_ACCOUNT_ID,
                    base_url=PLACEHOLDER_BASE_URL,
                    max_retries=0,
                )
                tqm.init(placeholder, export_fn=handle.export)
            else:
                manager._exporter.export_fn = handle.export
                if manager._client is None:
                    manager.register_client(
                        SGPClient(
                            api_key=PLACEHOLDER_API_KEY,
                            account_id=PLACEHOLDER_ACCOUNT_ID,
                            base_url=PLACEHOLDER_BASE_URL,
                            max_retries=0,
                        )
                    )
    except BaseException:
        processor.shutdown(0)
        raise
    if is_disabled():
        log.warning(
            "span-spool: Scale GP tracing is disabled (DISABLE_SCALE_TRACING or "
            "configure(disabled=True)); the SDK creates no spans to record"
        )
    if previous is not None:
        previous.shutdown()
    return handle
