"""Fleet churn: processes that open a spool, put, commit and close in a loop beside one long-lived drainer.

`--procs` worker processes each loop: open `Spool(path, sink=SGPSink(...))` (`shutdown_timeout` 0.5 s), put
`--spans` spans with ids of their own, `await commit()`, record those ids in a side file (so the side file is a lower
bound of what was acknowledged), close. One more process keeps a `Spool` with a sink open on the same file all along.
After `--seconds`, the workers stop, the long-lived drainer closes, and a last flush delivers what is left. Every
acknowledged span must be at the receiver (a real HTTP server in this process that records a span before it
answers); `lost` must be 0. `duplicates`: spans the receiver took more than once.

    uv run python scripts/churn.py --seconds 120
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spool import SGPSink, Spool, SpoolConfig
from spool.testing import Receiver

START = "2026-11-28T10:00:00+00:00"
END = "2026-11-28T10:00:01+00:00"


def _stopped(stop: str) -> bool:
    return os.path.exists(stop)


def _sink(url: str) -> SGPSink:
    return SGPSink(api_key="k", account_id="a", base_url=url)


async def _worker(path: str, url: str, side: str, wid: str, spans: int, stop: str) -> None:
    fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    config = SpoolConfig(shutdown_timeout=0.5)
    n = 0
    while not _stopped(stop):
        async with Spool(path, sink=_sink(url), config=config) as sp:
            ids = [f"{wid}-{n}-{k}" for k in range(spans)]
            n += 1
            for sid in ids:
                sp.put({"trace_id": "churn", "id": sid, "name": "c", "start_timestamp": START, "end_timestamp": END})
            await sp.commit()
            os.write(fd, "".join(f"{sid}\n" for sid in ids).encode())


async def _drainer(path: str, url: str, stop: str) -> None:
    async with Spool(path, sink=_sink(url), config=SpoolConfig(shutdown_timeout=0.0)) as sp:
        print("ready", flush=True)
        while not _stopped(stop):
            await asyncio.sleep(0.05)
            sp.metrics(gauges=False)


async def _flush(path: str, url: str) -> dict[str, object]:
    async with Spool(path, sink=_sink(url), config=SpoolConfig(shutdown_timeout=0.0)) as sp:
        ok = await sp.flush(timeout=180)
        st = await sp.stats()
    return {"ok": ok, "pending": st.pending, "delivered_total": st.delivered_total}


def run(seconds: float, procs: int, spans: int) -> dict[str, object]:
    me = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory(prefix="churn-") as tmp, Receiver(keep_items=False) as rx:
        path, stop = str(Path(tmp) / "spans.db"), str(Path(tmp) / "stop")
        drainer = subprocess.Popen([sys.executable, me, "--drainer", path, rx.url, stop], stdout=subprocess.PIPE)
        assert drainer.stdout is not None
        drainer.stdout.readline()
        sides = [str(Path(tmp) / f"acked-{w}.txt") for w in range(procs)]
        workers = [
            subprocess.Popen([sys.executable, me, "--worker", path, rx.url, sides[w], f"w{w}", str(spans), stop])
            for w in range(procs)
        ]
        time.sleep(seconds)
        Path(stop).touch()
        for p in [*workers, drainer]:
            p.wait(timeout=120)
        flushed = subprocess.run([sys.executable, me, "--flush", path, rx.url], capture_output=True, text=True)
        last = json.loads(flushed.stdout.strip().splitlines()[-1])
        acked: set[str] = set()
        for side in sides:
            if os.path.exists(side):
                acked.update(Path(side).read_text().split())
        received = {sid for trace, sid, _ in rx.received_ids if trace == "churn"}
        lost = sorted(acked - received)
        return {
            "seconds": seconds,
            "processes": procs,
            "acked": len(acked),
            "received": len(received),
            "lost": len(lost),
            "lost_sample": lost[:5],
            "duplicates": rx.writes - len(received),
            "flushed": last["ok"],
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--procs", type=int, default=12)
    ap.add_argument("--spans", type=int, default=20, help="spans each process puts before it closes")
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    ap.add_argument("--drainer", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--flush", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        path, url, side, wid, spans, stop = args.worker
        asyncio.run(_worker(path, url, side, wid, int(spans), stop))
        return 0
    if args.drainer:
        asyncio.run(_drainer(*args.drainer))
        return 0
    if args.flush:
        print(json.dumps(asyncio.run(_flush(*args.flush))))
        return 0
    summary = run(args.seconds, args.procs, args.spans)
    print(json.dumps(summary))
    return 0 if summary["lost"] == 0 and summary["flushed"] else 1


if __name__ == "__main__":
    sys.exit(main())
