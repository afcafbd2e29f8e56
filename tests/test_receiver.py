"""The local SGP-compatible receiver: API rules, fault switches, lifecycle, control endpoints."""

from __future__ import annotations

import json
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import poll

from spool.testing import MAX_BATCH_ITEMS, Receiver

BATCH = "/v5/spans/batch"


def span(i: int = 0, *, trace: str = "t1", end: bool = False, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "trace_id": trace,
        "id": f"s{i}",
        "name": f"span {i}",
        "start_timestamp": "2025-01-01T00:00:00Z",
    }
    if end:
        item["end_timestamp"] = "2025-01-01T00:00:01Z"
    item.update(extra)
    return item


def put(client: httpx.Client, items: list[dict[str, Any]], **kw: Any) -> httpx.Response:
    return client.put(BATCH, json={"items": items}, **kw)


def status_or_error(url: str) -> int | str:
    """Status of one batch on a fresh connection, or the error's class name."""
    try:
        with httpx.Client(base_url=url, timeout=2) as c:
            return put(c, [span()]).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def client(receiver: Receiver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=receiver.url, timeout=10) as c:
        yield c


# -- upsert semantics ------------------------------------------------------------------------


def test_start_then_end_stores_the_end(receiver: Receiver, client: httpx.Client) -> None:
    first = put(client, [span(1)])
    assert first.status_code == 200
    assert first.json()["items"][0]["id"] == "s1"
    assert put(client, [span(1, end=True)]).status_code == 200

    stored = receiver.spans[("t1", "s1")]
    assert stored["end_timestamp"] == "2025-01-01T00:00:01Z"
    assert receiver.writes == 2
    assert len(receiver.spans) == 1
    assert receiver.ended == 1
    assert receiver.batches == [1, 1]
    assert receiver.received_ids == [("t1", "s1", False), ("t1", "s1", True)]
    assert receiver.wait_for(1, timeout=1, ended=True)


def test_end_then_start_keeps_the_end(receiver: Receiver, client: httpx.Client) -> None:
    assert put(client, [span(1, end=True, name="done")]).status_code == 200
    assert put(client, [span(1, name="late start")]).status_code == 200

    stored = receiver.spans[("t1", "s1")]
    assert stored["name"] == "done"
    assert "end_timestamp" in stored
    assert receiver.writes == 2
    assert receiver.ended == 1


def test_start_and_end_in_one_batch_in_either_order(receiver: Receiver, client: httpx.Client) -> None:
    assert put(client, [span(1), span(1, end=True), span(2, end=True), span(2)]).status_code == 200
    assert all("end_timestamp" in s for s in receiver.spans.values())
    assert receiver.ended == 2


def test_later_write_wins_otherwise(receiver: Receiver, client: httpx.Client) -> None:
    put(client, [span(1, name="a")])
    put(client, [span(1, name="b")])
    put(client, [span(2, end=True, name="c")])
    put(client, [span(2, end=True, name="d")])
    assert receiver.spans[("t1", "s1")]["name"] == "b"
    assert receiver.spans[("t1", "s2")]["name"] == "d"
    assert receiver.ended == 1


def test_spans_are_keyed_by_trace_and_id(receiver: Receiver, client: httpx.Client) -> None:
    assert put(client, [span(1, trace="a"), span(1, trace="b")]).status_code == 200
    assert set(receiver.spans) == {("a", "s1"), ("b", "s1")}


def test_wait_for_wakes_on_arrival_and_times_out(receiver: Receiver, client: httpx.Client) -> None:
    assert not receiver.wait_for(1, timeout=0.05)
    sender = threading.Thread(target=put, args=(client, [span(1), span(2, end=True)]))
    sender.start()
    try:
        assert receiver.wait_for(2, timeout=10)
        assert receiver.wait_for(1, timeout=10, ended=True)
        assert not receiver.wait_for(2, timeout=0.05, ended=True)
    finally:
        sender.join()


def test_reset_clears_state_and_counters(receiver: Receiver, client: httpx.Client) -> None:
    put(client, [span(1, end=True)])
    receiver.reset()
    assert receiver.spans == {}
    assert (receiver.writes, receiver.requests, receiver.connections, receiver.ended) == (0, 0, 0, 0)
    assert receiver.batches == []
    assert receiver.received_ids == []


def test_keys_only_mode_keeps_keys_and_end(client: httpx.Client) -> None:
    with Receiver(keep_items=False) as r, httpx.Client(base_url=r.url) as c:
        assert put(c, [span(1, metadata={"big": "x" * 100}), span(2, end=True)]).status_code == 200
        assert r.spans[("t1", "s1")] == {"trace_id": "t1", "id": "s1"}
        assert r.spans[("t1", "s2")]["end_timestamp"] == "2025-01-01T00:00:01Z"
        assert r.ended == 1


# -- validation ------------------------------------------------------------------------------


def test_more_than_1000_items_is_422(receiver: Receiver, client: httpx.Client) -> None:
    too_many = put(client, [span(i) for i in range(MAX_BATCH_ITEMS + 1)])
    assert too_many.status_code == 422
    assert "1000" in too_many.json()["detail"]
    assert put(client, [span(i) for i in range(MAX_BATCH_ITEMS)]).status_code == 200
    assert receiver.batches == [MAX_BATCH_ITEMS]
    assert receiver.requests == 2


def test_end_before_start_is_422_for_the_whole_batch(receiver: Receiver, client: httpx.Client) -> None:
    bad = span(2, start_timestamp="2025-01-02T00:00:00Z", end_timestamp="2025-01-01T00:00:00Z")
    resp = put(client, [span(1), bad])
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert "items[1]" in detail
    assert "end_timestamp" in detail
    assert receiver.spans == {}
    assert receiver.writes == 0


def test_timestamps_compare_as_datetimes_not_strings(client: httpx.Client) -> None:
    # 01:00+01:00 is 00:00Z, so an end at 00:30Z is after it (as strings it would sort before).
    item = span(1, start_timestamp="2025-01-01T01:00:00+01:00", end_timestamp="2025-01-01T00:30:00Z")
    assert put(client, [item]).status_code == 200
    item = span(2, start_timestamp="2025-01-01T00:30:00Z", end_timestamp="2025-01-01T01:00:00+01:00")
    assert put(client, [item]).status_code == 422


@pytest.mark.parametrize("key", ["trace_id", "id", "name", "start_timestamp"])
def test_missing_required_field_is_422(client: httpx.Client, key: str) -> None:
    item = span(1)
    del item[key]
    resp = put(client, [span(0), item])
    assert resp.status_code == 422
    assert f"items[1].{key}" in resp.json()["detail"]


@pytest.mark.parametrize("body", [b"{not json", b'{"spans": []}', b'{"items": {}}', b"[]", b'{"items": [1]}'])
def test_malformed_body_is_422(receiver: Receiver, client: httpx.Client, body: bytes) -> None:
    resp = client.put(BATCH, content=body)
    assert resp.status_code == 422
    assert resp.json()["detail"]
    assert receiver.requests == 1
    assert receiver.batches == []


def test_unparseable_timestamp_is_422(client: httpx.Client) -> None:
    resp = put(client, [span(1, start_timestamp="yesterday")])
    assert resp.status_code == 422
    assert "items[0].start_timestamp" in resp.json()["detail"]


def test_id_over_256_chars_is_422(client: httpx.Client) -> None:
    resp = put(client, [span(1, id="x" * 257)])
    assert resp.status_code == 422
    assert "items[0].id" in resp.json()["detail"]
    assert put(client, [span(1, id="x" * 256)]).status_code == 200


@pytest.mark.parametrize("key", ["id", "trace_id", "parent_id"])
def test_nul_byte_in_an_id_field_is_400(receiver: Receiver, client: httpx.Client, key: str) -> None:
    bad = span(1)
    bad[key] = "a\x00b"
    resp = put(client, [span(0), bad])
    assert resp.status_code == 400
    assert f"items[1].{key}" in resp.json()["detail"]
    assert "NUL" in resp.json()["detail"]
    assert receiver.spans == {}


def test_nul_byte_elsewhere_is_accepted(client: httpx.Client) -> None:
    assert put(client, [span(1, name="a\x00b")]).status_code == 200


def test_422_wins_over_400(client: httpx.Client) -> None:
    resp = put(client, [span(0, id="a\x00b"), span(1, start_timestamp="nope")])
    assert resp.status_code == 422


def test_missing_id_is_422_not_generated(receiver: Receiver, client: httpx.Client) -> None:
    item = span(1)
    del item["id"]
    assert put(client, [item]).status_code == 422
    assert receiver.spans == {}


def test_parent_in_another_trace_is_409(receiver: Receiver, client: httpx.Client) -> None:
    assert put(client, [span(1, trace="a")]).status_code == 200
    resp = put(client, [span(2, trace="b", parent_id="s1")])
    assert resp.status_code == 409
    assert "items[0].parent_id" in resp.json()["detail"]
    assert put(client, [span(2, trace="a", parent_id="s1")]).status_code == 200


def test_parent_cycle_in_a_batch_is_409(client: httpx.Client) -> None:
    resp = put(client, [span(1, parent_id="s2"), span(2, parent_id="s1")])
    assert resp.status_code == 409
    assert "cycle" in resp.json()["detail"]
    assert put(client, [span(3, parent_id="s3")]).status_code == 409
    assert put(client, [span(4), span(5, parent_id="s4"), span(6, parent_id="s5")]).status_code == 200


def test_reject_if_rejects_the_whole_batch(receiver: Receiver, client: httpx.Client) -> None:
    receiver.reject_if = lambda item: "poison span" if item["name"] == "bad" else None
    resp = put(client, [span(1), span(2, name="bad")])
    assert resp.status_code == 422
    assert resp.json()["detail"] == "items[1]: poison span"
    assert receiver.spans == {}
    receiver.reject_if = None
    assert put(client, [span(2, name="bad")]).status_code == 200


def test_a_failing_reject_if_is_a_500_and_service_goes_on(receiver: Receiver, client: httpx.Client) -> None:
    def broken(item: dict[str, Any]) -> str | None:
        raise KeyError("oops")

    receiver.reject_if = broken
    resp = put(client, [span(1)])
    assert resp.status_code == 500
    assert "oops" in resp.json()["detail"]
    receiver.reject_if = None
    assert put(client, [span(1)]).status_code == 200
    assert receiver.connections == 1


def test_max_body_bytes_is_413_and_the_connection_survives(receiver: Receiver, client: httpx.Client) -> None:
    receiver.max_body_bytes = 100
    resp = put(client, [span(1, name="x" * 200)])
    assert resp.status_code == 413
    assert "100" in resp.json()["detail"]
    receiver.max_body_bytes = None
    assert put(client, [span(1)]).status_code == 200
    assert receiver.connections == 1


def test_chunked_request_body(receiver: Receiver, client: httpx.Client) -> None:
    body = json.dumps({"items": [span(1), span(2)]}).encode()
    resp = client.put(BATCH, content=iter([body[:10], body[10:]]))
    assert resp.request.headers.get("transfer-encoding") == "chunked"
    assert resp.status_code == 200
    assert len(receiver.spans) == 2


def test_unknown_paths_and_methods(receiver: Receiver, client: httpx.Client) -> None:
    assert client.get(BATCH).status_code == 405
    assert client.post(BATCH, json={"items": []}).headers["allow"] == "PUT"
    assert client.put("/v5/spans", json={"items": []}).status_code == 404
    assert client.get("/_control").status_code == 405
    assert client.post("/_stats").status_code == 405
    assert receiver.requests == 2


def test_auth_401_missing_403_wrong() -> None:
    with Receiver(api_key="sekrit") as r, httpx.Client(base_url=r.url) as c:
        missing = put(c, [span(1)])
        assert missing.status_code == 401
        assert "x-api-key" in missing.json()["detail"]
        assert put(c, [span(1)], headers={"x-api-key": "wrong"}).status_code == 403
        assert r.spans == {}
        assert put(c, [span(1)], headers={"x-api-key": "sekrit"}).status_code == 200
        assert r.requests == 3
        assert r.writes == 1


# -- fault switches --------------------------------------------------------------------------


def test_fail_status_with_retry_after(receiver: Receiver, client: httpx.Client) -> None:
    receiver.fail_status = 503
    receiver.retry_after = 2
    resp = put(client, [span(1)])
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "2"
    assert resp.json() == {"detail": "injected fault"}
    receiver.fail_status, receiver.retry_after = 429, 0.25
    resp = put(client, [span(1)])
    assert (resp.status_code, resp.headers["retry-after"]) == (429, "0.25")
    receiver.retry_after = None
    assert "retry-after" not in put(client, [span(1)]).headers
    assert receiver.spans == {}
    assert receiver.requests == 3
    receiver.fail_status = None
    assert put(client, [span(1)]).status_code == 200


def test_fail_count_recovers(receiver: Receiver, client: httpx.Client) -> None:
    receiver.fail_status = 500
    receiver.fail_count = 2
    codes = [put(client, [span(i)]).status_code for i in range(4)]
    assert codes == [500, 500, 200, 200]
    assert receiver.fail_count == 0
    assert set(receiver.spans) == {("t1", "s2"), ("t1", "s3")}


def test_latency_delays_each_answer(receiver: Receiver, client: httpx.Client) -> None:
    receiver.latency = 0.2
    t0 = time.monotonic()
    assert put(client, [span(1)]).status_code == 200
    assert time.monotonic() - t0 >= 0.2


def test_keep_alive_reuses_one_connection(receiver: Receiver, client: httpx.Client) -> None:
    for i in range(20):
        assert put(client, [span(i)]).status_code == 200
    assert receiver.connections == 1
    assert receiver.requests == 20
    assert len(receiver.spans) == 20


def test_connection_close_is_honoured(receiver: Receiver) -> None:
    body = json.dumps({"items": [span(1)]}).encode()
    request = (
        b"PUT /v5/spans/batch HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(body)
    ) + body
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):  # ends at EOF: the server closed the connection
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close" in data.lower()
    assert receiver.writes == 1


def test_hang_then_stop_returns_promptly() -> None:
    outcome: list[object] = []
    r = Receiver().start()
    try:
        r.hang = True

        def send() -> None:
            try:
                with httpx.Client(base_url=r.url, timeout=30) as c:
                    outcome.append(put(c, [span(1)]).status_code)
            except httpx.HTTPError as exc:
                outcome.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        assert poll(lambda: r.requests == 1)
        assert sender.is_alive()
        t0 = time.monotonic()
        r.stop()
        assert time.monotonic() - t0 < 2
        sender.join(10)
        assert not sender.is_alive()
        assert len(outcome) == 1
        assert isinstance(outcome[0], httpx.HTTPError)  # never answered
        assert r.spans == {}
    finally:
        r.hang = False
        r.stop()


def test_clearing_hang_answers_held_requests(receiver: Receiver) -> None:
    codes: list[int] = []
    receiver.hang = True

    def send() -> None:
        with httpx.Client(base_url=receiver.url, timeout=30) as c:
            codes.append(put(c, [span(1)]).status_code)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert poll(lambda: receiver.requests == 1)
        assert not receiver.wait_for(1, timeout=0.1)
        assert codes == []
        receiver.hang = False
        sender.join(10)
        assert codes == [200]
        assert len(receiver.spans) == 1
    finally:
        receiver.hang = False
        sender.join(10)


def test_refuse_with_seconds_comes_back_on_the_same_port(receiver: Receiver, client: httpx.Client) -> None:
    assert put(client, [span(1)]).status_code == 200
    port = receiver.port
    receiver.refuse(2.0)
    assert status_or_error(receiver.url) == "ConnectError"
    assert poll(lambda: status_or_error(receiver.url) == 200, timeout=15)
    assert receiver.port == port
    # The keep-alive connection was closed by the refusal; the client reconnects.
    assert put(client, [span(2)]).status_code == 200
    assert receiver.connections >= 3


def test_refuse_closes_open_connections_and_resume_listens_again(receiver: Receiver) -> None:
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
        sock.sendall(b"GET /_stats HTTP/1.1\r\nhost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        receiver.refuse()
        assert sock.recv(65536) == b""  # EOF: the server closed the kept-alive connection
    assert status_or_error(receiver.url) == "ConnectError"
    receiver.resume()
    assert status_or_error(receiver.url) == 200
    receiver.resume()  # already listening: no-op
    assert status_or_error(receiver.url) == 200


def test_stop_is_idempotent_and_closes_connections() -> None:
    r = Receiver().start()
    with socket.create_connection(("127.0.0.1", r.port), timeout=10) as sock:
        sock.sendall(b"GET /_stats HTTP/1.1\r\nhost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        r.stop()
        assert sock.recv(65536) == b""
    r.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", r.port), timeout=10).close()


def test_start_after_stop_serves_again() -> None:
    r = Receiver()
    with r, httpx.Client(base_url=r.url) as c:
        assert put(c, [span(1)]).status_code == 200
    with r, httpx.Client(base_url=r.url) as c:
        assert put(c, [span(2)]).status_code == 200
    assert len(r.spans) == 2


def test_refuse_needs_a_running_receiver() -> None:
    with pytest.raises(RuntimeError):
        Receiver().refuse()


# -- out file, control, stats ----------------------------------------------------------------


def test_out_file_gets_one_line_per_accepted_item(tmp_path: Path) -> None:
    out = tmp_path / "spans.jsonl"
    out.write_text('{"earlier": true}\n')
    with Receiver(out=out) as r, httpx.Client(base_url=r.url) as c:
        assert put(c, [span(1), span(1, end=True)]).status_code == 200
        assert put(c, [span(2, end=True, start_timestamp="2026-01-01T00:00:00Z")]).status_code == 422
        assert put(c, [span(3)]).status_code == 200
        lines = out.read_text().splitlines()  # flushed per request, readable while running
    assert len(lines) == 4
    assert json.loads(lines[0]) == {"earlier": True}
    assert [json.loads(line) for line in lines[1:]] == [span(1), span(1, end=True), span(3)]


def test_control_and_stats_endpoints(receiver: Receiver, client: httpx.Client) -> None:
    zero = {"spans": 0, "ended": 0, "writes": 0, "requests": 0, "connections": 1, "batches": 0}
    assert client.get("/_stats").json() == zero

    settings = client.post("/_control", json={"fail_status": 503, "retry_after": 1}).json()
    assert settings["fail_status"] == 503
    assert receiver.fail_status == 503
    resp = put(client, [span(1)])
    assert (resp.status_code, resp.headers["retry-after"]) == (503, "1")

    client.post("/_control", json={"fail_status": None, "latency": 0.0, "max_body_bytes": 50})
    assert put(client, [span(1)]).status_code == 413
    client.post("/_control", json={"max_body_bytes": None, "fail_status": 500, "fail_count": 1})
    assert put(client, [span(1)]).status_code == 500
    assert put(client, [span(1, end=True)]).status_code == 200

    stats = client.get("/_stats").json()
    assert stats == {
        "spans": 1,
        "ended": 1,
        "writes": 1,
        "requests": 4,
        "connections": 1,
        "batches": 1,
    }
    assert client.post("/_control", json={"reset": True}).status_code == 200
    assert client.get("/_stats").json()["requests"] == 0
    assert receiver.spans == {}


@pytest.mark.parametrize(
    "body",
    [
        {"nope": 1},
        {"latency": -1},
        {"fail_status": "503"},
        {"fail_status": 99},
        {"hang": 1},
        {"refuse_seconds": 0},
        {"refuse_seconds": None},
        [],
    ],
)
def test_control_rejects_bad_settings(receiver: Receiver, client: httpx.Client, body: object) -> None:
    resp = client.post("/_control", json=body)
    assert resp.status_code == 422
    assert resp.json()["detail"]
    assert receiver.fail_status is None
    assert receiver.latency == 0


def test_control_hang_and_refuse_seconds(receiver: Receiver, client: httpx.Client) -> None:
    assert client.post("/_control", json={"hang": True}).json()["hang"] is True
    assert receiver.hang
    assert client.post("/_control", json={"hang": False}).json()["hang"] is False

    port = receiver.port
    assert client.post("/_control", json={"refuse_seconds": 2.0}).status_code == 200
    assert poll(lambda: status_or_error(receiver.url) == "ConnectError", timeout=5)
    assert poll(lambda: status_or_error(receiver.url) == 200, timeout=15)
    assert receiver.port == port


# -- the command ---------------------------------------------------------------------


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output from the receiver process"
    return proc.stdout.readline()


@pytest.mark.parametrize(("stop_signal", "extra"), [(signal.SIGTERM, []), (signal.SIGINT, ["--keys-only"])])
def test_the_command_serves_in_a_subprocess(tmp_path: Path, stop_signal: signal.Signals, extra: list[str]) -> None:
    """`spool receiver` (the benchmarks run it with --keys-only): first line the URL, quiet, exit 0 on a signal."""
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "spool", "receiver", "--port", "0", "--out", str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _read_line(proc, 30)
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:(\d+))\n", line)
        assert match, line
        url = match.group(1)
        with httpx.Client(base_url=url, timeout=10) as c:
            assert put(c, [span(1), span(2, end=True)]).status_code == 200
            assert c.get("/_stats").json()["spans"] == 2
        assert len(out.read_text().splitlines()) == 2
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        assert proc.stderr.read() == ""  # quiet: no per-request logging
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_start_failure_raises_and_leaves_nothing_running(tmp_path: Path) -> None:
    with Receiver() as r:
        taken = Receiver(port=r.port)
        with pytest.raises(OSError):
            taken.start()
        taken.stop()  # a no-op now
    with pytest.raises(OSError):
        Receiver(out=tmp_path / "missing" / "out.jsonl").start()
