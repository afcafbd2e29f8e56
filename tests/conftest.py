"""Shared fixtures and helpers: a real receiver on 127.0.0.1, a real SGPSink pointed at it, a spool path in tmp_path;
`span` items, `store_items` (a file with rows and no sink), `poll` / `until` (wait on a condition, with a deadline)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spool import SGPSink, Spool, SpoolConfig
from spool.testing import Receiver

# Small, fast settings for tests: the semantics are the same, the waits are short.
FAST = SpoolConfig(
    backoff_initial=0.01,
    backoff_max=0.05,
    cooldown_max=0.5,
    flush_interval=0.2,
    commit_interval=0.001,
    request_timeout=5.0,
    lease_seconds=10.0,
    shutdown_timeout=2.0,
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's SPOOL_* / SGP_* / OTEL_* settings or state directory."""
    import os

    for var in list(os.environ):
        if var.startswith(("SPOOL_", "SGP_", "OTEL_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    logging.getLogger("httpx").setLevel(logging.WARNING)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests are `@pytest.mark.anyio` (pytest's anyio plugin, loaded with anyio), on asyncio."""
    return "asyncio"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


@pytest.fixture
def sink(receiver: Receiver) -> SGPSink:
    return SGPSink(api_key="test-key", account_id="test-account", base_url=receiver.url)


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "spans.db"


def poll(pred: Callable[[], object], timeout: float = 20.0) -> bool:
    """From a thread: True as soon as `pred()` is; False once `timeout` has passed (a deadline, never a wait)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return bool(pred())
        time.sleep(0.005)
    return True


async def until(pred: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    """On a loop: return as soon as `pred()` is true; AssertionError naming `what` once `timeout` has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def store_items(path: Path, items: list[dict[str, Any]], config: SpoolConfig = FAST) -> None:
    """Commit `items` into a spool file at `path` with no sink: rows waiting, nothing sent."""

    async def go() -> None:
        async with Spool(path, config=config) as sp:
            for item in items:
                sp.put(item)
            await sp.commit()

    asyncio.run(go())


class RecordingSleep:
    """An injectable `sleep` for `Spool(sleep=...)`: records each requested delay and yields without waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


def span(i: int, trace: str = "trace-1", *, end: bool = False, **extra: object) -> dict[str, object]:
    """A small valid span item; `end=True` makes it an end event."""
    item: dict[str, object] = {
        "trace_id": trace,
        "id": f"span-{i}",
        "name": f"step {i}",
        "start_timestamp": "2026-11-28T10:00:00+00:00",
        **extra,
    }
    if end:
        item["end_timestamp"] = "2026-11-28T10:00:01+00:00"
    return item


_CHILD_DEADLINE = 120.0  # a guard against a hang, far above the seconds a child needs


NOBODY = 65534


def in_fork(work: Callable[[], dict[str, Any]], *, unprivileged: bool = False) -> dict[str, Any]:
    """Run `work` in a forked child (`os.fork()`, as a preloading server does) and return what it returned; its
    exception's traceback fails the test, and so does a child that does not finish (it is killed).
    `unprivileged`: run as user nobody when the tests run as root (whom file permissions do not stop)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        os.close(r)
        try:
            if unprivileged and os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            out: dict[str, Any] = {"ok": work()}
        except BaseException:
            out = {"error": traceback.format_exc()}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + _CHILD_DEADLINE
    try:
        while (left := deadline - time.monotonic()) > 0:
            if select.select([r], [], [], left)[0]:
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        else:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the fork child did not finish within {_CHILD_DEADLINE:g} s")
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    result: dict[str, Any] = json.loads(b"".join(chunks))
    assert "error" not in result, result["error"]
    return result["ok"]  # type: ignore[no-any-return]


# The files of earlier span-spools, as their schemas made them (for the migration tests).
_DEAD_AND_META = """
CREATE TABLE dead (id INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, span_id TEXT NOT NULL, name TEXT,
    body BLOB NOT NULL, status INTEGER, detail TEXT, attempts INTEGER NOT NULL, enqueued_at REAL NOT NULL,
    failed_at REAL NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;
PRAGMA application_id = 1397772108;
"""
SCHEMA_1 = (
    """
CREATE TABLE spans (seq INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, span_id TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1, is_end INTEGER NOT NULL, body BLOB NOT NULL, enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_until REAL NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0, UNIQUE (trace_id, span_id));
CREATE INDEX spans_leased ON spans (lease_until) WHERE lease_until > 0;
CREATE INDEX spans_cooling ON spans (next_attempt_at) WHERE next_attempt_at > 0;
CREATE INDEX spans_attempted ON spans (attempts) WHERE attempts > 0;
"""
    + _DEAD_AND_META
    + "PRAGMA user_version = 1;"
)
SCHEMA_2 = (
    """
CREATE TABLE spans (seq INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, span_id TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1, is_end INTEGER NOT NULL, body BLOB NOT NULL, enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL DEFAULT 0, UNIQUE (trace_id, span_id));
CREATE INDEX spans_cooling ON spans (next_attempt_at) WHERE next_attempt_at > 0;
CREATE INDEX spans_attempted ON spans (attempts) WHERE attempts > 0;
CREATE TABLE leases (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    until REAL NOT NULL);
CREATE TABLE ended_keys (id INTEGER PRIMARY KEY, key INTEGER NOT NULL, at REAL NOT NULL);
CREATE INDEX ended_keys_key ON ended_keys (key);
"""
    + _DEAD_AND_META
    + "PRAGMA user_version = 2;"
)
