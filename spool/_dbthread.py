"""Threads of our own for blocking work. `DbThread`: one per store connection (aiosqlite's model): every call runs
there, in submission order, and each call is a whole transaction. A submitted call always runs to the end:
cancelling the coroutine that awaits it (a timeout, a loop shutting down) never loses or half-does it. `Workers`:
a pool of such threads, one per call in progress (the sink's requests). Both survive `os.fork()` (`spool._fork`): the
fork waits for a call in progress to finish, and a child starts its own threads on first use; calls the parent had
queued stay the parent's."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ParamSpec, TypeVar

from ._fork import watch_fork

__all__ = ["DbThread", "Workers"]

P = ParamSpec("P")
T = TypeVar("T")

_Call = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DbThread:
    """A daemon thread of our own rather than a `ThreadPoolExecutor`: executors refuse new work once interpreter
    shutdown begins, which would stop `atexit` handlers from committing and closing."""

    _calls: queue.SimpleQueue[_Call | None]
    _busy: threading.Lock  # held while a call runs
    _starting: threading.Lock
    _thread: threading.Thread | None  # started by the first call

    def __init__(self, name: str = "spool-db", *, pause_for_fork: bool = True) -> None:
        self._name = name
        self._pause_for_fork = pause_for_fork
        self._closed = False
        self._paused = False
        self._after_fork(child=True)  # the same fresh state a fork child starts from
        watch_fork(self)

    def _start(self) -> threading.Thread:
        with self._starting:
            if self._thread is None:
                thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                thread.start()
                self._thread = thread
            return self._thread

    def _serve(self) -> None:
        calls, busy = self._calls, self._busy
        while (call := calls.get()) is not None:
            with busy:
                _run(*call)
                del call  # an idle thread keeps nothing of its last call (a sender's would be a whole request body)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Queue `fn` now: the order of calls is fixed here, not at the await. Raises `RuntimeError` after close."""
        if self._closed:
            raise RuntimeError("the spool's database thread is closed")
        if self._thread is None:
            self._start()
        fut: Future[T] = Future()
        self._calls.put((fut, fn, args, kwargs))
        return fut

    async def __call__(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` on the store's thread and await its result from whatever loop is running."""
        return await asyncio.shield(asyncio.wrap_future(self.submit(fn, *args, **kwargs)))

    def close(self) -> None:
        """Finish queued calls, then stop the thread. Idempotent."""
        if not self._closed:
            self._closed = True
            self._calls.put(None)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _before_fork(self) -> None:
        # Let the call in progress finish (a commit takes milliseconds), so the child gets SQLite between calls.
        if self._pause_for_fork and self._thread is not None:
            self._paused = self._busy.acquire(timeout=30.0)

    def _after_fork(self, child: bool) -> None:
        if child:  # no thread yet (one starts on the first call), nothing queued, no lock held
            self._calls = queue.SimpleQueue()
            self._busy = threading.Lock()
            self._starting = threading.Lock()
            self._thread = None
        elif self._paused:
            self._busy.release()
        self._paused = False


def _run(fut: Future[T], fn: Callable[..., T], args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    if fut.set_running_or_notify_cancel():
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            fut.set_exception(exc)
            del fut  # the error's traceback holds this frame: without this, frame -> fut -> error -> frame is a
            # cycle that keeps the call's arguments (a request body) until the cyclic GC runs, which can be minutes


class Workers:
    """Threads for blocking calls that may run side by side: each call gets an idle thread, or a new one, which
    returns to the pool when the call ends. A call cancelled before it started is skipped; one that started runs
    to the end even if its awaiter is cancelled. A fork child starts with no threads."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._after_fork(child=True)
        watch_fork(self)

    def _before_fork(self) -> None:
        pass

    def _after_fork(self, child: bool) -> None:
        if child:
            self._idle: list[DbThread] = []
            self._lock = threading.Lock()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Start `fn` in an idle (or new) thread now."""
        with self._lock:
            # Not paused for a fork: a call here may run for long (a drain thread's steady path), and uses no SQLite.
            worker = self._idle.pop() if self._idle else DbThread(self._name, pause_for_fork=False)
        fut = worker.submit(fn, *args, **kwargs)
        fut.add_done_callback(lambda _: self._give_back(worker))
        return fut

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`submit`, and await the result from the running loop."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def _give_back(self, worker: DbThread) -> None:
        with self._lock:
            self._idle.append(worker)

    def close(self) -> None:
        """Stop the idle threads (busy ones rejoin the pool when their call ends). The pool stays usable."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()
