"""`OTLPSink`: OTLP/HTTP with protobuf bodies, to any collector or tracing backend that speaks it.

Sending needs no OpenTelemetry package: the rows of an `otlp` spool are protobuf already, and a request is built
from them on the wire (`spool._otlpwire`). Encoding spans needs `opentelemetry-proto` (`spool.otel`).
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import orjson

from ._errors import DeliveryError, RejectedError, SpoolConfigError
from ._otlpwire import partial_rejected, request_body
from ._sink import HttpSink, classify_response, shown_url, url_password

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_ENDPOINT", "OTLPSink", "classify_otlp", "otlp_endpoint", "otlp_headers"]

log = logging.getLogger("spool")

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
_TRANSIENT = frozenset({429, 502, 503, 504})


def otlp_endpoint(environ: Mapping[str, str] = os.environ) -> str:
    """The traces URL the environment names: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is, else
    `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`, else `http://localhost:4318/v1/traces`."""
    if url := environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return url
    if base := environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return base.rstrip("/") + "/v1/traces"
    return DEFAULT_ENDPOINT


def otlp_headers(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Headers from `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k2=v2`, values
    URL-decoded). Raises `SpoolConfigError` naming the variable for an entry with no `=`."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"):
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        out: dict[str, str] = {}
        for n, entry in enumerate(raw.split(","), 1):
            if not entry.strip():
                continue
            key, eq, value = entry.partition("=")
            if not eq or not key.strip():  # (its value is a credential: named by its place, never shown)
                hint = entry.split(":")[0].strip()[:40] if ":" in entry else ""
                got = f" ({hint!r} with ':' for '=')" if hint else ""
                raise SpoolConfigError(f"{name}: entry {n}{got} is not key=value (e.g. Authorization=Bearer%20...)")
            out[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
        return out
    return {}


def classify_otlp(status: int, body: bytes, retry_after: str | None = None, url: object = None) -> DeliveryError | None:
    """None for a 2xx; otherwise what the failure means, as the OTLP/HTTP spec says: 429/502/503/504 ->
    `TransientError` (with `Retry-After`); 401/403 -> `CredentialsError`; 404 -> `EndpointError`; any other 4xx ->
    `RejectedError` (the batch is split, the bad span dead-lettered). Other 5xx, which the spec calls not retryable,
    are `TransientError` here: dead-lettering a batch on a server's passing fault would cost every span of it a
    replay, and a cool-down keeps them."""
    return classify_response(status, body, retry_after, url, rejected=_rejected, api="OTLP traces endpoint")


def _rejected(status: int) -> bool:
    return 400 <= status < 500 and status not in _TRANSIENT and status != 408


class OTLPSink(HttpSink):
    """Delivers batches of an `otlp` spool by OTLP/HTTP: `POST`, `Content-Type: application/x-protobuf`.

    Endpoint: the argument, else `otlp_endpoint()` (the `OTEL_EXPORTER_OTLP_*` variables); headers: the argument,
    else `otlp_headers()`. `timeout` (seconds) caps each request below the spool's `request_timeout`; without it,
    `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` / `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds, as the spec says) do.
    A 2xx whose `partial_success` rejects spans counts them in `partial_rejected` and logs the server's message; they
    are not retried (the server has said they are bad). The constructor raises `SpoolConfigError` for an endpoint
    that is not an http(s) URL or a malformed headers variable.
    """

    format: ClassVar[str] = "otlp"
    endpoint_setting: ClassVar[str] = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT"
    credentials_setting: ClassVar[str] = "OTEL_EXPORTER_OTLP_HEADERS"
    _method: ClassVar[str] = "POST"

    def __init__(
        self,
        endpoint: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.endpoint = (endpoint or otlp_endpoint()).strip()
        if not self.endpoint.lower().startswith(("http://", "https://")):
            source = "endpoint" if endpoint else "the OTEL_EXPORTER_OTLP_* endpoint"
            raise SpoolConfigError(
                f"{source} {shown_url(self.endpoint)!r} is not an http(s) URL (e.g. http://127.0.0.1:4318)"
            )
        self._extra_headers = {k: v.strip() for k, v in (headers if headers is not None else otlp_headers()).items()}
        self.timeout = timeout if timeout is not None else _env_timeout()
        self.partial_rejected = 0
        """Spans servers refused in a `partial_success` (this process, since the sink was made)."""
        self._count = threading.Lock()
        self._url: httpx.URL | None = None
        self._headers: httpx.Headers | None = None
        where = "headers" if headers is not None else self.credentials_setting
        super().__init__(
            [*((v, f"{where} {k}") for k, v in self._extra_headers.items()), (url_password(self.endpoint), "endpoint")],
            transport,
        )

    def __repr__(self) -> str:  # never show the headers (they often carry a key), nor a password in the URL
        return f"OTLPSink(endpoint={shown_url(self.endpoint)!r})"

    def _target(self) -> tuple[httpx.URL, httpx.Headers]:
        if self._url is None or self._headers is None:
            import httpx

            from . import __version__

            headers = {"User-Agent": f"span-spool/{__version__}", **self._extra_headers}
            headers["Content-Type"] = "application/x-protobuf"
            self._headers = httpx.Headers(headers)
            self._url = httpx.URL(self.endpoint)
        return self._url, self._headers

    def _body(self, items: Sequence[bytes]) -> bytes:
        """The request; a row that is not OTLP protobuf is a `RejectedError` (the batch is split, the row
        dead-lettered): retrying could never send it."""
        try:
            return request_body(items)
        except ValueError as exc:
            raise RejectedError(f"a row is not an OTLP span ({exc})", detail=str(exc)) from None

    def counters(self) -> Mapping[str, int]:
        return {"partial_rejected": self.partial_rejected}

    def send_blocking(self, bodies: Sequence[bytes], *, timeout: float) -> None:
        super().send_blocking(bodies, timeout=min(timeout, self.timeout) if self.timeout else timeout)

    def _outcome(self, status: int, body: bytes, headers: httpx.Headers, url: str) -> None:
        err = classify_otlp(status, body, headers.get("retry-after"), url)
        if err is not None:
            raise err
        if not body:
            return
        if "json" in headers.get("content-type", ""):
            rejected, message = _json_partial(body)
        else:
            rejected, message = partial_rejected(body)
        if rejected > 0:
            with self._count:
                self.partial_rejected += rejected
            log.warning(
                "spool: %s refused %d spans of a batch (partial_success): %s",
                url,
                rejected,
                self.scrub(message),
            )


def _json_partial(body: bytes) -> tuple[int, str]:
    try:
        parsed = orjson.loads(body)
        part = parsed.get("partialSuccess") or parsed.get("partial_success") or {}
        rejected = int(part.get("rejectedSpans") or part.get("rejected_spans") or 0)
        if not 0 <= rejected < 1 << 63:  # not an int64 count: garbage
            return 0, ""
        return rejected, str(part.get("errorMessage") or "")
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError, OverflowError):
        return 0, ""


def _env_timeout(environ: Mapping[str, str] = os.environ) -> float | None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        raw = environ.get(name, "").strip()
        if raw:
            try:
                ms = float(raw)
            except ValueError:
                raise SpoolConfigError(f"{name}={raw!r} is not a number of milliseconds") from None
            return ms / 1000 if ms > 0 else None
    return None
