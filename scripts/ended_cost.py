"""What the record of delivered ends costs (the table that keeps a start from being sent after its end).

    uv run python scripts/ended_cost.py [--rounds 5]

- disk: bytes per remembered end, from the file's growth while 100,000 ends are recorded (the record's bound);
- deliver: `Store.complete` of batches of 100 ends (recorded) against 100 starts (never recorded), same sizes,
  alternating rounds; the difference per span is the record's cost on the drain side;
- put: `Store.append` of 100 starts with 100,000 ends remembered against an empty record (each start is looked up).
Medians of the rounds; ids are uuid4 hex, as agents make them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from spool._config import SpoolConfig
from spool._items import encode_item
from spool._store import ENDED_MAX, Store

BATCH = 100
T0, T1 = "2026-12-03T10:00:00+00:00", "2026-12-03T10:00:01+00:00"


def items(n: int, *, end: bool) -> list[object]:
    out = []
    for _ in range(n):
        it = {"trace_id": uuid.uuid4().hex, "id": uuid.uuid4().hex, "name": "llm", "start_timestamp": T0}
        if end:
            it["end_timestamp"] = T1
        it["input"] = {"messages": [{"role": "user", "content": "x" * 800}]}
        out.append(encode_item(it, 1 << 20))
    return out


def deliver(store: Store, rows: list[object]) -> float:
    """Seconds per span to complete `rows` (appended, then claimed, outside the timing)."""
    store.append(rows)  # type: ignore[arg-type]
    claimed = store.claim("bench", len(rows), 60)
    t = time.perf_counter()
    store.complete(claimed)
    dt = time.perf_counter() - t
    store.release(claimed[0].lease)
    return dt / len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "a.db", SpoolConfig(max_bytes=1 << 34))
        empty = Store(Path(tmp) / "b.db", SpoolConfig(max_bytes=1 << 34))
        try:
            remembered = lambda s: s._db.execute("SELECT count(*) FROM ended_keys").fetchone()[0]  # noqa: E731
            used = lambda s: s._db.execute(  # noqa: E731
                "SELECT (SELECT page_count FROM pragma_page_count) - (SELECT freelist_count FROM pragma_freelist_count)"
            ).fetchone()[0]
            before = used(store)
            ends, starts = [], []
            while remembered(store) < ENDED_MAX:
                ends.append(deliver(store, items(BATCH, end=True)))
            grown = used(store) - before
            per_end = grown * 4096 / ENDED_MAX
            for _ in range(args.rounds * 20):
                ends.append(deliver(store, items(BATCH, end=True)))
                starts.append(deliver(store, items(BATCH, end=False)))
            puts_full, puts_empty = [], []
            for _ in range(args.rounds * 20):
                for s, out in ((store, puts_full), (empty, puts_empty)):
                    rows = items(BATCH, end=False)
                    t = time.perf_counter()
                    s.append(rows)  # type: ignore[arg-type]
                    out.append((time.perf_counter() - t) / BATCH)
        finally:
            store.close()
            empty.close()
    e, s_ = statistics.median(ends[-args.rounds * 20 :]), statistics.median(starts)
    pf, pe = statistics.median(puts_full), statistics.median(puts_empty)
    print(f"disk: {per_end:.0f} bytes per remembered end ({per_end * ENDED_MAX / 1e6:.1f} MB at {ENDED_MAX:,})")
    extra = (e - s_) * 1e6
    print(f"deliver: {e * 1e6:.1f} us/span for ends vs {s_ * 1e6:.1f} for starts: +{extra:.1f} us ({e / s_:.2f}x)")
    print(f"put: {pf * 1e6:.1f} us/span with {ENDED_MAX:,} ends remembered vs {pe * 1e6:.1f} empty ({pf / pe:.2f}x)")


if __name__ == "__main__":
    main()
