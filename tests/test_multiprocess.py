"""Several processes on one spool file: producers and drainers side by side, and a drainer killed mid-send.
Real processes (`subprocess`), each opening its own `Spool` on the same path; the real receiver."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, span

from spool import SGPSink, Spool
from spool._store import Store
from spool.testing import Receiver

pytestmark = pytest.mark.slow

PRODUCER = textwrap.dedent(
    """
    import asyncio, json, sys
    from spool import Spool, SpoolConfig

    async def main(path, k, n):
        sp = Spool(path, config=SpoolConfig(commit_interval=0.001))
        for i in range(n):
            sp.put({"trace_id": f"p{k}-t{i // 20}", "id": f"p{k}-s{i}", "name": "work",
                    "start_timestamp": "2026-11-28T10:00:00+00:00", "end_timestamp": "2026-11-28T10:00:01+00:00",
                    "metadata": {"pad": "x" * 200}})
            if i % 50 == 49:
                await asyncio.sleep(0)  # let the group commit run between puts, interleaved with the others
        await sp.commit()
        st = await sp.stats()
        metrics = sp.metrics(gauges=False)
        await sp.aclose()
        print(json.dumps({"last_error": st.last_error, "dropped": metrics.get("dropped", 0)}), flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    """
)

DRAINER = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from spool import SGPSink, Spool, SpoolConfig

    async def main(path, url, stop, lease, timeout):
        cfg = SpoolConfig(commit_interval=0.001, flush_interval=0.05, backoff_initial=0.01, backoff_max=0.05,
                          cooldown_max=0.5, lease_seconds=lease, request_timeout=timeout, shutdown_timeout=1)
        sink = SGPSink(api_key="k", account_id="a", base_url=url)
        async with Spool(path, sink=sink, config=cfg) as sp:
            print("ready", flush=True)
            while not os.path.exists(stop):
                await sp.flush(timeout=30)  # a short timeout would cancel sends mid-request
                await asyncio.sleep(0.01)
            print(json.dumps(sp.metrics(gauges=False)), flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])))
    """
)


def _spawn(script: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Children started by a test; any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=30)


def _finish(p: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err
    assert "Traceback" not in err and "database is locked" not in err, err
    return dict(json.loads(out.strip().splitlines()[-1]))


def _wait_line(p: subprocess.Popen[str], expected: str) -> None:
    assert p.stdout is not None
    line = p.stdout.readline().strip()
    assert line == expected, (line, p.stderr.read() if p.stderr and p.poll() is not None else "")


def test_three_producers_two_drainers_one_file(
    tmp_path: Path, receiver: Receiver, procs: list[subprocess.Popen[str]]
) -> None:
    path, stop = tmp_path / "spans.db", tmp_path / "stop"
    n, producers = 2000, 3
    drainers = [_spawn(DRAINER, path, receiver.url, stop, 10, 5) for _ in range(2)]
    procs.extend(drainers)
    makers = [_spawn(PRODUCER, path, k, n) for k in range(producers)]
    procs.extend(makers)
    for p in makers:
        result = _finish(p)
        assert result == {"last_error": None, "dropped": 0}  # SQLITE_BUSY never reached a producer
    assert receiver.wait_for(producers * n, timeout=60, ended=True)
    stop.touch()
    metrics = [_finish(p) for p in drainers]

    assert len(receiver.spans) == producers * n and receiver.ended == producers * n
    duplicates = receiver.writes - producers * n
    assert duplicates < 0.01 * producers * n, f"{duplicates} duplicate writes"
    assert sum(m["delivered"] for m in metrics) == producers * n  # each row deleted once, by one of them
    store = Store(path)
    try:
        st = store.stats()
    finally:
        store.close()
    assert (st.pending, st.dead, st.delivered_total, st.dropped_total) == (0, 0, producers * n, 0)


def test_drainer_killed_mid_send_loses_nothing(
    tmp_path: Path, receiver: Receiver, procs: list[subprocess.Popen[str]]
) -> None:
    path, stop = tmp_path / "spans.db", tmp_path / "stop"
    n = 120
    cfg = replace(FAST, lease_seconds=2.0, request_timeout=1.0, flush_interval=60.0, flush_trigger=1_000_000)

    async def fill() -> None:
        async with Spool(path, config=cfg) as sp:
            for i in range(n):
                sp.put(span(i, end=True))

    asyncio.run(fill())
    receiver.hang = True
    victim = _spawn(DRAINER, path, receiver.url, stop, 2.0, 1.0)
    procs.append(victim)
    _wait_line(victim, "ready")
    deadline = time.monotonic() + 30
    while receiver.requests < 1:  # its batch is on the wire, held by the receiver
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.005)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    receiver.refuse()  # drop the held request: what the victim sent must not count as delivered
    receiver.resume()
    receiver.hang = False

    store = Store(path)
    try:
        assert store.counts()[0] == n  # nothing lost with the process
    finally:
        store.close()

    async def survivor() -> None:
        sink = SGPSink(api_key="k", account_id="a", base_url=receiver.url)
        async with Spool(path, sink=sink, config=cfg) as sp:
            assert await sp.flush(timeout=20)  # after the victim's leases run out
            st = await sp.stats()
            assert (st.pending, st.delivered_total, st.dead) == (0, n, 0)

    asyncio.run(survivor())
    assert len(receiver.spans) == n and receiver.ended == n
    assert receiver.writes == n  # the killed drainer's batch never reached the store; nothing was sent twice
