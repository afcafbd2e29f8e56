"""A minimal HTTP/1.1 keep-alive client for one endpoint: the drainer's hot loop, and nothing else.

httpx (through httpcore, h11 and anyio) spends ~1.5 ms of CPU per request on the event loop here; writing the
request in one piece and reading the response straight off an `asyncio.StreamReader` costs ~0.1 ms. `SGPSink` uses
this for direct connections and keeps httpx for proxied ones (this client does not speak to proxies).

Contract: `Endpoint.request` sends one request and returns its `Response`, or raises `TimeoutError` (the whole
exchange, connecting included, took longer than `timeout`) or `OSError` / `HttpProtocolError` (no usable answer;
`ConnectionError`s count as `OSError`). A connection that failed, timed out, was cancelled mid-request, or that the
server asked to close is closed, never reused. A request on a reused keep-alive connection that the server closed
before answering is sent again, once, on a new connection (as httpx does; safe for idempotent requests such as an
upsert). One `Endpoint` belongs to the event loop that first uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import NamedTuple
from urllib.parse import urlsplit

__all__ = ["Endpoint", "HttpProtocolError", "Response"]

_LIMIT = 256 * 1024  # longest status line + header block accepted
_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


class HttpProtocolError(Exception):
    """The server's answer was not HTTP/1.x this client understands."""


class Response(NamedTuple):
    status: int
    headers: dict[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    body: bytes


class _Conn(NamedTuple):
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class Endpoint:
    """Keep-alive connections to the origin of `url`, requests to its path.

    `headers` are sent with every request (`Host`, `Content-Length` and, unless given, `Accept-Encoding: identity`
    are added). `ssl_context` is used for https (None: `ssl.create_default_context()`, made once). At most
    `max_idle` idle connections are kept.
    """

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 16,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]  # never send userinfo
        lines = [f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
        if not any(k.lower() == "accept-encoding" for k in headers):
            lines.append("Accept-Encoding: identity\r\n")  # bodies are read as sent: no decompression here
        self._head = f" {target} HTTP/1.1\r\nHost: {host}\r\n{''.join(lines)}Content-Length: ".encode()
        self._max_idle = max_idle
        self._idle: list[_Conn] = []
        self._closed = False

    async def request(self, method: str, body: bytes, *, timeout: float) -> Response:
        """Send `method` with `body` to the endpoint's URL; see the module docstring for what can raise."""
        message = b"".join((method.encode("ascii"), self._head, str(len(body)).encode(), b"\r\n\r\n", body))
        async with asyncio.timeout(timeout):
            while self._idle:
                conn = self._idle.pop()
                if conn.reader.at_eof() or conn.writer.is_closing():
                    _close(conn)
                    continue
                try:
                    return await self._exchange(conn, message, method)
                except _Stale:
                    continue  # the server closed it while idle: send on another (or a new) one
            return await self._exchange(await self._connect(), message, method, fresh=True)

    async def _connect(self) -> _Conn:
        reader, writer = await asyncio.open_connection(
            self.host,
            self.port,
            ssl=self._ssl,
            server_hostname=self.host if self._ssl is not None else None,
            limit=_LIMIT,
        )
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, message: bytes, method: str, *, fresh: bool = False) -> Response:
        reused = not fresh
        try:
            conn.writer.write(message)
            try:
                status, headers, keep = await _read_head(conn.reader)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                if reused and (not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial):
                    raise _Stale from exc
                raise
            body = await _read_body(conn.reader, headers, status, method)
        except BaseException:
            _close(conn)
            raise
        delimited = (
            "content-length" in headers
            or "chunked" in headers.get("transfer-encoding", "").lower()
            or status in (204, 304)
            or method == "HEAD"
        )
        if keep and delimited and not self._closed and len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            _close(conn)
        return Response(status, headers, body)

    async def aclose(self) -> None:
        """Close every idle connection (requests in progress close theirs when they end). Idempotent."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)
        for conn in idle:
            with contextlib.suppress(*_ERRORS, ssl.SSLError):
                await conn.writer.wait_closed()


class _Stale(Exception):
    """A reused connection the server had closed before this request: retry on another one."""


def _close(conn: _Conn) -> None:
    with contextlib.suppress(RuntimeError):  # its loop is closed: nothing more can be done
        conn.writer.close()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bool]:
    """Status, headers and whether the connection may be kept, skipping 1xx interim responses."""
    while True:
        block = await reader.readuntil(b"\r\n\r\n")
        lines = block[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HttpProtocolError(f"malformed status line: {lines[0][:100]!r}")
        status = int(parts[1])
        if 100 <= status < 200:
            continue
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise HttpProtocolError(f"malformed header line: {line[:100]!r}")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        conn = headers.get("connection", "").lower()
        keep = "close" not in conn if parts[0] == b"HTTP/1.1" else "keep-alive" in conn
        return status, headers, keep


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], status: int, method: str) -> bytes:
    if method == "HEAD" or status in (204, 304):
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise HttpProtocolError(f"malformed chunk size: {line[:40]!r}") from None
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailer fields
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = headers.get("content-length")
    if length is None:
        return await reader.read()  # delimited by the end of the connection (not kept)
    if not length.isdigit():
        raise HttpProtocolError(f"malformed Content-Length: {length[:40]!r}")
    return await reader.readexactly(int(length))
