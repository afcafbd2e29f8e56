"""What the check before a write costs: `spool import`, `dead retry`, `dead purge` and `flush` first run SQLite's
`quick_check` over the whole file (read-only), so that a damaged file is never written to. This builds a spool of
about `--gb` GB (1 KB spans), then times that check (`Store.check_quick`) and, for scale, `spool stats`' read.

    uv run python scripts/check_cost.py --gb 1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from spool import SpoolConfig
from spool._items import encode_item
from spool._store import Store


def build(path: Path, gb: float) -> int:
    """Rows of ~1 KB until the file holds `gb` GB; returns the rows written."""
    store = Store(path, SpoolConfig(max_bytes=1 << 40))
    pad = "x" * 900
    n = 0
    try:
        while os.path.getsize(path) < gb * 1e9:
            rows = [
                encode_item(
                    {
                        "trace_id": f"t{(n + i) % 1000}",
                        "id": f"s{n + i}",
                        "name": "n",
                        "start_timestamp": "2026-12-06T00:00:00Z",
                        "pad": pad,
                    },
                    1 << 20,
                )
                for i in range(20_000)
            ]
            store.append(rows)
            n += len(rows)
            store.checkpoint()
    finally:
        store.close()
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="check-cost-") as tmp:
        path = Path(tmp) / "spans.db"
        rows = build(path, args.gb)
        out: dict[str, object] = {"rows": rows, "file_gb": round(os.path.getsize(path) / 1e9, 2)}
        for run in ("first", "second"):
            store = Store(path, SpoolConfig.defaults(), create=False, readonly=True)
            try:
                t0 = time.perf_counter()
                problems = store.check_quick()
                out[f"quick_check_{run}_s"] = round(time.perf_counter() - t0, 2)
                t0 = time.perf_counter()
                store.stats()
                out[f"stats_{run}_s"] = round(time.perf_counter() - t0, 3)
            finally:
                store.close()
            assert problems == [], problems
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
