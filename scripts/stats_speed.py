"""Measure `spool stats --json` on a 1M-row spool (target: <= 300 ms wall), and what the file costs to build.

    uv run python scripts/stats_speed.py                 # build 1M rows in a temp dir, time, delete
    uv run python scripts/stats_speed.py --path big.db   # build once (or reuse big.db), keep it

Rows are ~1 KB spans, 10 per trace, built with `Store.append` in chunks of 50k; 1% have failed attempts.
Each timing is a fresh subprocess, so it includes interpreter start-up and imports, as an operator sees it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spool._config import SpoolConfig
from spool._items import Encoded
from spool._store import Store

CHUNK = 50_000


def build(path: Path, rows: int) -> float:
    """Create a spool of `rows` ~1 KB rows; returns the seconds it took."""
    t0 = time.perf_counter()
    store = Store(path, SpoolConfig(max_bytes=64 * 1024**3))
    pad = "x" * 900
    try:
        for start in range(0, rows, CHUNK):
            batch = []
            for i in range(start, min(rows, start + CHUNK)):
                trace, sid = f"trace-{i // 10:07d}", f"span-{i:08d}"
                body = (
                    f'{{"trace_id":"{trace}","id":"{sid}","name":"step {i}",'
                    f'"start_timestamp":"2026-11-28T10:00:00+00:00","metadata":{{"pad":"{pad}"}}}}'
                ).encode()
                batch.append(Encoded(trace, sid, False, body))
            store.append(batch)
        # 1% of rows with failed attempts, spread over the buckets; one trace with a larger backlog.
        with store._tx() as db:
            db.execute("UPDATE spans SET attempts = 1 + (seq / 100) % 5 WHERE seq % 100 = 0")
            db.executemany(
                "INSERT INTO spans (trace_id, span_id, is_end, body, enqueued_at) VALUES ('hot-trace', ?, 0, ?, ?)",
                [(f"hot-{i}", b'{"trace_id":"hot-trace"}', time.time()) for i in range(50)],
            )
    finally:
        store.close()
    return time.perf_counter() - t0


def timed(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t0)
    return out


def report(label: str, samples: list[float]) -> None:
    ms = sorted(s * 1000 for s in samples)
    print(f"{label:<48} min {ms[0]:7.1f} ms   median {statistics.median(ms):7.1f} ms   max {ms[-1]:7.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--path", type=Path, default=None, help="build here (reused if it exists) and keep it")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    tmp = None
    if args.path is None:
        tmp = tempfile.mkdtemp(prefix="spool-stats-speed-")
        path = Path(tmp) / "spans.db"
    else:
        path = args.path
    try:
        if not path.exists():
            secs = build(path, args.rows)
            size_mb = path.stat().st_size / 1e6
            print(f"built {args.rows:,} rows in {secs:.1f} s ({args.rows / secs:,.0f} rows/s), {size_mb:,.0f} MB")
        spool_exe = str(Path(sys.executable).with_name("spool"))
        env = {**os.environ, "SPOOL_PATH": str(path)}
        os.environ.update(env)
        report("python -c pass (interpreter floor)", timed([sys.executable, "-c", "pass"], args.runs))
        report(
            "python -c 'import spool.cli; _register()'",
            timed([sys.executable, "-c", "import spool.cli as c; c._register()"], args.runs),
        )
        report(f"spool stats --json ({args.rows:,} rows)", timed([spool_exe, "stats", "--json"], args.runs))
        report(
            f"uv run spool stats --json ({args.rows:,} rows)",
            timed(["uv", "run", "spool", "stats", "--json"], args.runs),
        )
        report("spool stats (table)", timed([spool_exe, "stats"], args.runs))
        report("spool stats --json --traces (exact top traces)", timed([spool_exe, "stats", "--json", "--traces"], 3))
        store = Store(path, create=False)
        try:
            for label, fn in [
                ("  Store.stats()", store.stats),
                ("  Store.stats_detail()", lambda: store.stats_detail(store.counts()[0])),
            ]:
                samples = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    fn()
                    samples.append(time.perf_counter() - t0)
                report(label + " (in process)", samples)
        finally:
            store.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
