"""`spool serve`'s HTTP side: a bare ASGI app (run by uvicorn, the `serve` extra) in front of one `Spool`.

Endpoints: `POST /v1/traces` (OTLP/HTTP, protobuf or JSON, gzip) into an `otlp` file, `PUT /v5/spans/batch` (Scale GP)
into an `sgp` file, `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus' text format). A request is answered 2xx
only once its spans are committed to disk; spans the spool could not keep (the disk cap, memory, a failing disk) make
the request fail (429 / 503) so that the sender sends it again, and a request that comes while the file is at its cap
gets 429 at once. With a token, every request but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from ._counters import COUNTERS, GAUGES
from ._formats import FORMATS, format_named
from ._ingest import MAX_BODY, Parsed, TooLarge, inflate, otlp_rows, sgp_items
from ._otlpwire import field, varint
from ._spool import Spool

__all__ = ["RETRY_AFTER", "ServeApp"]

log = logging.getLogger("spool.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

RETRY_AFTER = 5
"""Seconds a sender is asked to wait (`Retry-After`) when the file is at its cap."""
_CAP_HOLD = 5.0  # after spans were refused at the cap, requests get 429 at once for this long


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}


class ServeApp:
    """The ASGI app. `ingest=False`: only the health, readiness and metrics endpoints (delivery still runs)."""

    def __init__(self, spool: Spool, *, token: str | None = None, ingest: bool = True) -> None:
        self.spool, self._token, self._ingest = spool, token, ingest
        self._fmt = format_named(spool.format)
        self._cap_until = 0.0
        self.stopping = False
        self.ingested = 0
        """Spans committed from requests (this process)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            status, body, headers = await self._route(scope, receive)
        except _Refused as exc:
            status, body, headers = exc.status, _error(exc.status, str(exc)), exc.headers
        await _respond(send, status, body, headers)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.spool.commit()  # binds the spool (writer, drainer) to this loop: delivery starts
                watcher = asyncio.get_running_loop().create_task(self._watch(), name="spool-serve-watch")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stopping = True
                watcher.cancel()
                log.info("spool serve: stopping; delivering for up to %gs", self.spool.config.shutdown_timeout)
                try:  # commit, deliver up to shutdown_timeout, keep the rest on disk
                    await self.spool.flush(self.spool.config.shutdown_timeout)
                    left = (await self.spool.stats()).pending
                    await self.spool.aclose(0)
                    log.info("spool serve: stopped; %d spans left in %s", left, self.spool.path)
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: Scope, receive: Receive) -> tuple[int, bytes, dict[str, str]]:
        path, method = scope["path"], scope["method"]
        if path == "/healthz":
            return 200, b'{"status":"ok"}', {"content-type": "application/json"}
        if path == "/readyz":
            return self._ready()
        self._authorize(scope)
        if path == "/metrics":
            return await self._metrics()
        fmt = next((f for f in FORMATS.values() if f.route[1] == path), None)
        if fmt is not None and self._ingest:
            if self.stopping:
                raise _Refused(503, "spool serve is stopping", {"retry-after": str(RETRY_AFTER)})
            if method != fmt.route[0]:
                raise _Refused(405, f"{path} takes {fmt.route[0]}", {"allow": fmt.route[0]})
            if fmt is not self._fmt:
                where = " ".join(self._fmt.route)
                raise _Refused(415, f"this spool holds {self._fmt.name} spans: send them to {where}")
            if time.monotonic() < self._cap_until:
                raise _Refused(429, "the spool is at its cap: send again later", {"retry-after": str(RETRY_AFTER)})
            headers = _headers(scope)
            try:
                body = inflate(await _read(receive, headers), headers.get("content-encoding"))
            except TooLarge as exc:
                raise _Refused(413, str(exc)) from None
            except ValueError as exc:
                raise _Refused(400, str(exc)) from None
            return await (self._sgp(body) if fmt.takes_items else self._otlp(body, headers))
        raise _Refused(404, f"no endpoint {method} {path}")

    def state(self) -> dict[str, object]:
        """What an operator is told about when it changes (`_watch`)."""
        m = self.spool.metrics(gauges=False)
        return {
            "delivered": m["delivered"],
            "retried": m["retried"],
            "paused": str(self.spool.blocked) if self.spool.blocked is not None else None,
            "cap": time.monotonic() < self._cap_until,
            "disk": self.spool.write_error,
        }

    async def _watch(self) -> None:
        """One log line per state change, never one per request: an outage began or ended, delivery paused on
        configuration or not, the cap reached or left, the disk failing or not."""
        before = self.state()
        failing = False
        while True:
            await asyncio.sleep(1.0)
            now = self.state()
            lines, failing = changes(before, now, failing)
            for line in lines:
                log.warning("spool serve: %s", line)
            before = now

    def _authorize(self, scope: Scope) -> None:
        if self._token is None:
            return
        given = _headers(scope).get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
            raise _Refused(401, "a bearer token is required (Authorization: Bearer)", {"www-authenticate": "Bearer"})

    async def _otlp(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        as_json = "json" in headers.get("content-type", "")
        try:
            parsed = otlp_rows(body, as_json, self.spool.config.max_item_bytes)
        except ValueError as exc:
            raise _Refused(400, str(exc)) from None

        def queue() -> int:
            self.spool.put_rows(parsed.rows)
            return len(parsed.rows)

        await self._commit(queue)
        answer = _otlp_answer(parsed, as_json)
        return 200, answer, {"content-type": "application/json" if as_json else "application/x-protobuf"}

    async def _sgp(self, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        try:
            items = sgp_items(body)
        except ValueError as exc:
            raise _Refused(422, str(exc)) from None
        refused, kept = Parsed(), []

        def queue() -> int:
            for i, item in enumerate(items):
                try:
                    self.spool.put(item)  # (validated here, as any put is: an item it refuses is named, others kept)
                except (TypeError, ValueError) as exc:
                    refused.reject(f"items[{i}]: {exc}")
                else:
                    kept.append(item)
            return len(kept)

        await self._commit(queue)
        if refused.rejected:
            n = len(kept)
            raise _Refused(422, f"{refused.message} ({n} other span{'' if n == 1 else 's'} of the request kept)")
        return 200, orjson.dumps({"items": kept}), {"content-type": "application/json"}

    async def _commit(self, queue: Callable[[], int]) -> None:
        """`queue()` a request's spans (it returns how many) and wait for their commit. Spans the spool dropped
        meanwhile (any request's: a drop is not tied to one) fail the request, so that its sender sends it again: 429
        at the cap or past `max_pending_bytes`, 503 on a failing disk."""
        before = self.spool.metrics(gauges=False)
        n = queue()
        await self.spool.commit()
        after = self.spool.metrics(gauges=False)
        if _grew(before, after, "dropped_disk_error"):
            raise _Refused(503, f"the spool could not commit: {self.spool.write_error}", {"retry-after": "1"})
        if _grew(before, after, "dropped_overflow") or _grew(before, after, "dropped_memory"):
            self._cap_until = time.monotonic() + _CAP_HOLD
            raise _Refused(429, "the spool is at its cap: send again later", {"retry-after": str(RETRY_AFTER)})
        self.ingested += n

    def _ready(self) -> tuple[int, bytes, dict[str, str]]:
        reasons = []
        if self.spool.write_error:
            reasons.append(f"the file is not writable: {self.spool.write_error}")
        if time.monotonic() < self._cap_until:
            reasons.append("the file is at its cap")
        if self.spool.blocked is not None:
            reasons.append(f"delivery is paused on configuration: {self.spool.blocked}")
        if self.stopping:
            reasons.append("stopping")
        body = orjson.dumps({"ready": not reasons, "reasons": reasons})
        return (503 if reasons else 200), body, {"content-type": "application/json"}

    async def _metrics(self) -> tuple[int, bytes, dict[str, str]]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        registry = _registry(self)
        data = await asyncio.to_thread(generate_latest, registry)  # (the gauges read the file)
        return 200, data, {"content-type": CONTENT_TYPE_LATEST}


def changes(before: dict[str, object], now: dict[str, object], failing: bool) -> tuple[list[str], bool]:
    """The state changes between two `ServeApp.state()` readings a second apart, as log lines, and whether delivery
    is failing now (requests retried and none delivered; a delivery ends it). I/O-free."""
    lines = []
    delivered = now["delivered"] != before["delivered"]
    retried = now["retried"] != before["retried"]
    if retried and not delivered and not failing:
        lines.append("delivery failing: the backend does not take spans (outage began); spans kept")
        failing = True
    elif delivered and failing:
        lines.append("delivery resumed (outage ended)")
        failing = False
    for key, on, off in (
        ("paused", "delivery paused on configuration: {}", "delivery no longer paused"),
        ("cap", "the spool is at its cap: requests get 429", "the spool is below its cap again"),
        ("disk", "the disk refuses commits: {}", "the disk takes commits again"),
    ):
        if bool(now[key]) != bool(before[key]):
            lines.append(on.format(now[key]) if now[key] else off)
    return lines, failing


def _grew(before: dict[str, Any], after: dict[str, Any], key: str) -> bool:
    return int(after.get(key) or 0) > int(before.get(key) or 0)


def _otlp_answer(parsed: Parsed, as_json: bool) -> bytes:
    """An `ExportTraceServiceResponse`, with a `partial_success` naming the spans refused (no dependency)."""
    if not parsed.rejected:
        return b"{}" if as_json else b""
    if as_json:
        part = {"rejectedSpans": str(parsed.rejected), "errorMessage": parsed.message}
        return orjson.dumps({"partialSuccess": part})
    inner = b"\x08" + varint(parsed.rejected) + field(2, parsed.message.encode())
    return field(1, inner)


def _registry(app: ServeApp) -> Any:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self) -> Any:
            m = app.spool.metrics()
            for key, (_, help_) in COUNTERS.items():
                yield CounterMetricFamily(f"spool_{key}", help_, value=float(m.get(key) or 0))
            dropped = CounterMetricFamily("spool_dropped", "Spans dropped (this process), by reason", labels=["reason"])
            for key, value in m.items():
                if key.startswith("dropped_") and key != "dropped_total":
                    dropped.add_metric([key.removeprefix("dropped_")], float(value or 0))
            yield dropped
            yield CounterMetricFamily("spool_serve_ingested_spans", "Spans committed from requests", value=app.ingested)
            for key, (_, help_) in GAUGES.items():  # (`delivered_total`: `spool_file_delivered`, no counter's clash)
                if m.get(key) is not None:
                    name = f"spool_file_{key.removesuffix('_total')}" if key.endswith("_total") else f"spool_{key}"
                    yield GaugeMetricFamily(name, help_, value=float(m[key] or 0))

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return registry


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


async def _read(receive: Receive, headers: dict[str, str]) -> bytes:
    """The request's body, refused (413) past `MAX_BODY` before it is all read."""
    try:
        if int(headers.get("content-length") or 0) > MAX_BODY:
            raise _Refused(413, f"the body is over {MAX_BODY >> 20} MiB")
    except ValueError:
        raise _Refused(400, "Content-Length is not a number") from None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Refused(400, "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _Refused(413, f"the body is over {MAX_BODY >> 20} MiB")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _error(status: int, message: str) -> bytes:
    return orjson.dumps({"detail": message, "status": status})


async def _respond(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(k.encode(), v.encode()) for k, v in {"content-type": "application/json", **headers}.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
