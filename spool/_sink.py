"""Sinks: where batches go. `SGPSink` speaks Scale GP's `PUT /v5/spans/batch`.

A sink's `send` either returns (the server took every item) or raises a `DeliveryError` subclass saying what kind
of failure it was: `TransientError` (retry), `RejectedError` (some item is bad: split the batch),
`CredentialsError` (pause until the key is fixed).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import orjson

from ._errors import CredentialsError, DeliveryError, RejectedError, SpoolConfigError, TransientError

if TYPE_CHECKING:
    import httpx

__all__ = ["SGPSink", "Sink", "classify_response", "join_items"]

_REJECTED = frozenset({400, 409, 413, 422})
_CREDENTIALS = frozenset({401, 403})


@runtime_checkable
class Sink(Protocol):
    """Something that takes batches of encoded span items."""

    async def send(self, items: Sequence[bytes], *, timeout: float) -> None:
        """Deliver `items` (each the exact JSON bytes of one span) or raise a `DeliveryError` subclass."""

    async def aclose(self) -> None:
        """Release connections. The sink may be used again afterwards (it reconnects)."""


def join_items(items: Sequence[bytes]) -> bytes:
    """The request body `{"items":[...]}` built from stored bytes, without parsing them."""
    return b'{"items":[' + b",".join(items) + b"]}"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _detail(body: bytes) -> str:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace")
    if isinstance(parsed, dict) and "detail" in parsed:
        d = parsed["detail"]
        return d if isinstance(d, str) else orjson.dumps(d).decode()[:500]
    return body[:500].decode("utf-8", "replace")


def classify_response(status: int, body: bytes, retry_after: str | None = None) -> DeliveryError | None:
    """None for a 2xx; otherwise the error that says what the failure means for the batch.

    401/403 -> `CredentialsError`; 400/409/413/422 -> `RejectedError`; everything else (408, 429, 5xx, and
    unexpected codes such as a 404 from a wrong base URL, which are configuration, not the spans' fault) ->
    `TransientError` carrying `Retry-After`.
    """
    if 200 <= status < 300:
        return None
    detail = _detail(body)
    msg = f"HTTP {status}: {detail}"
    if status in _CREDENTIALS:
        return CredentialsError(msg, status=status, detail=detail)
    if status in _REJECTED:
        return RejectedError(msg, status=status, detail=detail)
    return TransientError(msg, status=status, detail=detail, retry_after=_retry_after(retry_after))


class SGPSink:
    """Delivers batches to Scale GP's `PUT /v5/spans/batch`.

    Credentials and base URL come from the arguments, else the SDK's environment (`SGP_API_KEY`, `SGP_ACCOUNT_ID`,
    `SGP_CLIENT_BASE_URL`); the constructor raises `SpoolConfigError` when the key or account is missing. The SDK
    (imported off the caller's thread, started at construction) supplies the base URL and headers. Requests go
    through one keep-alive `httpx.AsyncHTTPTransport` per event loop, re-created when the loop changes; the sink
    calls the transport directly (httpx's public transport API), which halves httpx's CPU per request against
    `AsyncClient.put` and skips what a span upload never uses (cookies, redirects, auth flows). A proxy from the
    environment (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`) is honoured as httpx would. The SDK's own retries are not
    used: the drainer's retry policy is the only one.
    """

    def __init__(self, api_key: str | None = None, account_id: str | None = None, base_url: str | None = None) -> None:
        self._api_key = api_key or os.environ.get("SGP_API_KEY")
        self._account_id = account_id or os.environ.get("SGP_ACCOUNT_ID")
        self._base_url = base_url or os.environ.get("SGP_CLIENT_BASE_URL") or None
        missing = [n for n, v in (("SGP_API_KEY", self._api_key), ("SGP_ACCOUNT_ID", self._account_id)) if not v]
        if missing:
            raise SpoolConfigError(
                f"no Scale GP credentials: set {' and '.join(missing)} (or pass api_key/account_id to SGPSink)"
            )
        self._url: httpx.URL | None = None
        self._headers: httpx.Headers | None = None
        self._transport: httpx.AsyncHTTPTransport | None = None
        self._transport_loop: asyncio.AbstractEventLoop | None = None
        # The SDK import takes about a second: start it now, off the caller's thread, so the first send is quick.
        self._configured = threading.Thread(target=self._try_configure, name="spool-sgp-config", daemon=True)
        self._configured.start()

    def __repr__(self) -> str:  # never show the key
        return f"SGPSink(base_url={self._base_url or 'SDK default'!r})"

    def _configure(self) -> None:
        """Resolve URL and headers through the SDK (slow import: runs in a worker thread)."""
        import httpx
        from scale_gp_beta import SGPClient

        sdk = SGPClient(api_key=self._api_key, account_id=self._account_id, base_url=self._base_url, max_retries=0)
        try:
            headers = {k: v for k, v in sdk.default_headers.items() if isinstance(v, str)}
            headers.update(sdk.auth_headers)
            headers["Content-Type"] = "application/json"
            headers.pop("X-Stainless-Async", None)
            self._headers = httpx.Headers(headers)
            self._url = httpx.URL(str(sdk.base_url).rstrip("/") + "/v5/spans/batch")
        finally:
            sdk.close()

    def _try_configure(self) -> None:
        with contextlib.suppress(Exception):  # retried on first send, where the error surfaces
            self._configure()

    async def _transport_for_loop(self) -> httpx.AsyncHTTPTransport:
        loop = asyncio.get_running_loop()
        if self._transport is None or self._transport_loop is not loop:
            if self._configured.is_alive():
                await asyncio.to_thread(self._configured.join)
            if self._url is None:
                self._configure()  # the background attempt failed: do it here and let the error surface
            if self._transport is None or self._transport_loop is not loop:  # re-check: a concurrent send may have won
                import httpx

                assert self._url is not None
                old, old_loop = self._transport, self._transport_loop
                self._transport = httpx.AsyncHTTPTransport(
                    proxy=_proxy_for(str(self._url)), limits=httpx.Limits(max_keepalive_connections=16), retries=0
                )
                self._transport_loop = loop
                if old is not None and old_loop is not None:
                    await _close_elsewhere(old, old_loop)
        return self._transport

    async def prepare(self) -> None:
        """Finish set-up (SDK configuration, a transport for this loop) before a batch is leased, so a request's
        timeout and lease cover the request only. Raises what `send` would raise for a bad configuration."""
        await self._transport_for_loop()

    async def send(self, items: Sequence[bytes], *, timeout: float) -> None:
        import httpx

        transport = await self._transport_for_loop()
        request = httpx.Request(
            "PUT",
            self._url,  # type: ignore[arg-type]
            headers=self._headers,
            content=join_items(items),
            extensions={"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}},
        )
        try:
            resp = await transport.handle_async_request(request)
            try:
                body = await resp.aread()
            finally:
                await resp.aclose()
        except httpx.TimeoutException as exc:
            raise TransientError(f"timed out after {timeout:g}s ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"connection failed: {type(exc).__name__}: {exc}") from exc
        err = classify_response(resp.status_code, body, resp.headers.get("retry-after"))
        if err is not None:
            raise err

    async def aclose(self) -> None:
        transport, loop = self._transport, self._transport_loop
        self._transport = self._transport_loop = None
        if transport is None or loop is None:
            return
        if loop is asyncio.get_running_loop():
            await transport.aclose()
        else:
            await _close_elsewhere(transport, loop)


def _proxy_for(url: str) -> str | None:
    """The proxy the environment sets for `url` (`HTTP(S)_PROXY`, `ALL_PROXY`, minus `NO_PROXY`), as httpx's
    `trust_env` would pick it; None for a direct connection."""
    import urllib.parse
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    parts = urllib.parse.urlsplit(url)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


async def _close_elsewhere(transport: httpx.AsyncHTTPTransport, loop: asyncio.AbstractEventLoop) -> None:
    """Close a transport that belongs to another loop, on that loop while it runs (a dead loop's cannot be awaited)."""
    if loop.is_running() and not loop.is_closed():
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(transport.aclose(), loop))
