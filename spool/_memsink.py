"""`MemorySink`: a sink in memory for tests, which takes or fails batches on command and records what it got."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ._errors import DeliveryError, RejectedError, TransientError
from ._sink import Sink

__all__ = ["MemorySink"]


class MemorySink(Sink):
    """Takes every batch, unless told otherwise, and records it: `batches` (each the bodies of one request it took),
    `bodies`, `items()` (SGP bodies parsed), `requests` (every call, failed ones included).

    On command: `fail(error, times=1)` makes the next `times` requests raise `error` (a `DeliveryError`: a
    `TransientError`, `CredentialsError`, ...); `reject_if(predicate)` refuses with a 422 `RejectedError` every
    request that holds a body for which `predicate(body)` is true (the drainer then splits it down to that body);
    `hold()` makes requests wait until `release()` (or their `timeout`, then `TransientError`). `wait_for(n)` blocks
    until `n` bodies were taken. Thread-safe. `format`: the storage format it stands for (`sgp` or `otlp`).
    """

    def __init__(self, format: str = "sgp") -> None:
        self.format = format  # type: ignore[misc]  # (a class attribute of `Sink`, set per instance here)
        self.batches: list[list[bytes]] = []
        self.requests = 0
        self._failures: list[DeliveryError] = []
        self._reject: Callable[[bytes], bool] | None = None
        self._open = threading.Event()
        self._open.set()
        self._cond = threading.Condition()

    def send_blocking(self, bodies: Sequence[bytes], *, timeout: float) -> None:
        with self._cond:
            self.requests += 1
        if not self._open.wait(timeout):
            raise TransientError(f"MemorySink held the request past its timeout ({timeout:g}s)")
        with self._cond:
            if self._failures:
                raise copy.copy(self._failures.pop(0))  # (a fresh one: each raise gets its own traceback)
            if self._reject is not None and any(self._reject(b) for b in bodies):
                raise RejectedError("HTTP 422: rejected by MemorySink.reject_if", status=422, detail="rejected")
            self.batches.append(list(bodies))
            self._cond.notify_all()

    def fail(self, error: DeliveryError, times: int = 1) -> None:
        """The next `times` requests raise `error`."""
        with self._cond:
            self._failures.extend([error] * times)

    def reject_if(self, predicate: Callable[[bytes], bool] | None) -> None:
        """Refuse (422) every request holding a body `predicate` accepts; None: refuse nothing."""
        with self._cond:
            self._reject = predicate

    def hold(self) -> None:
        """Requests wait (up to their timeout) until `release()`."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    @property
    def bodies(self) -> list[bytes]:
        """Every body taken, in the order taken."""
        with self._cond:
            return [b for batch in self.batches for b in batch]

    def items(self) -> list[dict[str, Any]]:
        """The bodies taken, parsed (an `sgp` sink's items)."""
        return [orjson.loads(b) for b in self.bodies]

    def wait_for(self, n: int, timeout: float = 30.0) -> bool:
        """Block until at least `n` bodies were taken; False at `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(map(len, self.batches)) < n:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    return sum(map(len, self.batches)) >= n
            return True

    def __repr__(self) -> str:
        return f"MemorySink(format={self.format!r}, taken={len(self.bodies)})"
