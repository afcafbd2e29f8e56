"""Operating commands: `spool receiver` (a real process), `spool stats` detail and `--watch`, every command's help."""

from __future__ import annotations

import json
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import typer
from conftest import poll, span, store_items
from typer.testing import CliRunner, Result

import spool.cli
from spool import SpoolConfig
from spool._store import Store

spool.cli._register()
MAIN = "import sys; from spool.cli import main; sys.argv[0] = 'spool'; main()"


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(spool.cli.app, [str(a) for a in args], env=env)


class Proc:
    """`spool ARGS` as a process; a thread reads its stdout lines into a queue, so waits have deadlines."""

    def __init__(self, *args: str) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-c", MAIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def until(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The next stdout line matching `pattern` (earlier lines are passed over)."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s, got {seen!r}") from None
            if line is None:
                raise AssertionError(f"exited ({self.p.wait()}) with no line matching {pattern!r}, got {seen!r}")
            seen.append(line)
            if m := re.search(pattern, line):
                return m

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> tuple[int, str, str]:
        """Send `sig`, wait for the exit; (exit code, the stdout not read yet, stderr)."""
        self.p.send_signal(sig)
        code = self.p.wait(timeout)
        self._pump.join(timeout)
        rest = []
        while (line := self._lines.get_nowait()) is not None:
            rest.append(line)
        assert self.p.stderr is not None
        return code, "".join(rest), self.p.stderr.read()

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self._pump.join(10)
        for pipe in (self.p.stdout, self.p.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def receiver_process(tmp_path: Path) -> Iterator[tuple[Proc, str, Path]]:
    out = tmp_path / "captured.jsonl"
    proc = Proc("receiver", "--port", "0", "--out", str(out))
    try:
        url = proc.until(r"listening on (http://\S+)")[1]
        yield proc, url, out
    finally:
        proc.close()


# -- spool receiver -----------------------------------------------------------------------------------------------


def test_receiver_out_captures_what_flush_sends(tmp_path: Path, receiver_process: tuple[Proc, str, Path]) -> None:
    proc, url, out = receiver_process
    items = [span(i, trace=f"trace-{i % 3}") for i in range(40)]
    items += [span(i, trace=f"trace-{i % 3}", end=True) for i in range(5)]
    db = tmp_path / "spans.db"
    store_items(db, items)
    with sqlite3.connect(db) as con:
        stored = {(t, i): orjson.loads(b) for t, i, b in con.execute("SELECT trace_id, span_id, body FROM spans")}
    con.close()
    assert len(stored) == 40
    # The documented fault switch: the next 2 requests fail with 503; flush retries through them.
    r = httpx.post(f"{url}/_control", json={"fail_status": 503, "fail_count": 2})
    assert r.status_code == 200 and r.json()["fail_count"] == 2

    env = {"SGP_CLIENT_BASE_URL": url, "SGP_API_KEY": "k", "SGP_ACCOUNT_ID": "a", "SPOOL_BACKOFF_INITIAL": "0.01"}
    res = run("flush", "--path", db, "--batch-size", "10", env=env)
    assert res.exit_code == 0, res.output

    assert poll(lambda: out.exists() and len(out.read_text().splitlines()) >= len(stored))
    captured = {}
    for line in out.read_text().splitlines():
        item = json.loads(line)
        captured[(item["trace_id"], item["id"])] = item
    assert captured == stored  # the end events replaced their starts in the spool: what was sent is what was kept
    st = httpx.get(f"{url}/_stats").json()
    assert st["requests"] == st["batches"] + 2

    code, stdout, stderr = proc.stop(signal.SIGINT)
    assert code == 0, stderr
    assert re.search(r"stopped: 40 spans stored from \d+ requests", stdout)
    assert "Traceback" not in stderr


def test_receiver_prints_the_env_line_and_the_control_curl(receiver_process: Any) -> None:
    proc, url, _ = receiver_process
    assert proc.until(r"^export SGP_CLIENT_BASE_URL=(\S+) ")[1] == url
    assert proc.until(r"curl -X POST (\S+)/_control")[1] == url
    code, stdout, _ = proc.stop(signal.SIGTERM)
    assert code == 0
    assert stdout.endswith("stopped: 0 spans stored from 0 requests\n")


def test_receiver_on_a_taken_port_is_one_error_line(receiver_process: Any) -> None:
    _, url, _ = receiver_process
    port = url.rsplit(":", 1)[1]
    p = subprocess.run(
        [sys.executable, "-c", MAIN, "receiver", "--port", port], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2
    assert p.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}")
    assert len(p.stderr.splitlines()) == 1


# -- spool stats detail -------------------------------------------------------------------------------------------


def test_stats_detail_attempt_buckets_top_traces_and_last_error_at(tmp_path: Path) -> None:
    db = tmp_path / "spans.db"
    store_items(db, [span(i, trace="big") for i in range(6)] + [span(i, trace=f"t{i}") for i in range(3)])
    store = Store(db, SpoolConfig())
    try:
        rows = store.claim("me", 9, 60)
        seqs = [r.seq for r in rows]
        store.attempt_failed(rows[0].lease, seqs[:4], 60)  # 4 rows with 1 attempt
        store.attempt_failed(rows[0].lease, seqs[:2], 60)  # 2 of them with 2
        store.attempt_failed(rows[0].lease, seqs[:1], 60)  # 1 with 3
        for _ in range(2):
            store.attempt_failed(rows[0].lease, seqs[8:], 60)  # the last with 2, then...
        for _ in range(3):
            store.attempt_failed(rows[0].lease, seqs[8:], 60)  # ... 5
        store.release(rows[0].lease)
        store.set_error("503 Service Unavailable")
    finally:
        store.close()
    before = time.time()

    data = json.loads(run("stats", "--json", "--detail", "--path", db).stdout)
    assert data["pending"] == 9
    assert data["attempts_buckets"] == {"0": 4, "1": 2, "2-3": 2, "4+": 1}
    assert data["top_traces"][0] == {"trace_id": "big", "pending": 6}
    assert [t["pending"] for t in data["top_traces"]] == [6, 1, 1, 1]
    assert data["last_error"] == "503 Service Unavailable"
    assert before - 60 < data["last_error_at"] <= before

    table = run("stats", "--path", db).stdout
    assert re.search(r"by failed attempts\s+0: 4\s+1: 2\s+2-3: 2\s+4\+: 1", table)
    assert re.search(r"top traces\s+6\s+big", table)
    assert re.search(r"last error at\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+(\.\d)?\s?m?s ago\)", table)


def test_top_traces_are_skipped_above_the_row_limit_unless_asked(tmp_path: Path) -> None:
    db = tmp_path / "spans.db"
    store_items(db, [span(i, trace=f"t{i % 2}") for i in range(5)])
    store = Store(db, SpoolConfig())
    try:
        assert store.stats_detail(5, top_max_rows=4)["top_traces"] is None
        assert store.stats_detail(5, top_max_rows=None)["top_traces"] == [
            {"trace_id": "t0", "pending": 3},
            {"trace_id": "t1", "pending": 2},
        ]
    finally:
        store.close()
    assert (
        json.loads(run("stats", "--json", "--detail", "--traces", "--path", db).stdout)["top_traces"][0]["pending"] == 3
    )


def test_stats_detail_on_an_empty_spool(tmp_path: Path) -> None:
    db = tmp_path / "spans.db"
    store_items(db, [])
    data = json.loads(run("stats", "--json", "--detail", "--path", db).stdout)
    assert data["attempts_buckets"] == {"0": 0, "1": 0, "2-3": 0, "4+": 0}
    assert data["top_traces"] == [] and data["last_error_at"] is None


def test_stats_watch_json_refreshes_until_ctrl_c(tmp_path: Path) -> None:
    db = tmp_path / "spans.db"
    store_items(db, [span(1)])
    proc = Proc("stats", "--watch", "--json", "--detail", "--interval", "0.05", "--path", str(db))
    try:
        first = json.loads(proc.until(r"^\{.*\}$")[0])
        store_items(db, [span(2)])
        assert poll(lambda: json.loads(proc.until(r"^\{.*\}$")[0])["pending"] == 2)
        code, _, stderr = proc.stop(signal.SIGINT)
    finally:
        proc.close()
    assert first["pending"] == 1
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_stats_watch_rejects_a_bad_interval(tmp_path: Path) -> None:
    db = tmp_path / "spans.db"
    store_items(db, [])
    r = run("stats", "--watch", "--interval", "0", "--path", db)
    assert r.exit_code == 2 and r.stderr == "Error: --interval must be > 0, got 0.0\n"


def test_export_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    db = tmp_path / "spans.db"
    store_items(db, [span(i, metadata={"pad": "x" * 2000}) for i in range(300)])
    proc = subprocess.Popen(
        [sys.executable, "-c", MAIN, "export", "-", "--path", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    proc.wait(timeout=30)
    assert orjson.loads(first)["id"] == "span-0"
    assert proc.returncode == 1
    assert "Traceback" not in stderr and "Exception" not in stderr


# -- help ---------------------------------------------------------------------------------------------------------


def _commands(cmd: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    sub = getattr(cmd, "commands", None)
    if sub:
        if prefix:
            yield prefix, cmd
        for name, c in sub.items():
            yield from _commands(c, (*prefix, name))
    else:
        yield prefix, cmd


def test_every_registered_command_has_a_description_and_an_example() -> None:
    root = typer.main.get_command(spool.cli.app)
    found = dict(_commands(root))
    for name in ("export", "import", "receiver", "stats", "flush", "dead", "check", "demo"):
        assert (name,) in found, name
    for path in found:
        r = run(*path, "--help")
        assert r.exit_code == 0, path
        usage, _, rest = r.stdout.partition("\n\n")
        assert usage.startswith("Usage: spool"), path
        assert rest.strip() and not rest.lstrip().startswith(("Options", "Arguments")), path  # a description
        assert re.search(r"Example: (\S+=\S+ )*spool \w", r.stdout), path  # an example command line
