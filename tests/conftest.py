"""Shared fixtures: a real receiver on 127.0.0.1, a real SGPSink pointed at it, a spool path in tmp_path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from spool import SGPSink, SpoolConfig
from spool._receiver import Receiver

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
    """No test sees the developer's SPOOL_* / SGP_* settings or state directory."""
    import os

    for var in list(os.environ):
        if var.startswith(("SPOOL_", "SGP_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    logging.getLogger("httpx").setLevel(logging.WARNING)


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
