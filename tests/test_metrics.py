"""`Spool.metrics()` counters and gauges against what really happened, and their OpenTelemetry instruments."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, span, until
from opentelemetry.metrics import CallbackOptions, NoOpMeter, Observation

from spool import SGPSink, Spool, otel
from spool.testing import Receiver

COUNTERS, GAUGES = set(otel.COUNTERS), set(otel.GAUGES)  # declared once (`spool._counters`)


def test_the_declared_counters_hold_the_documented_names() -> None:
    assert {"delivered", "retried", "rejected", "dead_lettered", "credentials_refused", "cooldowns", "requests"} <= (
        COUNTERS
    )
    assert {"partial_rejected", "store_errors"} <= COUNTERS
    assert {"pending", "inflight", "dead", "oldest_age_s", "db_bytes", "delivered_total", "dropped_total"} == GAUGES
    assert all(unit and description for unit, description in {**otel.COUNTERS, **otel.GAUGES}.values())


async def drop_one_commit(sp: Spool, items: list[dict[str, Any]]) -> None:
    """Make the next commit fail as on a full disk (SQLite's own SQLITE_FULL: no page may be added), then heal."""
    await sp.commit()
    db = sp._store._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    try:
        for item in items:
            sp.put(item)
        await sp.commit()
    finally:
        db.execute("PRAGMA max_page_count = 4294967294")


def test_counters_match_a_run_with_transient_failures_one_rejection_and_one_drop(
    receiver: Receiver, sink: SGPSink, spool_path: Path
) -> None:
    receiver.fail_status, receiver.fail_count = 503, 2
    receiver.reject_if = lambda item: "bad span" if item["id"] == "span-3" else None
    cfg = dataclasses.replace(FAST, max_inflight=1, batch_size=50)

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        async with Spool(spool_path, sink=sink, config=cfg) as sp:
            for i in range(10):
                sp.put(span(i))
            assert await sp.flush(timeout=20)
            # Padding bigger than a page, so the commit must grow the file and hits the page cap.
            await drop_one_commit(sp, [span(100 + i, metadata={"pad": "x" * 8000}) for i in range(3)])
            during = sp.metrics()
            sp.put(span(200))  # the next good commit also records the drop count on disk
            assert await sp.flush(timeout=20)
            after = sp.metrics()
        return during, after

    during, m = asyncio.run(go())
    faults = 2
    rejected_responses = receiver.requests - len(receiver.batches) - faults
    assert m["retried"] == faults
    assert m["rejected"] == rejected_responses >= 1  # the batch, then each half holding span-3, down to span-3 alone
    assert m["dead_lettered"] == 1
    assert m["delivered"] == 10 == receiver.writes  # 9 + span-200, each sent once
    assert m["requests"] == len(receiver.batches)
    assert m["credentials_refused"] == 0 and m["cooldowns"] == 0
    assert m["dropped"] == m["dropped_disk_error"] == 3 and m["dropped_overflow"] == 0
    # Gauges: the file.
    assert during["pending"] == 0 and during["dead"] == 1 and during["dropped_total"] == 3
    assert m["pending"] == 0 and m["dead"] == 1 and m["delivered_total"] == 10 and m["dropped_total"] == 3
    assert m["oldest_age_s"] is None and isinstance(m["db_bytes"], int) and m["db_bytes"] > 0


def test_credentials_and_cooldowns_are_counted(spool_path: Path) -> None:
    cfg = dataclasses.replace(FAST, max_attempts=2, max_inflight=1, shutdown_timeout=0)  # (close: no last flush)
    with Receiver(api_key="right") as rx:
        wrong = SGPSink(api_key="wrong", account_id="a", base_url=rx.url)

        async def refused() -> dict[str, Any]:
            async with Spool(spool_path, sink=wrong, config=cfg) as sp:
                sp.put(span(1))
                await until(lambda: sp.metrics(gauges=False)["credentials_refused"] >= 1, what="a 401")
                return sp.metrics(gauges=False)

        m = asyncio.run(refused())
        assert m["credentials_refused"] >= 1 and m["delivered"] == 0 and m["retried"] == 0

        rx.fail_status = 503  # every request, for good
        right = SGPSink(api_key="right", account_id="a", base_url=rx.url)

        async def down() -> dict[str, Any]:
            async with Spool(spool_path, sink=right, config=cfg) as sp:  # the row left behind drains at once
                await until(lambda: sp.metrics(gauges=False)["cooldowns"] >= 1, what="a round out of attempts")
                return sp.metrics(gauges=False)

        m = asyncio.run(down())
        assert m["cooldowns"] >= 1
        # max_attempts failed attempts per cooldown, and maybe one attempt of a round the timeout cut short
        assert 2 * m["cooldowns"] <= m["retried"] <= 2 * m["cooldowns"] + 1
        assert m["delivered"] == 0 and m["credentials_refused"] == 0


def test_metrics_keys_without_a_sink_and_after_close(spool_path: Path) -> None:
    async def go() -> tuple[dict[str, Any], dict[str, Any], Spool]:
        sp = Spool(spool_path, config=FAST)
        sp.put(span(1))
        await sp.commit()
        live = sp.metrics()
        await sp.aclose()
        return live, sp.metrics(), sp

    live, closed, _ = asyncio.run(go())
    counters = COUNTERS | {"dropped", *(f"dropped_{r}" for r in ("overflow", "disk_error", "memory", "redacted"))}
    assert set(live) == counters | GAUGES
    assert live["pending"] == 1 and all(live[k] == 0 for k in counters)
    assert set(closed) == counters  # no file to read any more: counters only, no exception


# -- OpenTelemetry ------------------------------------------------------------------------------------------------


class RecordingMeter(NoOpMeter):
    """The API's no-op meter, keeping the callbacks each observable instrument was created with."""

    def __init__(self) -> None:
        super().__init__("test")
        self.made: dict[str, tuple[str, Sequence[Callable[[CallbackOptions], Iterable[Observation]]]]] = {}

    def create_observable_counter(self, name: str, callbacks: Any = None, unit: str = "", description: str = "") -> Any:
        self.made[name] = ("counter", callbacks or [])
        return super().create_observable_counter(name, callbacks, unit, description)

    def create_observable_gauge(self, name: str, callbacks: Any = None, unit: str = "", description: str = "") -> Any:
        self.made[name] = ("gauge", callbacks or [])
        return super().create_observable_gauge(name, callbacks, unit, description)

    def observe(self, name: str) -> list[Observation]:
        return [o for cb in self.made[name][1] for o in cb(CallbackOptions())]


def test_instrument_registers_callbacks_that_report_the_metrics(
    receiver: Receiver, sink: SGPSink, spool_path: Path
) -> None:
    from spool.otel import instrument

    receiver.fail_status, receiver.fail_count = 503, 1
    meter = RecordingMeter()

    async def go() -> tuple[dict[str, Any], dict[str, list[Observation]], dict[str, list[Observation]]]:
        async with Spool(spool_path, sink=sink, config=FAST) as sp:
            made = instrument(sp, meter, max_age=0)
            assert len(made) == len(meter.made)
            for i in range(4):
                sp.put(span(i))
            sp.put(span(9, trace="trace-2"))
            await sp.commit()
            before = {name: meter.observe(name) for name in meter.made}
            assert await sp.flush(timeout=20)
            m = sp.metrics()
            after = {name: meter.observe(name) for name in meter.made}
        return m, before, after

    m, before, after = asyncio.run(go())
    attrs = {"spool.path": str(spool_path)}
    assert before["spool.pending"] == [Observation(5, attrs)]
    assert before["spool.oldest_age_s"][0].value >= 0
    assert after["spool.oldest_age_s"] == []  # nothing pending: no observation rather than a made-up 0
    for key in COUNTERS:
        assert meter.made[f"spool.{key}"][0] == "counter"
        assert after[f"spool.{key}"] == [Observation(m[key], attrs)]
    for key in GAUGES - {"oldest_age_s"}:
        assert meter.made[f"spool.{key}"][0] == "gauge"
        assert after[f"spool.{key}"] == [Observation(m[key], attrs)]
    assert after["spool.delivered"][0].value == 5 and after["spool.retried"][0].value == 1
    assert {o.attributes["reason"]: o.value for o in after["spool.dropped"]} == {
        "disk_error": 0,
        "memory": 0,
        "overflow": 0,
        "redacted": 0,
    }


def test_instrument_on_the_global_meter_and_import_spool_stays_free_of_opentelemetry(spool_path: Path) -> None:
    from spool.otel import instrument

    async def go() -> int:
        async with Spool(spool_path, config=FAST) as sp:
            return len(instrument(sp))

    assert asyncio.run(go()) == len(COUNTERS) + 1 + len(GAUGES)
    heavy = "{'opentelemetry', 'agents', 'openai'}"
    code = f"import sys, spool, spool.cli; sys.exit(bool({heavy} & {{m.split('.')[0] for m in sys.modules}}))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("max_age", [0.0, 60.0])
def test_callbacks_share_one_read_per_max_age(spool_path: Path, max_age: float) -> None:
    from spool.otel import instrument

    meter = RecordingMeter()

    async def go() -> tuple[int, int]:
        async with Spool(spool_path, config=FAST) as sp:
            instrument(sp, meter, max_age=max_age)
            first = meter.observe("spool.pending")[0].value
            sp.put(span(1))
            await sp.commit()
            return first, meter.observe("spool.pending")[0].value

    first, second = asyncio.run(go())
    assert first == 0
    assert second == (1 if max_age == 0 else 0)  # a cached snapshot within max_age
