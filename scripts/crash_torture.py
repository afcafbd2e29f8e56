"""Crash torture: kill -9 a producing, draining process at random moments; no committed span may be lost.

Each trial starts a child process that puts spans (starts, and ends of earlier spans), awaits `commit()`, and only
then appends the committed `(id, is_end)` pairs to a side file with fsync, so the side file is a lower bound of what
was committed. Its drainer delivers to a receiver running in this process meanwhile. The parent SIGKILLs the child
at a random moment, then a fresh process opens the same spool and flushes it. Every committed span must then be at
the receiver (an end, if its end was committed); duplicates (the same event accepted twice) are counted per crash.
The spool file is shared by all trials, so each child also inherits the leases and state of the one killed before.

    uv run python scripts/crash_torture.py --trials 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spool import SGPSink, Spool, SpoolConfig
from spool.testing import Receiver

CONFIG = SpoolConfig(
    batch_size=50,
    max_inflight=2,
    flush_interval=0.05,
    flush_trigger=20,
    commit_interval=0.002,
    request_timeout=1.0,
    lease_seconds=1.5,  # a killed drainer's rows come back quickly
    backoff_initial=0.01,
    backoff_max=0.1,
    cooldown_max=0.5,
    shutdown_timeout=0.0,
)
START = "2026-11-28T10:00:00+00:00"
END = "2026-11-28T10:00:01+00:00"


def _item(trace: str, span_id: str, end: bool) -> dict[str, object]:
    item: dict[str, object] = {"trace_id": trace, "id": span_id, "name": "torture", "start_timestamp": START}
    item["metadata"] = {"pad": "x" * random.randint(10, 600)}
    if end:
        item["end_timestamp"] = END
    return item


async def _child(path: str, url: str, side: str, trial: int) -> None:
    """Put, commit, record what was committed; forever (until killed)."""
    trace = f"trial-{trial}"
    sink = SGPSink(api_key="k", account_id="a", base_url=url)
    fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sink.prepare()  # the SDK import and set-up, so that the kill lands while spans are on the wire
    async with Spool(path, sink=sink, config=CONFIG) as sp:
        print("ready", flush=True)
        n = 0
        open_spans: list[str] = []
        while True:
            events: list[tuple[str, int]] = []
            for _ in range(random.randint(1, 60)):
                if open_spans and random.random() < 0.4:
                    sid = open_spans.pop(random.randrange(len(open_spans)))
                    sp.put(_item(trace, sid, True))
                    events.append((sid, 1))
                else:
                    sid = f"{trial}-{n}"
                    n += 1
                    ended = random.random() < 0.3  # a span put once, already ended
                    sp.put(_item(trace, sid, ended))
                    events.append((sid, int(ended)))
                    if not ended:
                        open_spans.append(sid)
            await sp.commit()
            os.write(fd, "".join(f"{sid} {end}\n" for sid, end in events).encode())
            os.fsync(fd)
            await asyncio.sleep(random.random() * 0.005)


async def _flush(path: str, url: str) -> dict[str, object]:
    sink = SGPSink(api_key="k", account_id="a", base_url=url)
    async with Spool(path, sink=sink, config=CONFIG) as sp:
        ok = await sp.flush(timeout=60)
        st = await sp.stats()
    return {"ok": ok, "pending": st.pending, "last_error": st.last_error}


def _committed(side: Path) -> dict[str, bool]:
    """span id -> whether its end was committed, from complete lines of the side file."""
    out: dict[str, bool] = {}
    if not side.exists():
        return out
    data = side.read_text()
    for line in data.split("\n")[:-1]:  # a line cut by the kill has no newline yet
        sid, end = line.split(" ")
        out[sid] = out.get(sid, False) or end == "1"
    return out


def _wait_ready(proc: subprocess.Popen[str], timeout: float) -> bool:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return bool(ready) and proc.stdout.readline().strip() == "ready"


def run(trials: int, seed: int | None, max_delay: float, verbose: bool) -> dict[str, object]:
    rng = random.Random(seed)
    me = str(Path(__file__).resolve())
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="crash-torture-") as tmp, Receiver(keep_items=False) as rx:
        path = Path(tmp) / "spans.db"
        for trial in range(trials):
            side = Path(tmp) / f"committed-{trial}.txt"
            before = len(rx.received_ids)
            child = subprocess.Popen(
                [sys.executable, me, "--child", str(path), rx.url, str(side), str(trial)],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                if not _wait_ready(child, 30):
                    raise RuntimeError(f"trial {trial}: the child did not start")
                time.sleep(rng.uniform(0.0, max_delay))
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait()
                assert child.stdout is not None
                child.stdout.close()
            flusher = subprocess.run(
                [sys.executable, me, "--flush", str(path), rx.url], capture_output=True, text=True, timeout=120
            )
            if flusher.returncode != 0:
                raise RuntimeError(f"trial {trial}: the flush process failed:\n{flusher.stderr}")
            flushed = json.loads(flusher.stdout.strip().splitlines()[-1])
            committed = _committed(side)
            trace = f"trial-{trial}"
            spans = rx.spans
            lost = [
                sid
                for sid, end in committed.items()
                if (got := spans.get((trace, sid))) is None or (end and got.get("end_timestamp") is None)
            ]
            received = [r for r in rx.received_ids[before:] if r[0] == trace]
            result = {
                "trial": trial,
                "committed": len(committed),
                "received": len(received),
                "lost": len(lost),
                "duplicates": len(received) - len(set(received)),
                "flushed": flushed["ok"],
                "corrupt_files": len(list(Path(tmp).glob("spans.db.corrupt-*"))),
            }
            results.append(result)
            if verbose:
                print(json.dumps(result), flush=True)
    dups = [int(r["duplicates"]) for r in results]  # type: ignore[call-overload]
    return {
        "trials": trials,
        "committed": sum(int(r["committed"]) for r in results),  # type: ignore[call-overload]
        "lost": sum(int(r["lost"]) for r in results),  # type: ignore[call-overload]
        "duplicates_per_crash": sum(dups) / max(1, len(dups)),
        "duplicates_max": max(dups, default=0),
        "not_flushed": sum(1 for r in results if not r["flushed"]),
        "corrupt_files": max((int(r["corrupt_files"]) for r in results), default=0),  # type: ignore[call-overload]
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-delay", type=float, default=0.8, help="kill within this many seconds of start-up")
    ap.add_argument("--json", action="store_true", help="print only the summary, as JSON")
    ap.add_argument("--child", nargs=4, metavar=("PATH", "URL", "SIDE", "TRIAL"), help=argparse.SUPPRESS)
    ap.add_argument("--flush", nargs=2, metavar=("PATH", "URL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        path, url, side, trial = args.child
        asyncio.run(_child(path, url, side, int(trial)))
        return 0
    if args.flush:
        print(json.dumps(asyncio.run(_flush(*args.flush))))
        return 0
    summary = run(args.trials, args.seed, args.max_delay, verbose=not args.json)
    print(json.dumps(summary))
    ok = summary["lost"] == 0 and summary["not_flushed"] == 0 and summary["corrupt_files"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
