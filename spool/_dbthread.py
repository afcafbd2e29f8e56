"""One thread per store connection: every call runs there, in submission order (aiosqlite's model), and each
call is a whole transaction, so cancelling the awaiting coroutine never leaves one half-done."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["DbThread"]

P = ParamSpec("P")
T = TypeVar("T")


class DbThread:
    def __init__(self, name: str = "spool-db") -> None:
        self._ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Queue `fn` now (order is fixed at this call, not at the await)."""
        return self._ex.submit(fn, *args, **kwargs)

    async def __call__(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` on the store's thread and await its result from whatever loop is running."""
        return await asyncio.wrap_future(self._ex.submit(fn, *args, **kwargs))

    def close(self) -> None:
        """Finish queued calls, then stop the thread."""
        self._ex.shutdown(wait=True)
