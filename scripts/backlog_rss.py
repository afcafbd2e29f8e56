"""Memory and disk while holding a large backlog through an outage, and the file size once it drained.

Puts N (default 1,000,000) ~1 KB spans into a spool whose sink points at a port nobody listens on (every send is
refused, so the drainer retries and cools down while the backlog builds), measuring this process's RSS
(/proc/self/status VmRSS, peak VmHWM) and the spool's size on disk. Then a receiver starts on that port (its own
process, so its memory is not counted here), the spool is flushed, and the size is measured again.

    uv run python scripts/backlog_rss.py            # ~2 GB of disk in a temp directory, a few minutes
    uv run python scripts/backlog_rss.py --spans 100000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spool import SGPSink, Spool, SpoolConfig

PAD = "x" * 800


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _item(i: int) -> dict[str, object]:
    return {
        "trace_id": f"{i // 20:032x}",
        "id": f"{i:032x}",
        "name": "llm.call",
        "start_timestamp": "2026-11-28T10:00:00.123456+00:00",
        "end_timestamp": "2026-11-28T10:00:01.654321+00:00",
        "metadata": {"model": "some-model", "tokens": i % 4096, "pad": PAD},
    }


async def run(n: int, tmp: Path, every: int) -> dict[str, object]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = SpoolConfig(max_bytes=8 * 1024**3, batch_size=500, max_inflight=4, cooldown_max=5.0)
    out: dict[str, object] = {"spans": n, "commit_every": every}
    path = tmp / "spans.db"
    rss_samples: list[int] = []
    async with Spool(path, sink=SGPSink(api_key="k", account_id="a", base_url=url), config=cfg) as sp:
        out["rss_start_mb"] = _status_kb("VmRSS") / 1024
        t0 = time.perf_counter()
        for i in range(n):
            sp.put(_item(i))
            if i % every == every - 1:  # a fast producer: the group commit takes `every` spans at a time
                await sp.commit()
                if i % 50_000 == 49_999:
                    rss_samples.append(_status_kb("VmRSS"))
        await sp.commit()
        out["put_commit_s"] = round(time.perf_counter() - t0, 1)
        st = await sp.stats()
        out["backlog_pending"] = st.pending
        out["backlog_last_error"] = st.last_error
        out["backlog_db_bytes"] = st.db_bytes
        out["backlog_rss_mb"] = _status_kb("VmRSS") / 1024
        out["backlog_rss_max_sampled_mb"] = max(rss_samples, default=0) / 1024
        out["backlog_peak_rss_mb"] = _status_kb("VmHWM") / 1024  # VmHWM: the peak since start

        peak_reset = _reset_peak()
        rx = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spool", "receiver", "--port", str(port), "--keys-only", stdout=subprocess.PIPE
        )
        try:
            assert rx.stdout is not None
            line = (await rx.stdout.readline()).decode()
            if not line.startswith("listening on"):
                raise RuntimeError(f"receiver did not start: {line!r}")
            t0 = time.perf_counter()
            ok = await sp.flush(timeout=3600, batch_size=1000)
            out["drain_s"] = round(time.perf_counter() - t0, 1)
            out["drained"] = ok
            st = await sp.stats()
            out["drained_pending"] = st.pending
            out["drained_delivered_total"] = st.delivered_total
            out["drained_db_bytes"] = st.db_bytes
            out["drain_peak_rss_mb" if peak_reset else "peak_rss_mb"] = _status_kb("VmHWM") / 1024
        finally:
            rx.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rx.wait(), 10)
    out["closed_db_bytes"] = sum(
        f.stat().st_size
        for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
        if f.exists()
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--commit-every", type=int, default=200, help="await commit() after this many puts")
    ap.add_argument("--dir", type=Path, default=None, help="where the spool goes (default: a temp directory)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="backlog-rss-", dir=args.dir) as tmp:
        out = asyncio.run(run(args.spans, Path(tmp), args.commit_every))
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:28} {v}")
    return 0 if out.get("drained") else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
