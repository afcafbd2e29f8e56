"""Sinks: where batches go. `SGPSink` speaks Scale GP's `PUT /v5/spans/batch`.

`Sink` is the contract the drainer, the CLI and the processors call; `HttpSink` is what the HTTP sinks share.
"""

from __future__ import annotations

import abc
import contextlib
import email.utils
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import orjson

from ._errors import CredentialsError, DeliveryError, EndpointError, RejectedError, SpoolConfigError, TransientError
from ._fork import watch_fork

if TYPE_CHECKING:
    import httpx

__all__ = [
    "MAX_ANSWER_BYTES",
    "HttpSink",
    "SGPSink",
    "Sink",
    "classify_response",
    "join_items",
    "shown_url",
    "url_password",
]

MAX_ANSWER_BYTES = 1 << 20
"""At most this much of an answer's body is read (an error's detail, a `partial_success`); the rest is discarded."""

_REJECTED = frozenset({400, 409, 413, 422})
_CREDENTIALS = frozenset({401, 403})


class Sink(abc.ABC):
    """Where the drainer sends batches: the whole contract. Subclass it, set `format` and write `send_blocking`.

    The drainer calls `send_blocking` from threads of its own, up to `max_inflight` at once (it must be
    thread-safe), never on an event loop; `prepare` once before a round's first batch is leased; `close` when the
    spool closes (the sink may be used again afterwards). Nothing else is looked up on a sink.
    """

    format: ClassVar[str] = "sgp"
    """The storage format of the rows this sink takes: `sgp` (each body one Scale GP item's JSON) or `otlp` (each
    body one OTLP `Span` message, protobuf). A spool file created for the sink gets this format."""
    endpoint_setting: ClassVar[str] = "the sink's URL"
    """Where an operator sets the URL (named when the server has no such endpoint)."""
    credentials_setting: ClassVar[str] = "the sink's credentials"
    """Where an operator sets the credentials (named when the server refuses them)."""

    @abc.abstractmethod
    def send_blocking(self, bodies: Sequence[bytes], *, timeout: float) -> None:
        """Deliver `bodies` (stored rows, in the sink's `format`) within `timeout` seconds, or raise a
        `DeliveryError` subclass, the whole outcome vocabulary: `TransientError` (retry later, rows kept),
        `RejectedError` (some body is bad: the batch is split until it stands alone, then dead-lettered),
        `CredentialsError` / `EndpointError` (configuration: draining pauses, rows kept). Anything else raised is
        taken as transient. Returning means the server took every body: their rows are deleted."""

    def prepare(self) -> None:
        """Set-up (configuration, connections) made before a batch is leased, so that a request's lease covers the
        request only. Blocking; an error here is ignored, and surfaces from `send_blocking`."""
        return None

    def counters(self) -> Mapping[str, int]:
        """The sink's own counters for this process (merged into `Spool.metrics()`)."""
        return {}

    def close(self) -> None:
        """Release connections and threads. The sink may be used again afterwards (it reconnects)."""
        return None


def join_items(items: Sequence[bytes]) -> bytes:
    """The request body `{"items":[...]}` built from stored bytes, without parsing them."""
    return b'{"items":[' + b",".join(items) + b"]}"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None  # "inf", "nan": garbage, ignored
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


def classify_response(
    status: int,
    body: bytes,
    retry_after: str | None = None,
    url: object = None,
    *,
    rejected: Callable[[int], bool] = _REJECTED.__contains__,
    api: str = "span API",
) -> DeliveryError | None:
    """None for a 2xx; otherwise the error that says what the failure means for the batch.

    401/403 -> `CredentialsError`; 404 -> `EndpointError` (a wrong base URL: configuration, not the spans' fault;
    `url` and `api` are named in its message); 400/409/413/422 (the statuses `rejected` holds) -> `RejectedError`;
    everything else (408, 429, 5xx, other unexpected codes) -> `TransientError` carrying `Retry-After`.
    """
    if 200 <= status < 300:
        return None
    detail = _detail(body)
    msg = f"HTTP {status}: {detail}"
    if status in _CREDENTIALS:
        return CredentialsError(msg, status=status, detail=detail)
    if status == 404:
        where = f" at {url}" if url is not None else ""
        return EndpointError(f"no {api}{where} (HTTP 404: {detail})", status=status, detail=detail)
    if rejected(status):
        return RejectedError(msg, status=status, detail=detail)
    return TransientError(msg, status=status, detail=detail, retry_after=_retry_after(retry_after))


class HttpSink(Sink):
    """What `SGPSink` and `OTLPSink` share: one keep-alive `httpx.HTTPTransport` per process (a forked child makes
    its own connections), the sync transport (half the CPU of the async one per request; the drainer's threads
    send), a deadline over the whole request, and credentials that are never shown (`scrub`). A proxy from the
    environment (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`) is honoured as httpx would. `transport`: an
    `httpx.BaseTransport` to use instead (`httpx.MockTransport(handler)` in tests). Subclasses say where
    (`_target`), what (`_body`) and what an answer means (`_outcome`)."""

    format: ClassVar[str]
    endpoint_setting: ClassVar[str]
    credentials_setting: ClassVar[str]
    _method: ClassVar[str] = "POST"

    def __init__(
        self, secrets: Sequence[tuple[str | None, str]] = (), transport: httpx.BaseTransport | None = None
    ) -> None:
        self._secrets = sorted(
            {(v, setting) for v, setting in secrets if v and len(v) >= 4}, key=lambda s: -len(s[0])
        )  # (value, the setting that holds it), longest first: never shown, only named
        self._lock = threading.Lock()
        self._given = transport
        self._transport: httpx.BaseTransport | None = None
        self._transport_pid = 0
        watch_fork(self)

    def _before_fork(self) -> None:
        pass

    def _after_fork(self, child: bool) -> None:
        if child:
            self._lock = threading.Lock()  # the transport is re-made per process (`_ready`)

    def _target(self) -> tuple[httpx.URL, httpx.Headers]:
        """URL and headers (blocking: called in a sender thread)."""
        raise NotImplementedError

    def _body(self, items: Sequence[bytes]) -> bytes:
        raise NotImplementedError

    def _outcome(self, status: int, body: bytes, headers: httpx.Headers, url: str) -> None:
        """Return for an answer that means delivered; raise the `DeliveryError` it means otherwise (`url`: as it may
        be shown, without a password)."""
        raise NotImplementedError

    def scrub(self, text: str) -> str:
        """`text` with every credential value of this sink replaced by the name of its setting (`[SGP_API_KEY]`): for
        anything that is shown, logged or stored (errors, `last_error`, dead letters)."""
        for value, setting in self._secrets:
            if value in text:
                text = text.replace(value, f"[{setting}]")
            shown = repr(value.encode())[2:-1]  # as it appears inside a bytes repr (a header value with a newline)
            if shown != value and shown in text:
                text = text.replace(shown, f"[{setting}]")
        return text

    def _scrubbed(self, exc: DeliveryError) -> DeliveryError:
        exc.args = tuple(self.scrub(a) if isinstance(a, str) else a for a in exc.args)
        if exc.detail:
            exc.detail = self.scrub(exc.detail)
        return exc

    def _ready(self) -> httpx.BaseTransport:
        """A transport for this process (blocking)."""
        with self._lock:
            if self._given is not None:
                return self._given
            if self._transport is None or self._transport_pid != os.getpid():  # a forked child: its own sockets
                import httpx

                from ._deadline import deadline_transport

                url, _ = self._target()
                self._transport = deadline_transport(
                    proxy=_proxy_for(str(url)), limits=httpx.Limits(max_keepalive_connections=16), retries=0
                )
                self._transport_pid = os.getpid()
            return self._transport

    def prepare(self) -> None:
        self._ready()

    def send_blocking(self, bodies: Sequence[bytes], *, timeout: float) -> None:
        """One request (never call it on an event loop). The whole request (connect, write,
        read, and the reading of the answer) is cut off at `timeout`; at most `MAX_ANSWER_BYTES` of the answer are read.
        A 2xx whose body is then cut short counts as taken: the server answers only after it stored the batch, and
        sending it again would only repeat it. The error raised names no credential value (`scrub`)."""
        try:
            self._send(bodies, timeout)
        except DeliveryError as exc:
            raise self._scrubbed(exc) from None

    def _send(self, items: Sequence[bytes], timeout: float) -> None:
        import httpx

        from ._deadline import deadline

        transport = self._ready()
        url, headers = self._target()
        request = httpx.Request(
            self._method,
            url,
            headers=headers,
            content=self._body(items),
            extensions={"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}},
        )
        try:
            with deadline(timeout):
                resp = transport.handle_request(request)
                try:
                    body = _read_capped(resp)
                except httpx.TransportError:
                    if not 200 <= resp.status_code < 300:
                        raise
                    body = b""
                finally:
                    resp.close()
                self._outcome(resp.status_code, body, resp.headers, shown_url(str(url)))
        except httpx.TimeoutException as exc:
            raise TransientError(f"{shown_url(str(url))}: timed out after {timeout:g}s ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"connection to {shown_url(str(url))} failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()


class SGPSink(HttpSink):
    """Delivers batches to Scale GP's `PUT /v5/spans/batch` (an `HttpSink`).

    Credentials and base URL come from the arguments, else the SDK's environment (`SGP_API_KEY`, `SGP_ACCOUNT_ID`,
    `SGP_CLIENT_BASE_URL`); the constructor raises `SpoolConfigError` when the key or account is missing or the base
    URL is not an http(s) URL. The SDK (imported off the caller's thread, started at construction) supplies the base
    URL and headers. The SDK's own retries are not used: the drainer's retry policy is the only one.
    """

    format: ClassVar[str] = "sgp"
    endpoint_setting: ClassVar[str] = "SGP_CLIENT_BASE_URL"
    credentials_setting: ClassVar[str] = "SGP_API_KEY / SGP_ACCOUNT_ID"
    _method: ClassVar[str] = "PUT"

    def __init__(
        self,
        api_key: str | None = None,
        account_id: str | None = None,
        base_url: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # (stripped: a file-mounted secret ends in a newline, which no header may carry)
        self._api_key = (api_key or os.environ.get("SGP_API_KEY") or "").strip() or None
        self._account_id = (account_id or os.environ.get("SGP_ACCOUNT_ID") or "").strip() or None
        self._base_url = (base_url or os.environ.get("SGP_CLIENT_BASE_URL") or "").strip() or None
        missing = [n for n, v in (("SGP_API_KEY", self._api_key), ("SGP_ACCOUNT_ID", self._account_id)) if not v]
        if missing:
            raise SpoolConfigError(f"no Scale GP credentials: set {' and '.join(missing)}")
        if self._base_url is not None and not self._base_url.lower().startswith(("http://", "https://")):
            source = "base_url" if base_url else "SGP_CLIENT_BASE_URL"
            raise SpoolConfigError(
                f"{source}={shown_url(self._base_url)!r} is not an http(s) URL (e.g. http://127.0.0.1:8321)"
            )
        self._url: httpx.URL | None = None
        self._headers: httpx.Headers | None = None
        super().__init__(
            [(self._api_key, "SGP_API_KEY"), (url_password(self._base_url), "SGP_CLIENT_BASE_URL")], transport
        )
        # The SDK import takes about a second: start it now, off the caller's thread, so the first send is quick.
        self._configured = threading.Thread(target=self._try_configure, name="spool-sgp-config", daemon=True)
        self._configured.start()

    def _before_fork(self) -> None:
        # A fork in the middle of the SDK's import would leave the child's import of it waiting for good on the
        # module lock of a thread the child does not have: let the import finish first (about a second, once).
        self._configured.join(30.0)

    def __repr__(self) -> str:  # never show the key
        return f"SGPSink(base_url={shown_url(self._base_url) if self._base_url else 'SDK default'!r})"

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

    def _target(self) -> tuple[httpx.URL, httpx.Headers]:
        self._configured.join()
        if self._url is None:
            self._configure()  # the background attempt failed: do it here and let the error surface
        return self._url, self._headers  # type: ignore[return-value]

    def _body(self, items: Sequence[bytes]) -> bytes:
        return join_items(items)

    def _outcome(self, status: int, body: bytes, headers: httpx.Headers, url: str) -> None:
        err = classify_response(status, body, headers.get("retry-after"), url)
        if err is not None:
            raise err


def _read_capped(resp: httpx.Response, limit: int = MAX_ANSWER_BYTES) -> bytes:
    """At most `limit` bytes of an answer's body, as sent (no decoding: a compressed bomb cannot grow here); the rest
    is never read (closing the response then drops the connection)."""
    if resp.is_stream_consumed:  # read already (a transport that reads answers whole: `httpx.MockTransport`)
        return resp.content[:limit]
    parts: list[bytes] = []
    size = 0
    for chunk in resp.iter_raw():
        parts.append(chunk[: limit - size])
        size += len(parts[-1])
        if size >= limit:
            break
    return b"".join(parts)


def url_password(url: str | None) -> str | None:
    """The password in `url`, if it holds one (a credential: named, never shown)."""
    import urllib.parse

    try:
        return urllib.parse.urlsplit(url or "").password
    except ValueError:
        return None


def shown_url(url: str) -> str:
    """`url` as it may be shown: a password in it replaced by `***`."""
    password = url_password(url)
    return url.replace(f":{password}@", ":***@", 1) if password else url


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
