"""The lean HTTP/1.1 client behind `SGPSink` (`spool._http.Endpoint`), and the encoder's fast path.

Real sockets: the real receiver on 127.0.0.1, or a tiny asyncio server for answers the receiver never gives.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spool._items as items_mod
from spool._http import Endpoint, HttpProtocolError
from spool._items import encode_item
from spool._receiver import Receiver
from spool._sink import _proxied

BODY = b'{"items":[{"trace_id":"t","id":"s1","name":"n","start_timestamp":"2026-11-28T10:00:00+00:00"}]}'


def _endpoint(rx: Receiver, **kw: Any) -> Endpoint:
    return Endpoint(rx.url + "/v5/spans/batch", {"Content-Type": "application/json"}, **kw)


def test_requests_reuse_one_keep_alive_connection(receiver: Receiver) -> None:
    async def main() -> list[int]:
        ep = _endpoint(receiver)
        try:
            return [(await ep.request("PUT", BODY, timeout=5)).status for _ in range(5)]
        finally:
            await ep.aclose()

    assert asyncio.run(main()) == [200] * 5
    assert receiver.connections == 1
    assert receiver.writes == 5


def test_error_statuses_come_back_as_responses_with_headers(receiver: Receiver) -> None:
    receiver.fail_status, receiver.retry_after = 503, 7

    async def main() -> tuple[int, str | None, bytes]:
        ep = _endpoint(receiver)
        try:
            r = await ep.request("PUT", BODY, timeout=5)
            return r.status, r.headers.get("retry-after"), r.body
        finally:
            await ep.aclose()

    status, retry_after, body = asyncio.run(main())
    assert (status, retry_after) == (503, "7")
    assert orjson.loads(body) == {"detail": "injected fault"}


def test_a_connection_the_server_closed_while_idle_is_replaced(receiver: Receiver) -> None:
    async def main() -> list[int]:
        ep = _endpoint(receiver)
        try:
            first = await ep.request("PUT", BODY, timeout=5)
            await asyncio.to_thread(receiver.refuse)  # closes every connection
            await asyncio.to_thread(receiver.resume)
            second = await ep.request("PUT", BODY, timeout=5)
            return [first.status, second.status]
        finally:
            await ep.aclose()

    assert asyncio.run(main()) == [200, 200]
    assert receiver.connections == 2
    assert receiver.writes == 2


def test_timeout_raises_and_the_connection_is_not_reused(receiver: Receiver) -> None:
    async def main() -> int:
        ep = _endpoint(receiver)
        try:
            receiver.hang = True
            with pytest.raises(TimeoutError):
                await ep.request("PUT", BODY, timeout=0.2)
            receiver.hang = False
            return (await ep.request("PUT", BODY, timeout=5)).status
        finally:
            await ep.aclose()

    assert asyncio.run(main()) == 200
    assert receiver.connections == 2


def test_refused_connection_raises_oserror(receiver: Receiver) -> None:
    receiver.refuse()

    async def main() -> None:
        ep = _endpoint(receiver)
        try:
            await ep.request("PUT", BODY, timeout=5)
        finally:
            await ep.aclose()

    with pytest.raises(OSError):
        asyncio.run(main())


async def _serve_once(
    answer: bytes, *, keep_open: bool = False
) -> tuple[asyncio.Server, str, list[bytes], list[asyncio.Task[Any]]]:
    """A server that reads requests (headers + Content-Length body) and writes `answer` verbatim to each (only to
    the first unless `keep_open`), then closes."""
    seen: list[bytes] = []
    handlers: list[asyncio.Task[Any]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                lines = head.split(b"\r\n")
                length = next(int(v.split(b":")[1]) for v in lines if v.lower().startswith(b"content-length"))
                seen.append(head + await reader.readexactly(length))
                writer.write(answer)
                await writer.drain()
                if not keep_open:
                    break
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v5/spans/batch", seen, handlers


def _one(answer: bytes, *, keep_open: bool = False) -> tuple[int, bytes, bool, list[bytes]]:
    async def main() -> tuple[int, bytes, bool, list[bytes]]:
        server, url, seen, handlers = await _serve_once(answer, keep_open=keep_open)
        ep = Endpoint(url, {"X-Api-Key": "k"})
        try:
            r = await ep.request("PUT", b"{}", timeout=5)
            return r.status, r.body, bool(ep._idle), seen
        finally:
            await ep.aclose()
            server.close()
            await server.wait_closed()
            await asyncio.wait_for(asyncio.gather(*handlers), 5)  # each ends on the client's close

    return asyncio.run(main())


def test_chunked_response_is_read_whole_and_the_connection_kept() -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n"
    status, body, kept, seen = _one(answer, keep_open=True)
    assert (status, body, kept) == (200, b"hello world", True)
    assert seen[0].startswith(b"PUT /v5/spans/batch HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nX-Api-Key: k\r\nAccept-Encoding: identity\r\nContent-Length: 2\r\n\r\n{}" in seen[0]


def test_body_until_close_and_connection_close_are_not_kept() -> None:
    status, body, kept, _ = _one(b"HTTP/1.1 200 OK\r\n\r\nall of it")
    assert (status, body, kept) == (200, b"all of it", False)
    status, body, kept, _ = _one(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", keep_open=True)
    assert (status, body, kept) == (200, b"ok", False)


def test_interim_1xx_responses_are_skipped() -> None:
    status, body, _, _ = _one(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx")
    assert (status, body) == (201, b"x")


def test_garbage_answer_is_a_protocol_error() -> None:
    with pytest.raises(HttpProtocolError):
        _one(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_proxy_environment_sends_through_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert not _proxied("https://api.example.com/v5/spans/batch")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert _proxied("https://api.example.com/v5/spans/batch")
    assert not _proxied("http://127.0.0.1:9/v5/spans/batch")
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    assert not _proxied("https://api.example.com/v5/spans/batch")


# -- encode_item's fast path gives exactly what the checked path gives ------------------------------------------------

_ids = st.one_of(st.text(max_size=300), st.integers(), st.none(), st.just(""), st.just("a\x00b"), st.just("é" * 200))
_stamps = st.one_of(
    st.just("2026-11-28T10:00:00+00:00"),
    st.just("2026-11-28T09:59:59.5+00:00"),
    st.just("2026-11-28T10:00:00"),
    st.just("2026-11-28T12:00:00+02:00"),
    st.just("not a time"),
    st.just("2026-11-28T10:00:00\x00"),
    st.datetimes(min_value=datetime(2026, 11, 28), max_value=datetime(2026, 11, 29)),
    st.datetimes(min_value=datetime(2026, 11, 28), max_value=datetime(2026, 11, 29), timezones=st.just(UTC)),
    st.just(datetime(2026, 11, 28, 10, tzinfo=timezone(timedelta(hours=1, seconds=30)))),
    st.none(),
)


def _outcome(item: dict[str, Any]) -> object:
    """What encode_item does with `item`; a minted id (missing `id`) is taken out so two calls compare equal."""
    try:
        enc = encode_item(item, 4096)
    except (ValueError, TypeError) as exc:
        return ("error", type(exc), str(exc))
    if "id" in item:
        return ("ok", enc)
    doc = orjson.loads(enc.body)
    del doc["id"]
    return ("ok", enc.trace_id, enc.is_end, doc)


@settings(max_examples=400, deadline=None)
@given(
    trace_id=_ids,
    span_id=_ids,
    parent_id=_ids,
    name=st.one_of(st.text(max_size=20), st.none(), st.integers()),
    start=_stamps,
    end=_stamps,
    extra=st.dictionaries(
        st.sampled_from(["input", "metadata", "group_id", "status"]),
        st.one_of(st.text(max_size=5000), st.integers(), st.floats(), st.just({1: "x"}), st.just({"o": object()})),
        max_size=3,
    ),
)
def test_fast_path_matches_the_checked_path(
    trace_id: object,
    span_id: object,
    parent_id: object,
    name: object,
    start: object,
    end: object,
    extra: dict[str, Any],
) -> None:
    item: dict[str, Any] = {"trace_id": trace_id, "name": name, "start_timestamp": start, **extra}
    for key, value in (("id", span_id), ("parent_id", parent_id), ("end_timestamp", end)):
        if value is not None:
            item[key] = value
    fast = _outcome(item)
    saved = items_mod._fast
    items_mod._fast = lambda *a: None  # type: ignore[assignment]
    try:
        checked = _outcome(item)
    finally:
        items_mod._fast = saved
    assert fast == checked
