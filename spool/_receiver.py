"""A local span receiver on 127.0.0.1: Scale GP's ``PUT /v5/spans/batch`` and OTLP/HTTP's ``POST /v1/traces``.

Public as `spool.testing.Receiver`; used by the test-suite, ``spool demo``, the benchmarks and the
``spool receiver`` command (its one command line). It serves HTTP/1.1 with keep-alive from an asyncio loop in one
daemon thread, applies the real API's validation and upsert rules (whole-batch 422/400/409/413
rejections, upsert by ``(trace_id, id)`` keeping a completed span over an in-progress one),
records what it took, and has fault switches for tests. OTLP requests (protobuf or JSON, answered in kind) go
through the same switches; their spans are stored as ``{"resource", "scope", "span"}`` in the OTLP JSON mapping
(what ``spool export`` writes for an ``otlp`` spool), keyed by hex ``(traceId, spanId)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import partial
from http import HTTPStatus
from types import TracebackType
from typing import IO, Any, TypeGuard

import orjson

from ._errors import MissingExtraError
from ._loopthread import LoopThread

__all__ = ["MAX_BATCH_ITEMS", "MAX_ID_CHARS", "Receiver"]

MAX_BATCH_ITEMS = 1000
"""More items than this in one request is a 422."""
MAX_ID_CHARS = 256
"""An ``id`` longer than this many characters is a 422 (over this many UTF-8 bytes: 400)."""

BATCH_PATH = "/v5/spans/batch"
OTLP_PATH = "/v1/traces"
CONTROL_PATH = "/_control"
STATS_PATH = "/_stats"

_REQUIRED = ("trace_id", "id", "name", "start_timestamp")
_ID_FIELDS = ("trace_id", "id", "parent_id", "group_id")
_OPTIONAL_STR = ("parent_id", "group_id")
_READ_LIMIT = 1 << 20


def otlp_out(out: str | os.PathLike[str]) -> str:
    """Where OTLP captures go when Scale GP spans go to `out` (one format per file, as `spool import` takes it):
    `spans.jsonl` -> `spans.otlp.jsonl`."""
    text = os.fspath(out)
    return (text[: -len(".jsonl")] if text.endswith(".jsonl") else text) + ".otlp.jsonl"


def _append_0600(path: str | os.PathLike[str]) -> IO[str]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # spans hold prompts
    return open(fd, "a", encoding="utf-8")


class _Reject(Exception):
    """A whole-request rejection: HTTP status and the ``detail`` text."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _parse_ts(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise _Reject(422, f"{where}: must be an ISO 8601 string")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise _Reject(422, f"{where}: not an ISO 8601 datetime: {value[:64]!r}") from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _bad_id_bytes(key: str, value: str) -> str | None:
    """Why an id field would be refused with 400 (NUL, invalid UTF-8, id over 256 bytes)."""
    if "\x00" in value:
        return "contains a NUL byte"
    if value.isascii():
        return None
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if key == "id" and size > MAX_ID_CHARS:
        return f"is {size} UTF-8 bytes, at most {MAX_ID_CHARS}"
    return None


def _looks_fine(item: object) -> bool:
    """Fast path: True only for an item that certainly passes ``_check_item``."""
    if type(item) is not dict:
        return False
    trace_id, span_id = item.get("trace_id"), item.get("id")
    start, end = item.get("start_timestamp"), item.get("end_timestamp")
    parent = item.get("parent_id")
    if not (
        type(trace_id) is str
        and type(span_id) is str
        and type(item.get("name")) is str
        and type(start) is str
        and len(span_id) <= MAX_ID_CHARS
        and trace_id.isascii()
        and span_id.isascii()
        and "\x00" not in trace_id
        and "\x00" not in span_id
        and (parent is None or (type(parent) is str and parent.isascii() and "\x00" not in parent))
        and "group_id" not in item
    ):
        return False
    try:
        start_ts = datetime.fromisoformat(start)
        if end is None:
            return True
        if type(end) is not str:
            return False
        end_ts = datetime.fromisoformat(end)
    except ValueError:
        return False
    return start_ts.tzinfo is not None and end_ts.tzinfo is not None and end_ts >= start_ts


def _check_item(i: int, item: object) -> str | None:
    """Check one item in detail: raise ``_Reject`` (422) naming the field, or return the detail
    of a 400 (bad bytes in an id field), or None if the item is fine."""
    if not isinstance(item, dict):
        raise _Reject(422, f"items[{i}]: must be an object")
    for key in _REQUIRED:
        value = item.get(key)
        if value is None:
            raise _Reject(422, f"items[{i}].{key}: field required")
        if not isinstance(value, str):
            raise _Reject(422, f"items[{i}].{key}: must be a string")
    for key in _OPTIONAL_STR:
        value = item.get(key)
        if value is not None and not isinstance(value, str):
            raise _Reject(422, f"items[{i}].{key}: must be a string")
    if len(item["id"]) > MAX_ID_CHARS:
        raise _Reject(422, f"items[{i}].id: at most {MAX_ID_CHARS} characters, got {len(item['id'])}")
    start = _parse_ts(item["start_timestamp"], f"items[{i}].start_timestamp")
    end_value = item.get("end_timestamp")
    if end_value is not None:
        end = _parse_ts(end_value, f"items[{i}].end_timestamp")
        if end < start:
            raise _Reject(422, f"items[{i}]: end_timestamp precedes start_timestamp")
    for key in _ID_FIELDS:
        value = item.get(key)
        if isinstance(value, str):
            why = _bad_id_bytes(key, value)
            if why is not None:
                return f"items[{i}].{key}: {why}"
    return None


def _check_batch(doc: object) -> list[dict[str, Any]]:
    """Validate a decoded request body as the real API does; raise ``_Reject`` on the first fault.

    Structure and values first (422), then id bytes (400); cycles and cross-trace parents
    are checked by the caller against stored spans (409).
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise _Reject(422, "body: must be a JSON object with an 'items' list")
    items: list[Any] = doc["items"]
    if len(items) > MAX_BATCH_ITEMS:
        raise _Reject(422, f"items: at most {MAX_BATCH_ITEMS} per batch, got {len(items)}")
    bad_bytes: str | None = None
    for i, item in enumerate(items):
        if not _looks_fine(item):
            why = _check_item(i, item)
            if bad_bytes is None:
                bad_bytes = why
    if bad_bytes is not None:
        raise _Reject(400, bad_bytes)
    return items


def _check_parents(items: list[dict[str, Any]], stored_trace_of: dict[str, str]) -> None:
    """409 for a parent in another trace (in the batch or stored) or a parent cycle in the batch."""
    for item in items:
        if item.get("parent_id"):
            break
    else:
        return
    batch_trace_of = {item["id"]: item["trace_id"] for item in items}
    parent_of: dict[tuple[str, str], str] = {}
    for i, item in enumerate(items):
        parent = item.get("parent_id")
        if not parent:
            continue
        trace = batch_trace_of.get(parent) or stored_trace_of.get(parent)
        if trace is not None and trace != item["trace_id"]:
            raise _Reject(409, f"items[{i}].parent_id: parent {parent!r} belongs to another trace")
        parent_of[(item["trace_id"], item["id"])] = parent
    done: set[tuple[str, str]] = set()
    for node in parent_of:
        path: set[tuple[str, str]] = set()
        cur: tuple[str, str] | None = node
        while cur is not None and cur in parent_of and cur not in done:
            if cur in path:
                raise _Reject(409, f"items: parent cycle through span {cur[1]!r}")
            path.add(cur)
            cur = (cur[0], parent_of[cur])
        done |= path


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


_Response = tuple[int, bytes, dict[str, str]]


class Receiver:
    """An SGP-compatible span receiver on ``host`` (127.0.0.1 by default) for tests and demos.

    ``start()`` binds (``port=0``: any free port) and serves from a daemon thread; ``stop()``
    closes the listener and every open connection. State properties are thread-safe reads;
    the fault switches may be set from any thread at any time. ``out`` appends each accepted
    item to a JSON-lines file. ``keep_items=False`` stores only ``trace_id``, ``id`` and
    ``end_timestamp`` per span (for benchmarks that push millions of spans).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        out: str | os.PathLike[str] | None = None,
        api_key: str | None = None,
        keep_items: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.out = out
        self.api_key = api_key
        self.keep_items = keep_items
        # Fault switches.
        self.fail_status: int | None = None
        self.retry_after: float | None = None
        self.fail_count: int | None = None
        self.latency: float = 0.0
        self.reject_if: Callable[[dict[str, Any]], str | None] | None = None
        self.max_body_bytes: int | None = None
        self.otlp_partial = False
        """OTLP: spans `reject_if` refuses are answered in a 200's `partial_success` (not stored) instead of a 400."""
        self._hang = False
        # Recorded state, guarded by _lock.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._spans: dict[tuple[str, str], dict[str, Any]] = {}
        self._trace_of: dict[str, str] = {}
        self._ended = 0
        self._writes = 0
        self._requests = 0
        self._batches: list[int] = []
        self._connections = 0
        self._received: list[tuple[str, str, bool]] = []
        # Lifecycle.
        self._life = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: LoopThread | None = None
        self._server: asyncio.Server | None = None
        self._generation = 0
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._unhang: asyncio.Event | None = None
        self._resume_at: asyncio.TimerHandle | None = None
        self._out_file: IO[str] | None = None
        self._otlp_out_file: IO[str] | None = None  # OTLP captures: `otlp_out(out)`, opened with the first

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Receiver:
        """Bind and serve from a daemon thread; returns self. ``OSError`` if it cannot bind."""
        with self._life:
            if self._loop is not None:
                return self
            self._runner = LoopThread("spool-receiver", exception_handler=_quiet_exception_handler).start()
            loop = self._loop = self._runner.loop
            try:
                if self.out is not None:
                    self._out_file = _append_0600(self.out)
                asyncio.run_coroutine_threadsafe(self._start_in_loop(), loop).result(10)
            except BaseException:
                self._teardown()
                raise
            return self

    def stop(self) -> None:
        """Close the listener and all connections (hung requests get no answer). Idempotent."""
        with self._life:
            loop = self._loop
            if loop is None:
                return
            if self._on_loop_thread():
                raise RuntimeError("Receiver.stop() called from the receiver's own thread")
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
            self._teardown()

    def _teardown(self) -> None:
        if self._runner is not None:
            self._runner.stop(10)
        self._loop = self._runner = None
        self._server = None
        for f in (self._out_file, self._otlp_out_file):
            if f is not None:
                f.close()
        self._out_file = self._otlp_out_file = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (what ``SGP_CLIENT_BASE_URL`` would be)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def refuse(self, seconds: float | None = None) -> None:
        """Close the listener and all connections, so new connections are refused.

        With ``seconds``, listen again on the same port after that long.
        """
        self._call(self._refuse_in_loop(seconds))

    def resume(self) -> None:
        """Listen again on the same port now (no-op when listening)."""
        self._call(self._resume_in_loop())

    # -- state -------------------------------------------------------------------------------

    @property
    def spans(self) -> dict[tuple[str, str], dict[str, Any]]:
        """A copy of the stored span per ``(trace_id, id)``, after upsert rules."""
        with self._lock:
            return dict(self._spans)

    @property
    def ended(self) -> int:
        """Stored spans that have an ``end_timestamp``."""
        with self._lock:
            return self._ended

    @property
    def writes(self) -> int:
        """Items accepted, over all accepted requests (repeats included)."""
        with self._lock:
            return self._writes

    @property
    def requests(self) -> int:
        """Requests received on ``/v5/spans/batch`` and ``/v1/traces``, whatever their outcome."""
        with self._lock:
            return self._requests

    @property
    def batches(self) -> list[int]:
        """Item count of each accepted request, in order."""
        with self._lock:
            return list(self._batches)

    @property
    def connections(self) -> int:
        """TCP connections accepted so far."""
        with self._lock:
            return self._connections

    @property
    def received_ids(self) -> list[tuple[str, str, bool]]:
        """``(trace_id, id, is_end)`` per accepted item, in arrival order."""
        with self._lock:
            return list(self._received)

    def stats(self) -> dict[str, int]:
        """What ``GET /_stats`` answers: spans, ended, writes, requests, connections, batches."""
        with self._lock:
            return {
                "spans": len(self._spans),
                "ended": self._ended,
                "writes": self._writes,
                "requests": self._requests,
                "connections": self._connections,
                "batches": len(self._batches),
            }

    def wait_for(self, n_spans: int, timeout: float = 10.0, *, ended: bool = False) -> bool:
        """Block until at least ``n_spans`` spans are stored (``ended``: with end_timestamp).

        Returns False if ``timeout`` passes first.
        """

        def enough() -> bool:
            return (self._ended if ended else len(self._spans)) >= n_spans

        with self._cond:
            return self._cond.wait_for(enough, timeout)

    def reset(self) -> None:
        """Forget stored spans and zero every counter (fault switches stay as they are)."""
        with self._lock:
            self._spans.clear()
            self._trace_of.clear()
            self._ended = self._writes = self._requests = self._connections = 0
            self._batches.clear()
            self._received.clear()

    # -- fault switches ----------------------------------------------------------------------

    @property
    def hang(self) -> bool:
        """When True, batch requests are read but not answered until cleared or ``stop()``."""
        return self._hang

    @hang.setter
    def hang(self, value: bool) -> None:
        self._hang = bool(value)
        loop, unhang = self._loop, self._unhang
        if value or loop is None or unhang is None:
            return
        if self._on_loop_thread():
            unhang.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(unhang.set)

    def _take_fault(self) -> int | None:
        with self._lock:
            status = self.fail_status
            if status is None:
                return None
            if self.fail_count is not None:
                if self.fail_count <= 0:
                    return None
                self.fail_count -= 1
            return status

    # -- loop side ---------------------------------------------------------------------------

    def _on_loop_thread(self) -> bool:
        return self._runner is not None and self._runner.on_thread()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("receiver is not running")
        if self._on_loop_thread():
            self._spawn(coro)
        else:
            asyncio.run_coroutine_threadsafe(coro, loop).result(10)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _start_in_loop(self) -> None:
        self._unhang = asyncio.Event()
        await self._listen()

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._generation += 1
        server = await asyncio.start_server(
            partial(self._serve_connection, self._generation),
            self.host,
            self.port,
            limit=_READ_LIMIT,
            reuse_address=True,
        )
        self._server = server
        self.port = server.sockets[0].getsockname()[1]

    async def _unlisten(self) -> None:
        server, self._server = self._server, None
        self._generation += 1
        if server is not None:
            server.close()
        me = asyncio.current_task()
        conns = [(t, w) for t, w in self._conns.items() if t is not me]
        for task, writer in conns:
            writer.close()
            task.cancel()
        if conns:
            await asyncio.gather(*(t for t, _ in conns), return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    def _cancel_resume(self) -> None:
        if self._resume_at is not None:
            self._resume_at.cancel()
            self._resume_at = None

    async def _refuse_in_loop(self, seconds: float | None) -> None:
        self._cancel_resume()
        await self._unlisten()
        if seconds is not None:
            loop = asyncio.get_running_loop()
            self._resume_at = loop.call_later(seconds, self._resume_later)

    def _resume_later(self) -> None:
        self._resume_at = None
        self._spawn(self._resume_retrying())

    async def _resume_retrying(self) -> None:
        try:
            await self._listen()
        except OSError:  # the port is briefly taken: try again shortly
            loop = asyncio.get_running_loop()
            self._resume_at = loop.call_later(0.05, self._resume_later)

    async def _resume_in_loop(self) -> None:
        self._cancel_resume()
        await self._listen()

    async def _shutdown(self) -> None:
        self._cancel_resume()
        await self._unlisten()
        tasks = [t for t in self._background if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- HTTP --------------------------------------------------------------------------------

    async def _serve_connection(
        self, generation: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if generation != self._generation or task is None:
            writer.close()
            return
        self._conns[task] = writer
        with self._lock:
            self._connections += 1
        try:
            await self._serve_requests(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            except asyncio.LimitOverrunError:
                _write(writer, 431, _json({"detail": "request header too large"}), {}, False)
                await writer.drain()
                return
            lines = head[:-4].lstrip(b"\r\n").split(b"\r\n")
            parts = lines[0].decode("latin-1").split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                _write(writer, 400, _json({"detail": "malformed request line"}), {}, False)
                await writer.drain()
                return
            method, target, version = parts
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
            connection = headers.get("connection", "").lower()
            keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                body = await _read_body(reader, headers)
            except ValueError as exc:
                _write(writer, 400, _json({"detail": str(exc)}), {}, False)
                await writer.drain()
                return
            path = target.split("?", 1)[0]
            after: Callable[[], None] | None = None
            try:
                if path == BATCH_PATH:
                    status, payload, extra = await self._batch(method, headers, body)
                elif path == OTLP_PATH:
                    status, payload, extra = await self._otlp(method, headers, body)
                elif path == CONTROL_PATH:
                    status, payload, extra, after = self._control(method, body)
                elif path == STATS_PATH:
                    status, payload, extra = _only(method, "GET") or (
                        200,
                        _json(self.stats()),
                        {},
                    )
                else:
                    status, payload, extra = 404, _json({"detail": "Not Found"}), {}
            except _Reject as rej:
                status, payload, extra = rej.status, _json({"detail": rej.detail}), {}
            except Exception as exc:  # e.g. a failing reject_if: answer, keep serving
                status, payload, extra = 500, _json({"detail": f"receiver error: {exc!r}"}), {}
            _write(writer, status, payload, extra, keep_alive)
            await writer.drain()
            if after is not None:
                after()
            if not keep_alive:
                return

    async def _gate(self, method: str, allowed: str, headers: dict[str, str], body: bytes) -> _Response | None:
        """What every span request goes through: the count, the method, latency, hang, the API key, an injected
        fault, the body limit. An answer to give instead of taking the spans, or None."""
        with self._lock:
            self._requests += 1
        not_allowed = _only(method, allowed)
        if not_allowed is not None:
            return not_allowed
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        unhang = self._unhang
        while self._hang and unhang is not None:
            unhang.clear()
            await unhang.wait()
        if self.api_key is not None:
            key = headers.get("x-api-key")
            if key is None:
                raise _Reject(401, "missing x-api-key header")
            if key != self.api_key:
                raise _Reject(403, "invalid API key")
        fault = self._take_fault()
        if fault is not None:
            extra: dict[str, str] = {}
            retry_after = self.retry_after
            if retry_after is not None:
                extra["retry-after"] = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
            return fault, _json({"detail": "injected fault"}), extra
        limit = self.max_body_bytes
        if limit is not None and len(body) > limit:
            raise _Reject(413, f"body: {len(body)} bytes, at most {limit}")
        return None

    async def _otlp(self, method: str, headers: dict[str, str], body: bytes) -> _Response:
        """``POST /v1/traces``: an OTLP/HTTP export request, protobuf or JSON (by Content-Type)."""
        refused = await self._gate(method, "POST", headers, body)
        if refused is not None:
            return refused
        try:
            from ._otlpcodec import request_rows, response_body
        except MissingExtraError as exc:  # 501: this receiver cannot take OTLP, and says what would make it
            raise _Reject(501, str(exc)) from None

        as_json = "json" in headers.get("content-type", "")
        kind = {"content-type": "application/json" if as_json else "application/x-protobuf"}
        try:
            spans = request_rows(body, as_json, keep=self.keep_items or self.reject_if is not None)
        except ValueError as exc:
            raise _Reject(400, str(exc)) from None
        rejected: list[str] = []
        reject_if = self.reject_if
        if reject_if is not None:
            kept = []
            for i, (trace_id, span_id, row) in enumerate(spans):
                why = reject_if(row or {})
                if why is None:
                    kept.append((trace_id, span_id, row))
                elif not self.otlp_partial:
                    raise _Reject(400, f"span {i} ({trace_id}/{span_id}): {why}")
                else:
                    rejected.append(why)
            spans = kept
        with self._cond:
            for trace_id, span_id, row in spans:
                self._received.append((trace_id, span_id, True))
                if (trace_id, span_id) not in self._spans:
                    self._ended += 1
                self._spans[(trace_id, span_id)] = row if self.keep_items and row is not None else {}
            self._writes += len(spans)
            self._batches.append(len(spans))
            self._cond.notify_all()
        if self.out is not None and spans:
            if self._otlp_out_file is None:
                self._otlp_out_file = _append_0600(otlp_out(self.out))
            self._otlp_out_file.write("".join(json.dumps(row) + "\n" for _, _, row in spans if row is not None))
            self._otlp_out_file.flush()
        return 200, response_body(len(rejected), "; ".join(rejected[:3]), as_json), kind

    async def _batch(self, method: str, headers: dict[str, str], body: bytes) -> _Response:
        refused = await self._gate(method, "PUT", headers, body)
        if refused is not None:
            return refused
        try:
            doc = orjson.loads(body)  # strict JSON in valid UTF-8: the same document json.loads gives, 3x faster
        except orjson.JSONDecodeError:
            try:  # NaN, bad bytes in an id (a 400, found below), or not JSON at all: the stdlib says which
                doc = json.loads(body.decode("utf-8", "surrogateescape"))
            except (ValueError, RecursionError) as exc:
                raise _Reject(422, f"body: invalid JSON: {exc}") from None
        items = _check_batch(doc)
        reject_if = self.reject_if
        if reject_if is not None:
            for i, item in enumerate(items):
                why = reject_if(item)
                if why is not None:
                    raise _Reject(422, f"items[{i}]: {why}")
        self._store(items)
        out = self._out_file
        if out is not None and items:
            out.write("".join(json.dumps(item) + "\n" for item in items))
            out.flush()
        return 200, body, {}

    def _store(self, items: list[dict[str, Any]]) -> None:
        with self._cond:
            _check_parents(items, self._trace_of)
            spans, trace_of, received = self._spans, self._trace_of, self._received
            for item in items:
                trace_id, span_id = item["trace_id"], item["id"]
                key = (trace_id, span_id)
                is_end = item.get("end_timestamp") is not None
                received.append((trace_id, span_id, is_end))
                prev = spans.get(key)
                if prev is not None:
                    prev_end = prev.get("end_timestamp") is not None
                    if prev_end and not is_end:
                        continue  # a completed span is kept over an in-progress one
                    if is_end and not prev_end:
                        self._ended += 1
                elif is_end:
                    self._ended += 1
                if not self.keep_items:
                    slim = {"trace_id": trace_id, "id": span_id}
                    if is_end:
                        slim["end_timestamp"] = item["end_timestamp"]
                    item = slim
                spans[key] = item
                trace_of[span_id] = trace_id
            self._writes += len(items)
            self._batches.append(len(items))
            self._cond.notify_all()

    def _control(self, method: str, body: bytes) -> tuple[int, bytes, dict[str, str], Callable[[], None] | None]:
        not_allowed = _only(method, "POST")
        if not_allowed is not None:
            return (*not_allowed, None)
        try:
            doc = json.loads(body or b"{}")
        except ValueError as exc:
            raise _Reject(422, f"body: invalid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise _Reject(422, "body: must be a JSON object")
        unknown = sorted(set(doc) - _CONTROL_KEYS.keys())
        if unknown:
            raise _Reject(422, f"unknown control keys: {', '.join(unknown)}")
        for key, value in doc.items():
            if not _CONTROL_KEYS[key](value):
                raise _Reject(422, f"{key}: invalid value {value!r}")
        for key in ("fail_status", "retry_after", "fail_count", "latency", "max_body_bytes"):
            if key in doc:
                setattr(self, key, doc[key])
        if "hang" in doc:
            self.hang = doc["hang"]
        if doc.get("reset"):
            self.reset()
        settings = {
            "fail_status": self.fail_status,
            "retry_after": self.retry_after,
            "fail_count": self.fail_count,
            "latency": self.latency,
            "hang": self.hang,
            "max_body_bytes": self.max_body_bytes,
        }
        after: Callable[[], None] | None = None
        seconds = doc.get("refuse_seconds")
        if seconds is not None:
            after = partial(self.refuse, float(seconds))
        return 200, _json(settings), {}, after


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> TypeGuard[float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and v >= 0


_CONTROL_KEYS: dict[str, Callable[[object], bool]] = {
    "fail_status": lambda v: v is None or (_is_int(v) and 100 <= v <= 599),
    "retry_after": lambda v: v is None or _is_num(v),
    "fail_count": lambda v: v is None or (_is_int(v) and v >= 0),
    "latency": _is_num,
    "hang": lambda v: isinstance(v, bool),
    "max_body_bytes": lambda v: v is None or (_is_int(v) and v >= 0),
    "refuse_seconds": lambda v: _is_num(v) and v > 0,
    "reset": lambda v: isinstance(v, bool),
}


def _only(method: str, allowed: str) -> _Response | None:
    if method == allowed:
        return None
    return 405, _json({"detail": "Method Not Allowed"}), {"allow": allowed}


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """The request body by Content-Length or chunked transfer coding; ValueError if malformed."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ValueError("malformed chunk size") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailer fields
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("malformed chunk")
    length = headers.get("content-length")
    if length is None:
        return b""
    try:
        n = int(length)
    except ValueError:
        raise ValueError("malformed Content-Length") from None
    if n < 0:
        raise ValueError("malformed Content-Length")
    return await reader.readexactly(n) if n else b""


def _write(
    writer: asyncio.StreamWriter,
    status: int,
    payload: bytes,
    extra: dict[str, str],
    keep_alive: bool,
) -> None:
    head = [f"HTTP/1.1 {status} {_reason(status)}", f"content-length: {len(payload)}"]
    if "content-type" not in extra:
        head.append("content-type: application/json")
    head.extend(f"{k}: {v}" for k, v in extra.items())
    if not keep_alive:
        head.append("connection: close")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if isinstance(context.get("exception"), ConnectionError | asyncio.CancelledError):
        return
    loop.default_exception_handler(context)
