"""Integrity under a fleet: real processes on one file and a real receiver. Dead owners' leases, live holders named,
clocks hours off (a child whose `time.time` is shifted), a filesystem that cannot tell its size, drops named,
hostile answers, and processes that open, put, commit and close in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, poll, span, store_items
from test_cli_broken import spool_cmd

from spool import SGPSink, Spool, SpoolConfig
from spool._store import Store
from spool.testing import Receiver

pytestmark = pytest.mark.slow

HOURS_2 = 7200.0

_CHILD = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    shift = float(os.environ.get("CLOCK_SHIFT", "0"))
    if shift:  # this process's wall clock only; the monotonic clock and every other process stay true
        _real = time.time
        time.time = lambda: _real() + shift
    from spool import SGPSink, Spool, SpoolConfig

    path, url, mode, n, cfg = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])

    def item(i, end=True):
        it = {"trace_id": "fleet", "id": f"c-{i}", "name": "child", "start_timestamp": "2026-11-28T10:00:00Z"}
        if end:
            it["end_timestamp"] = "2026-11-28T10:00:01Z"
        return it

    async def main():
        sink = SGPSink(api_key="k", account_id="a", base_url=url)
        sink.prepare()
        async with Spool(path, sink=sink, config=SpoolConfig(**cfg)) as sp:
            for i in range(n):
                sp.put(item(i))
            await sp.commit()
            if mode == "hold":  # until rows are leased (their request hangs), then wait to be killed
                while (await sp.stats()).inflight == 0:
                    await asyncio.sleep(0.01)
                print("held", flush=True)
                await asyncio.sleep(3600)
            elif mode == "cool":  # until a batch ran out of attempts and cooled down, then close
                while sp.metrics(gauges=False)["cooldowns"] == 0:
                    await asyncio.sleep(0.01)
            elif mode == "flush":
                print(json.dumps({"ok": await sp.flush(60)}), flush=True)
            elif mode == "drain":  # drain in the background until stdin closes
                print("ready", flush=True)
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())
    """
)


@contextlib.contextmanager
def child(
    path: Path, url: str, mode: str, n: int = 0, shift: float = 0.0, **cfg: Any
) -> Iterator[subprocess.Popen[str]]:
    """A process with its own `Spool` on `path` (see `_CHILD`), its wall clock `shift` seconds off; killed at the
    end of the block if it still runs."""
    env = {**os.environ, "CLOCK_SHIFT": str(shift)}
    args = [sys.executable, "-c", _CHILD, str(path), url, mode, str(n), json.dumps(cfg)]
    with subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def _cli_flush(path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return spool_cmd(
        "flush", "--path", path, *extra, env={"SGP_API_KEY": "k", "SGP_ACCOUNT_ID": "a", "SGP_CLIENT_BASE_URL": url}
    )


@pytest.mark.parametrize("shift", [0.0, HOURS_2], ids=["true-clock", "clock-2h-ahead"])
def test_a_flush_right_after_a_kill_delivers_what_the_dead_process_had_leased(spool_path: Path, shift: float) -> None:
    """The killed process held 100 of 300 spans in a request that never ended (its lease: 60 s, or 2 h + 60 s by a
    clock 2 h ahead). Its pid is gone, so its lease is void: `spool flush` delivers all 300 at once."""
    store_items(spool_path, [span(i, trace="backlog", end=True) for i in range(200)])
    with Receiver() as stuck, Receiver() as rx:
        stuck.hang = True
        with child(spool_path, stuck.url, "hold", 100, shift, batch_size=100, max_inflight=1) as proc:
            assert _line(proc) == "held"
            proc.kill()
            proc.wait()
        out = _cli_flush(spool_path, rx.url, "--timeout", "30")
        assert out.returncode == 0, out.stdout + out.stderr
        assert len(rx.spans) == 300 and "nothing pending" in out.stdout
        stuck.hang = False


def test_spool_flush_names_the_live_process_that_holds_spans(spool_path: Path) -> None:
    with Receiver() as stuck, Receiver() as rx:
        stuck.hang = True
        with child(spool_path, stuck.url, "hold", 100, batch_size=100, max_inflight=1) as proc:
            assert _line(proc) == "held"
            out = _cli_flush(spool_path, rx.url, "--timeout", "2")
            assert out.returncode == 1, out.stdout + out.stderr
            assert f"100 spans leased by pid {proc.pid} on {socket.gethostname()} until " in out.stdout
            js = _cli_flush(spool_path, rx.url, "--timeout", "0", "--json")
            held = json.loads(js.stdout)["leased"]
            assert [(h["pid"], h["spans"]) for h in held] == [(proc.pid, 100)]
        assert len(rx.spans) == 0  # the live holder's spans stayed its own
        stuck.hang = False


def test_a_process_2h_ahead_does_not_wipe_the_record_of_delivered_ends(
    spool_path: Path, receiver: Receiver, sink: SGPSink
) -> None:
    """Ends delivered by a true clock are remembered though a process 2 h ahead delivers beside them: their late
    starts are not stored, so never sent after their ends."""

    async def deliver(items: list[dict[str, object]]) -> int:
        async with Spool(spool_path, sink=sink, config=FAST) as sp:
            for item in items:
                sp.put(item)
            assert await sp.flush(30)
            return (await sp.stats()).pending

    asyncio.run(deliver([span(i, end=True) for i in range(100)]))
    with child(spool_path, receiver.url, "flush", 10, HOURS_2) as proc:
        assert json.loads(_line(proc)) == {"ok": True}
    assert len(receiver.spans) == 110
    asyncio.run(deliver([span(i) for i in range(100)]))  # the late starts
    late = [r for r in receiver.received_ids[110:] if r[0] == "trace-1"]
    assert late == []  # none was stored, none was sent after its end


def test_a_drainer_2h_behind_keeps_its_batches(spool_path: Path) -> None:
    """Its leases look expired to a true drainer beside it; they stay its own while it works on them, so the two
    send each span about once (at most the batches in flight twice), not every batch twice."""
    n = 3000
    store_items(spool_path, [span(i, end=True) for i in range(n)])
    cfg = {"batch_size": 50, "max_inflight": 2, "shutdown_timeout": 0.0}
    with Receiver() as rx:
        rx.latency = 0.2  # both drainers at work for seconds
        with child(spool_path, rx.url, "drain", 0, -HOURS_2, **cfg) as proc:
            assert _line(proc) == "ready"

            async def drain() -> None:
                sink = SGPSink(api_key="k", account_id="a", base_url=rx.url)
                async with Spool(spool_path, sink=sink, config=SpoolConfig(**cfg)) as sp:
                    await sp.flush(60)

            asyncio.run(drain())
            assert poll(lambda: len(rx.spans) == n, 60)
        assert rx.writes - n <= 2 * 2 * 50, f"{rx.writes - n} duplicates"


def test_rows_cooled_down_by_a_clock_2h_ahead_are_not_stuck(spool_path: Path) -> None:
    with Receiver() as down, Receiver() as rx:
        down.fail_status, down.fail_count = 503, 10**6
        cfg = {"max_attempts": 1, "backoff_initial": 0.01, "shutdown_timeout": 0.0}
        with child(spool_path, down.url, "cool", 20, HOURS_2, **cfg) as proc:
            assert proc.wait(60) == 0
        store = Store(spool_path, create=False)
        try:
            assert store.counts()[0] == 20  # kept, cooling down until 2 h from now by this clock
        finally:
            store.close()

        async def drain() -> bool:  # the background drainer alone, which honours cool-downs (no flush, no last one)
            sink = SGPSink(api_key="k", account_id="a", base_url=rx.url)
            async with Spool(spool_path, sink=sink, config=replace(FAST, shutdown_timeout=0.0)):
                return await asyncio.get_running_loop().run_in_executor(None, rx.wait_for, 20, 30.0)

        assert asyncio.run(drain()) and len(rx.spans) == 20


_ZERO_BLOCKS = textwrap.dedent(
    """
    import asyncio, json, os, sys
    real = os.statvfs
    def statvfs(path):  # what FUSE and some network filesystems report: no size at all
        st = real(path)
        return os.statvfs_result((st.f_bsize, st.f_frsize, 0, 0, 0, 0, 0, 0, st.f_flag, st.f_namemax))
    os.statvfs = statvfs
    from spool import Spool, SpoolConfig

    async def main():
        async with Spool(sys.argv[1], config=SpoolConfig(max_bytes=64 << 20)) as sp:
            for i in range(100):
                sp.put({"trace_id": "t", "id": f"s-{i}", "name": "n", "start_timestamp": "2026-11-28T10:00:00Z"})
            await sp.commit()
            st = await sp.stats()
        print(json.dumps({"pending": st.pending, "dropped": st.dropped_total, "last_error": st.last_error}))

    asyncio.run(main())
    """
)


def test_a_filesystem_that_reports_no_blocks_has_no_free_space_cap(spool_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _ZERO_BLOCKS, str(spool_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"pending": 100, "dropped": 0, "last_error": None}


@pytest.mark.anyio
async def test_spans_dropped_at_the_disk_cap_are_named_in_last_error(spool_path: Path) -> None:
    cfg = SpoolConfig(max_bytes=256 * 1024, commit_interval=0.001)
    async with Spool(spool_path, config=cfg) as sp:
        for i in range(3000):
            sp.put(span(i, pad="x" * 200))
        await sp.commit()
        st = await sp.stats()
    assert st.dropped_total > 0
    assert st.last_error is not None and "spans dropped" in st.last_error and "max_bytes=262144" in st.last_error


class _Flood:
    """A hostile server: answers every request with `status` and a body of `size` bytes, sent as fast as the client
    reads it (stops when the client hangs up)."""

    def __init__(self, status: int, size: int) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._status, self._size = status, size
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self._sock.accept()
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(65536)
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = head.split(b"\r\n\r\n", 1)[1]
                while len(body) < length:
                    body += conn.recv(65536)
                conn.sendall(f"HTTP/1.1 {self._status} X\r\nContent-Length: {self._size}\r\n\r\n".encode())
                chunk = b"0" * (1 << 20)
                for _ in range(self._size >> 20):
                    conn.sendall(chunk)

    def close(self) -> None:
        self._sock.close()
        self._thread.join(30)


_SEND = textwrap.dedent(
    """
    import json, sys
    from spool import DeliveryError, SGPSink
    sink = SGPSink(api_key="k", account_id="a", base_url=sys.argv[1])
    item = b'{"trace_id":"t","id":"s","name":"n","start_timestamp":"2026-11-28T10:00:00Z"}'
    try:
        sink.send_blocking([item], timeout=60)
        outcome = "delivered"
    except DeliveryError as exc:
        outcome = f"{type(exc).__name__}: {str(exc)[:80]}"
    hwm = [x for x in open("/proc/self/status") if x.startswith("VmHWM")][0].split()[1]  # (not carried over exec)
    print(json.dumps({"outcome": outcome, "peak_mb": int(hwm) / 1024}))
    """
)


@pytest.mark.parametrize(("status", "outcome"), [(200, "delivered"), (500, "TransientError: HTTP 500: 000")])
def test_a_400_mb_answer_is_not_read_into_memory(status: int, outcome: str) -> None:
    flood = _Flood(status, 400 << 20)
    try:
        out = subprocess.run([sys.executable, "-c", _SEND, flood.url], capture_output=True, text=True, timeout=120)
    finally:
        flood.close()
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["outcome"].startswith(outcome)
    assert result["peak_mb"] < 300, result


CHURN = Path(__file__).resolve().parent.parent / "scripts" / "churn.py"


def test_processes_that_open_put_commit_and_close_in_a_loop_lose_nothing() -> None:
    """`scripts/churn.py`, briefly: 6 processes open, put 20 spans, commit and close in a loop beside a long-lived
    drainer on one file; every span whose `commit()` returned reaches the receiver."""
    out = subprocess.run(
        [sys.executable, str(CHURN), "--seconds", "15", "--procs", "6"], capture_output=True, text=True, timeout=110
    )
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["acked"] >= 200 and summary["lost"] == 0 and summary["flushed"]  # (~1,000 here, ~500 under load)


def test_a_lease_past_its_time_whose_process_still_runs_says_so() -> None:
    import time

    from spool.cli._flush import leased_line

    held = {"host": "web-1", "pid": 4242, "spans": 100, "until": 1000.0}
    until = time.strftime("%H:%M:%S", time.localtime(1000.0))
    assert leased_line(held, now=999.0) == f"100 spans leased by pid 4242 on web-1 until {until}"
    assert leased_line(held, now=1001.0).startswith(f"100 spans leased by pid 4242 on web-1 until {until} (past, ")
