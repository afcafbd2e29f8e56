"""`request_timeout` bounds the whole request: a real server on 127.0.0.1 that drips its answer a byte at a time
(each read returns in time, so a per-read timeout never fires) is cut off at the deadline."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace

import orjson
import pytest
from conftest import FAST, span

from spool import SGPSink, Spool, TransientError

_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"p" * 200 + b"\r\nContent-Length: 2\r\n\r\n{}"
)


class DripServer:
    """`PUT /v5/spans/batch` answered one byte every `every` seconds (the whole answer takes ~25 s), until `heal()`;
    then at once. Records, per dripped connection, how many bytes went out before the client hung up, and the span
    ids it took once healed. Its threads end with `stop()` or their connection."""

    def __init__(self, every: float = 0.1, *, cut: bool = False, late: int = 0) -> None:
        self.every = every
        self.cut = cut
        """Store each batch, then answer 200 with a body cut short (the connection closes mid-body)."""
        self.late = late
        """Store the first `late` batches, then hold the answer until the client gives up (after `request_timeout`);
        answer the rest at once."""
        self.sent_before_hangup: list[int] = []
        self.hung_up = threading.Event()
        self.ids: list[str] = []
        self._healed = threading.Event()
        self._stopped = threading.Event()
        if late:
            self._healed.set()  # after the late answers, answer at once
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def heal(self) -> None:
        self._healed.set()

    def stop(self) -> None:
        self._stopped.set()
        self._sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while not self._stopped.is_set():
                while b"\r\n\r\n" not in buf:
                    if not (chunk := conn.recv(65536)):
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                while len(buf) < length:
                    if not (chunk := conn.recv(65536)):
                        return
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                if self.cut or self.late > 0:
                    self.ids += [item["id"] for item in orjson.loads(body)["items"]]
                    if self.cut:
                        conn.sendall(
                            _ANSWER[: _ANSWER.index(b"\r\n\r\n") + 4].replace(b"Length: 2", b"Length: 99") + b"{"
                        )
                        return
                    self.late -= 1
                    while not self._stopped.wait(0.02):
                        if _closed_by_peer(conn):
                            self._hangup(0)
                            return
                if self._healed.is_set():
                    self.ids += [item["id"] for item in orjson.loads(body)["items"]]
                    conn.sendall(_ANSWER)
                    continue
                for i in range(len(_ANSWER)):
                    try:
                        conn.sendall(_ANSWER[i : i + 1])
                    except OSError:  # the client hung up
                        self._hangup(i)
                        return
                    if self._stopped.wait(self.every):
                        return
                    if _closed_by_peer(conn):
                        self._hangup(i + 1)
                        return

    def _hangup(self, sent: int) -> None:
        self.sent_before_hangup.append(sent)
        self.hung_up.set()


def _closed_by_peer(conn: socket.socket) -> bool:
    try:
        conn.setblocking(False)
        try:
            return conn.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        finally:
            conn.setblocking(True)
    except OSError:
        return True


@pytest.fixture
def drip() -> Iterator[DripServer]:
    server = DripServer()
    yield server
    server.stop()


def test_a_dripping_answer_is_cut_off_at_the_timeout(drip: DripServer) -> None:
    sink = SGPSink("k", "a", drip.url)
    with pytest.raises(TransientError, match=r"timed out after 0\.5s"):
        sink.send_blocking([b'{"id":"a"}'], timeout=0.5)
    sink.close()
    assert drip.hung_up.wait(30)
    # The client hung up after a few of the answer's ~250 bytes (a per-read timeout would have waited for all).
    assert drip.sent_before_hangup and drip.sent_before_hangup[0] < len(_ANSWER) // 2


def test_a_spool_against_a_dripping_server_fails_attempts_then_delivers_when_it_heals(
    drip: DripServer, spool_path: object
) -> None:
    cfg = replace(FAST, request_timeout=0.5, lease_seconds=5.0)

    async def main() -> tuple[bool, str | None, int, bool]:
        async with Spool(spool_path, sink=SGPSink("k", "a", drip.url), config=cfg) as sp:  # type: ignore[arg-type]
            for i in range(300):
                sp.put(span(i))
            stuck = await sp.flush(2.0)
            st = await sp.stats()
            retried = sp.metrics(gauges=False)["retried"]
            drip.heal()
            return stuck, st.last_error, int(retried or 0), await sp.flush(60)

    stuck, last_error, retried, flushed = asyncio.run(main())
    assert not stuck
    # The sink's deadline and the drainer's guard on the await fire together: either may be the one reported.
    assert last_error is not None and re.search(
        r"(timed out after |no answer within request_timeout \()0\.5s", last_error
    )
    assert retried >= 1
    assert flushed
    assert sorted(set(drip.ids)) == sorted(f"span-{i}" for i in range(300))
    assert all(n < len(_ANSWER) // 2 for n in drip.sent_before_hangup)


def test_a_200_cut_short_counts_as_delivered_and_is_not_sent_again(spool_path: object) -> None:
    """The server stored each batch and said 200, then the connection closed mid-body: the spans were taken (on main
    every attempt failed and was sent again: 2,700 duplicates for 500 spans)."""
    server = DripServer(cut=True)
    try:

        async def main() -> tuple[bool, int]:
            async with Spool(spool_path, sink=SGPSink("k", "a", server.url), config=FAST) as sp:  # type: ignore[arg-type]
                for i in range(500):
                    sp.put(span(i))
                return await sp.flush(60), (await sp.stats()).delivered_total

        flushed, delivered = asyncio.run(main())
    finally:
        server.stop()
    assert flushed and delivered == 500
    assert sorted(server.ids) == sorted(f"span-{i}" for i in range(500))  # each once


def test_an_answer_later_than_the_timeout_costs_one_resend_of_that_batch(spool_path: object) -> None:
    """The server stored the batch but answered after `request_timeout`: the attempt failed, so the batch is sent
    again (harmless: the server upserts by (trace_id, id)). Duplicates stay within one batch per such attempt."""
    server = DripServer(late=2)
    cfg = replace(FAST, request_timeout=0.5, batch_size=50)
    try:

        async def main() -> bool:
            async with Spool(spool_path, sink=SGPSink("k", "a", server.url), config=cfg) as sp:  # type: ignore[arg-type]
                for i in range(500):
                    sp.put(span(i))
                await sp.commit()
                return await sp.flush(60)

        flushed = asyncio.run(main())
    finally:
        server.stop()
    assert flushed
    assert set(server.ids) == {f"span-{i}" for i in range(500)}
    assert len(server.sent_before_hangup) == 2  # two attempts timed out after the server stored their batch
    assert 0 < len(server.ids) - 500 <= 2 * cfg.batch_size
