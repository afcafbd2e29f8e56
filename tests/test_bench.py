"""Smoke test of the benchmark script: `scripts/bench.py --quick` runs end to end and reports every figure.

Shape only (keys present, numbers positive, targets carried in the table): never a timing assertion.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


def _positive(doc: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = doc[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value) and value > 0, (key, value)


@pytest.mark.timeout(300)
def test_quick_run_reports_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    png = tmp_path / "bench.png"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out), "--plot", str(png)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| figure | ours | against | ratio / target |" in proc.stdout
    res = json.loads(out.read_text())
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert res["quick"] is True
    assert res["machine"]["nproc"] >= 1 and res["machine"]["python"]

    hot = res["hot"]
    for name in ("asyncio.Queue.put_nowait", "SDK TraceQueueManager.enqueue", "Spool.put"):
        _positive(hot["methods"][name], "p50_us", "p99_us", "p999_us")
        assert hot["methods"][name]["p50_us"] <= hot["methods"][name]["p99_us"] <= hot["methods"][name]["p999_us"]
    _positive(hot["methods"]["SpoolTracingProcessor.on_span_end"], "p50_us", "p99_us")
    _positive(hot["ratios"], "put_p50_vs_put_nowait", "put_p50_vs_tqm_enqueue", "on_span_end_p50_vs_agentex_enqueue")
    assert hot["processor_dropped"] == 0

    _positive(res["append"], "spool_puts_per_s", "raw_executemany_rows_per_s", "ratio")

    delivery = res["delivery"]
    _positive(delivery["spool"], "spans_per_s", "cpu_us_per_span")
    _positive(delivery["sdk_upsert_batch"], "spans_per_s", "cpu_us_per_span")
    _positive(delivery, "cpu_ratio", "throughput_ratio")

    for run in ("max_rate", "paced_20k", "max_rate_inflight4"):
        e2e = res["e2e"][run]
        assert e2e["ok"] is True
        _positive(e2e, "spans_per_s", "client_cpu_us_per_span", "peak_backlog")
        assert e2e["backlog_series"][-1][1] == 0  # everything delivered and deleted at the end

    replay = res["replay"]
    assert replay["latency_s"] == 0.15 and len(replay["runs"]) >= 2
    for run in replay["runs"]:
        _positive(run, "delivered", "spans_per_s", "bound_spans_per_s", "of_bound")
        assert run["bound_spans_per_s"] == pytest.approx(run["max_inflight"] * run["batch_size"] / 0.15)
    assert any(run["batch_size"] > 50 and run["drained"] for run in replay["runs"])

    lag = res["lag"]
    for mode in ("idle", "spool", "sdk"):
        assert lag["p99_ms"][mode] >= 0
    assert lag["processor_dropped"] == 0

    memory = res["memory"]  # from scripts/backlog_rss.py
    assert memory["backlog_pending"] == memory["spans"] == memory["drained_delivered_total"]
    assert memory["drained"] is True and memory["drained_pending"] == 0
    _positive(memory, "backlog_rss_mb", "backlog_db_bytes", "drained_db_bytes", "closed_db_bytes")

    for kind in ("prompt50k", "chatbot"):
        load = res["agents"][kind]
        assert load["spool"]["drained"] is True
        _positive(
            load["spool"],
            "rss_peak",
            "median_rss_draining",
            "peak_backlog",
            "peak_db_bytes",
            "disk_bytes_per_span",
            "json_bytes_per_span",
        )
        _positive(load["in_memory_queue"], "rss_peak")
        _positive(load, "peak_rss_ratio")

    serve = res["serve"]
    _positive(serve, "ingest_spans_per_s", "inproc_spans_per_s", "ack_p99_ms", "rss_backlog_mb", "baseline_spans_per_s")
    assert serve["paced_requests"] > 0 and serve["pending_1s_after"] >= 0

    figures = {row["figure"] for row in res["table"]}
    assert {"append: committed puts/s", "delivery: client CPU per span", "e2e: put -> delivered -> deleted"} <= figures
    assert all(("ok" in r["target"] or "MISS" in r["target"]) for r in res["table"] if "<=" in r["target"])
