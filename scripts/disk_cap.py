"""Measure how far the files of a spool go above `max_bytes`: the database, its WAL and its SHM together.

    uv run python scripts/disk_cap.py                  # caps 256 KiB, 1 MiB, 8 MiB
    uv run python scripts/disk_cap.py --caps 262144 --seconds 5

For each cap, producers put 1 KB spans faster than a receiver (5 ms per request) takes them, so the spool sits at
its cap while the drainer claims and deletes; a thread samples the three files' sizes every millisecond. Prints the
peak of their sum against the cap (target: within 5%) and the WAL's peak.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from spool import SGPSink, Spool, SpoolConfig
from spool._store import spool_files
from spool.testing import Receiver

T0, BODY = "2026-12-03T10:00:00+00:00", {"name": "step", "input": "x" * 900}


def sizes(path: Path) -> tuple[int, int]:
    """(sum of the three files, the WAL alone)."""
    total = wal = 0
    for p in spool_files(path):
        try:
            n = p.stat().st_size
        except FileNotFoundError:
            continue
        total += n
        wal = n if p.name.endswith("-wal") else wal
    return total, wal


def measure(cap: int, seconds: float) -> tuple[int, int, int, int]:
    """Returns (peak total bytes, peak WAL bytes, spans put, spans delivered)."""
    receiver = Receiver().start()
    receiver.latency = 0.005
    peak = [0, 0]
    done = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spans.db"

        def sample() -> None:
            while not done.is_set():
                total, wal = sizes(path)
                peak[0], peak[1] = max(peak[0], total), max(peak[1], wal)
                time.sleep(0.001)

        sampler = threading.Thread(target=sample, daemon=True)
        config = replace(SpoolConfig(), max_bytes=cap, flush_interval=0.05, commit_interval=0.002)

        async def main() -> tuple[int, int]:
            async with Spool(path, sink=SGPSink("k", "a", receiver.url), config=config) as sp:
                sampler.start()
                put, end = 0, time.monotonic() + seconds
                while time.monotonic() < end:
                    for _ in range(200):
                        sp.put({"trace_id": f"t{put // 10}", "id": f"s{put}", "start_timestamp": T0, **BODY})
                        put += 1
                    await asyncio.sleep(0.005)
                await sp.flush(30)
                return put, (await sp.stats()).delivered_total

        try:
            put, delivered = asyncio.run(main())
        finally:
            done.set()
            receiver.stop()
        sampler.join()
    return peak[0], peak[1], put, delivered


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--caps", type=int, nargs="+", default=[256 * 1024, 1024**2, 8 * 1024**2])
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    print(f"{'cap':>10} {'peak':>10} {'over':>7} {'wal peak':>10} {'put':>8} {'delivered':>9}")
    for cap in args.caps:
        peak, wal, put, delivered = measure(cap, args.seconds)
        print(f"{cap:>10} {peak:>10} {peak / cap - 1:>+7.1%} {wal:>10} {put:>8} {delivered:>9}")


if __name__ == "__main__":
    main()
