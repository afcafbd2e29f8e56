"""A deadline for a whole request (connect, write and read together) on httpx's sync transport.

httpx's timeouts bound each socket operation, so a server that drips a byte a second holds a request for as long
as it likes. Here every socket operation of the requests made inside `deadline(seconds)` (on this thread) waits at
most what is left of the deadline, and one started after it fails at once as a timeout: httpx raises its
`TimeoutException` as for any other timeout, and the connection is dropped. The streams are httpcore's public
`NetworkStream` API; the one private step is handing the backend to the pool httpx builds (`_network_backend`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import httpcore

if TYPE_CHECKING:
    import ssl

    import httpx

__all__ = ["deadline", "deadline_transport"]

_local = threading.local()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Requests made in this block on this thread end within `seconds` from now, or fail as timed out."""
    _local.until = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.until = None


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    until: float | None = getattr(_local, "until", None)
    if until is None:
        return timeout
    left = until - time.monotonic()
    if left <= 0:
        raise error("the whole request took longer than its deadline")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self._stream.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self._backend.connect_tcp(host, port, left, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self._backend.connect_unix_socket(path, left, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def deadline_transport(**kwargs: Any) -> httpx.HTTPTransport:
    """`httpx.HTTPTransport(**kwargs)` whose requests keep the `deadline` they are made under. Raises
    `RuntimeError` if httpx's pool has no network backend to wrap (an httpx this was not written for)."""
    import httpx

    transport = httpx.HTTPTransport(**kwargs)
    pool = transport._pool
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(backend, httpcore.NetworkBackend):
        raise RuntimeError(f"httpx {httpx.__version__}: no network backend to give a request deadline to")
    pool._network_backend = _Backend(backend)
    return transport
