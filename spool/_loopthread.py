"""An asyncio event loop in a daemon thread of its own: the sync tracing processor and the test receiver both run
their async code there, for callers that are plain threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

log = logging.getLogger("spool")
_T = TypeVar("_T")


class LoopThread:
    """`start()` runs a new loop in a daemon thread named `name`; `call` runs a coroutine there and waits for it;
    `stop()` stops the loop, cancels and awaits the tasks left on it, closes it and joins the thread. Never raises
    from the loop's own clean-up (it is logged, or given to `on_error`)."""

    def __init__(
        self,
        name: str,
        *,
        exception_handler: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.name = name
        self._handler = exception_handler
        self._on_error = on_error
        self.loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None

    def start(self) -> LoopThread:
        """Start the thread; returns once the loop runs. Returns self."""
        if self._handler is not None:
            self.loop.set_exception_handler(self._handler)
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=self.name, daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def is_alive(self) -> bool:
        """True from `start` until the loop's thread has ended."""
        return self._thread is not None and self._thread.is_alive()

    def on_thread(self) -> bool:
        """True when called from the loop's own thread (where `call` would deadlock)."""
        return self._thread is not None and threading.get_ident() == self._thread.ident

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Schedule `coro` on the loop; `RuntimeError` once the loop is closed."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float | None) -> _T:
        """Run `coro` on the loop and wait for it: returns or raises what it does; after `timeout` it is cancelled
        and `TimeoutError` raised."""
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (its thread cleans up and closes it) and join the thread for up to `timeout`. From the
        loop's own thread it only asks the loop to stop. Idempotent."""
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None and not self.on_thread():
            self._thread.join(timeout)

    def _run(self, ready: threading.Event) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            except Exception as exc:
                if self._on_error is not None:
                    self._on_error("stopping the background loop", exc)
                else:
                    log.exception("span-spool: stopping the %s loop failed", self.name)
            finally:
                asyncio.set_event_loop(None)
                loop.close()
