"""Does reading stats delay commits? Commit latency with `Spool.stats()` called in a loop, against the same without it.

    uv run python scripts/stats_commit.py [--rows 1000000] [--commits 200] [--rounds 3] [--pause 0]

Builds a spool of `--rows` ~1 KB pending rows (no sink), then times `put` of 10 spans + `await commit()`
`--commits` times per phase, in alternating rounds: `alone`, and `stats` (another task calls `await spool.stats()` all
phase long, back to back, or with `--pause` seconds between calls, as a monitoring loop would). Prints p50/p99 commit
latency per phase (all rounds pooled), their ratio (target: p99 within 1.5x), and how many stats reads ran.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from spool import Spool, SpoolConfig
from spool._items import encode_item
from spool._store import Store

PAD = "x" * 800


def item(i: int) -> dict[str, object]:
    return {
        "trace_id": f"{i // 20:032x}",
        "id": f"{i:032x}",
        "name": "llm.call",
        "start_timestamp": "2026-12-03T10:00:00+00:00",
        "metadata": {"pad": PAD},
    }


def build(path: Path, rows: int, config: SpoolConfig) -> None:
    store = Store(path, config)
    try:
        for start in range(0, rows, 20_000):
            store.append([encode_item(item(i), 1 << 20) for i in range(start, min(rows, start + 20_000))])
    finally:
        store.close()


async def phase(sp: Spool, commits: int, first: int, with_stats: bool, pause: float) -> tuple[list[float], int]:
    done = asyncio.Event()
    reads = 0

    async def reader() -> None:
        nonlocal reads
        while not done.is_set():
            await sp.stats()
            reads += 1
            await asyncio.sleep(pause)

    task = asyncio.create_task(reader()) if with_stats else None
    await asyncio.sleep(0.05)  # (the reader is under way)
    out = []
    for c in range(commits):
        t = time.perf_counter()
        for i in range(10):
            sp.put(item(first + c * 10 + i))
        await sp.commit()
        out.append(time.perf_counter() - t)
        await asyncio.sleep(0.002)
    done.set()
    if task is not None:
        await task
    return out, reads


async def run(path: Path, args: argparse.Namespace, config: SpoolConfig) -> dict[str, object]:
    lat: dict[str, list[float]] = {"alone": [], "stats": []}
    reads = 0
    async with Spool(path, config=config) as sp:
        first = args.rows
        for r in range(args.rounds):
            for name in ("alone", "stats") if r % 2 == 0 else ("stats", "alone"):
                got, n = await phase(sp, args.commits, first, name == "stats", args.pause)
                first += args.commits * 10
                lat[name] += got
                reads += n
    q = {k: statistics.quantiles(v, n=100) for k, v in lat.items()}
    return {
        "p50_ms": {k: round(v[49] * 1e3, 2) for k, v in q.items()},
        "p99_ms": {k: round(v[98] * 1e3, 2) for k, v in q.items()},
        "p99_ratio": round(q["stats"][98] / q["alone"][98], 2),
        "stats_reads": reads,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--commits", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pause", type=float, default=0.0, help="seconds between two stats calls")
    args = ap.parse_args()
    config = SpoolConfig(max_bytes=16 * 1024**3)
    with tempfile.TemporaryDirectory(prefix="stats-commit-") as tmp:
        path = Path(tmp) / "spans.db"
        t = time.perf_counter()
        build(path, args.rows, config)
        print(f"built {args.rows:,} rows in {time.perf_counter() - t:.0f} s")
        out = asyncio.run(run(path, args, config))
    p50, p99 = out["p50_ms"], out["p99_ms"]
    print(f"commit latency alone:      p50 {p50['alone']} ms, p99 {p99['alone']} ms")  # type: ignore[index]
    print(f"commit latency with stats: p50 {p50['stats']} ms, p99 {p99['stats']} ms")  # type: ignore[index]
    ok = "ok" if out["p99_ratio"] <= 1.5 else "MISS"  # type: ignore[operator]
    print(f"p99 ratio {out['p99_ratio']}x (target <= 1.5x: {ok}); {out['stats_reads']:,} stats reads meanwhile")


if __name__ == "__main__":
    main()
