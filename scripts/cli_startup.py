"""How fast the `spool` command answers: every command's `--help`, and `stats`, `dead list`, `check` on a small
spool, as wall time of a fresh process, next to `python -c pass` measured in the same rounds.

    uv run python scripts/cli_startup.py [--rounds 15] [--json out.json]

The commands run round-robin (one process each per round), so a slow spell of the machine hits them all alike; the
median of the rounds is reported. Target (issue 13): every figure <= 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spool import Spool, SpoolConfig

TARGET_MS = 300.0
COMMANDS = ["stats", "flush", "dead", "dead list", "dead retry", "dead purge", "check", "recover", "export"]
COMMANDS += ["import", "receiver", "demo"]


def _spool_exe() -> list[str]:
    exe = Path(sys.executable).with_name("spool")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "spool"]


def _small_spool(path: Path) -> None:
    async def go() -> None:
        async with Spool(path, config=SpoolConfig(commit_interval=0.001)) as sp:
            for i in range(1000):
                sp.put(
                    {"trace_id": f"t{i % 10}", "id": f"s{i}", "name": "step", "start_timestamp": "2026-01-01T00:00:00Z"}
                )
            await sp.commit()

    asyncio.run(go())


def _wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    spool = _spool_exe()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "small.db"
        _small_spool(db)
        cases: dict[str, list[str]] = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "spool --help": [*spool, "--help"],
        }
        cases.update({f"spool {c} --help": [*spool, *c.split(), "--help"] for c in COMMANDS})
        for c in ("stats", "stats --json", "dead list", "check"):
            cases[f"spool {c} (1,000 rows)"] = [*spool, *c.split(), "--path", str(db)]
        env_note = os.environ.get("SPOOL_PATH")
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, argv in cases.items():
                times[name].append(_wall(argv))
    base = statistics.median(times["python -c pass"])
    width = max(map(len, cases))
    print(f"{'command':<{width}}  median ms  x python  target {TARGET_MS:.0f} ms")
    result = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        ok = "" if name == "python -c pass" else ("ok" if med <= TARGET_MS else "MISS")
        print(f"{name:<{width}}  {med:9.0f}  {med / base:8.1f}  {ok}")
        result[name] = {"median_ms": med, "min_ms": min(ts), "max_ms": max(ts)}
    if env_note:
        print(f"(SPOOL_PATH={env_note} was set; the commands were given --path)")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
