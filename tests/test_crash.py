"""The short crash torture: a producing, draining process killed with SIGKILL loses no committed span."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "crash_torture.py"


def test_short_crash_torture_loses_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--trials", "3", "--seed", "7", "--json"],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["trials"] == 3
    assert summary["committed"] > 0  # the kills landed after some commits: the check had something to check
    assert summary["lost"] == 0
    assert summary["not_flushed"] == 0 and summary["corrupt_files"] == 0
    assert summary["duplicates_max"] <= 2 * 50  # at most the batches in flight (max_inflight x batch_size)
