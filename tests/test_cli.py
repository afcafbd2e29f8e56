"""The operator CLI: stats, flush, dead, check, demo, and every command's help. Real spool files, the real receiver,
the real SGPSink/httpx stack; commands run through typer's CliRunner, and as real processes where it matters (the
fast `stats` path, the demo)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from conftest import store_items
from typer.testing import CliRunner

import spool.cli
from spool import SpoolStats
from spool.testing import Receiver

spool.cli._register()
APP = spool.cli.app
STATS_KEYS = {
    "pending",
    "inflight",
    "dead",
    "oldest_age_s",
    "db_bytes",
    "delivered_total",
    "dropped_total",
    "last_error",
    "format",  # sgp or otlp: what the rows hold
}
DETAIL_KEYS = {
    "attempts_buckets",
    "top_traces",
    "last_error_at",
    "moved_aside",
    "dropped_memory",
}  # with --detail, after the SpoolStats keys
DEAD_KEYS = {"id", "trace_id", "span_id", "name", "status", "detail", "attempts", "failed_at"}
MAIN = "import sys; from spool.cli import main; sys.argv[0] = 'spool'; main()"


def item(i: int, *, name: str | None = None, trace: str = "t1", end: bool = True) -> dict[str, Any]:
    it: dict[str, Any] = {
        "trace_id": trace,
        "id": f"s{i}",
        "name": name or f"span {i}",
        "start_timestamp": "2025-01-01T00:00:00+00:00",
    }
    if end:
        it["end_timestamp"] = "2025-01-01T00:00:01+00:00"
    return it


def run(*args: str) -> Any:
    return CliRunner().invoke(APP, [str(a) for a in args])


def run_process(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`spool ARGS` as a real process (the console script's `main`)."""
    return subprocess.run(
        [sys.executable, "-c", MAIN, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="session")
def sdk_loaded() -> None:
    """Import the Scale GP SDK once up front: `SGPSink` loads it on its first send (about a second), which would
    otherwise eat into a short `--timeout` in whichever test runs first."""
    import scale_gp_beta  # noqa: F401


@pytest.fixture
def sgp_env(monkeypatch: pytest.MonkeyPatch, rx: Receiver, sdk_loaded: None) -> Receiver:
    monkeypatch.setenv("SGP_API_KEY", "k")
    monkeypatch.setenv("SGP_ACCOUNT_ID", "a")
    monkeypatch.setenv("SGP_CLIENT_BASE_URL", rx.url)
    # Short backoff so a failing flush reaches its timeout quickly (SpoolConfig reads SPOOL_* when not given).
    monkeypatch.setenv("SPOOL_BACKOFF_INITIAL", "0.01")
    monkeypatch.setenv("SPOOL_BACKOFF_MAX", "0.05")
    return rx


@pytest.fixture
def db(tmp_path: Path) -> Path:
    p = tmp_path / "spans.db"
    store_items(p, [item(i) for i in range(30)])
    return p


# -- stats ------------------------------------------------------------------------------------------------------


def test_stats_json_has_exactly_the_fields_with_real_values(db: Path) -> None:
    r = run("stats", "--json", "--path", db)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert list(data) == [f.name for f in dataclasses.fields(SpoolStats)]  # exactly the contract's fields
    detailed = json.loads(run("stats", "--json", "--detail", "--path", db).stdout)
    assert set(detailed) == STATS_KEYS | DETAIL_KEYS
    assert data["pending"] == 30
    assert data["inflight"] == 0
    assert data["dead"] == 0
    assert data["delivered_total"] == 0
    assert data["dropped_total"] == 0
    assert data["last_error"] is None
    assert data["format"] == "sgp"
    assert data["db_bytes"] > 0
    assert isinstance(data["oldest_age_s"], float) and data["oldest_age_s"] >= 0


def test_stats_json_on_an_empty_spool_has_null_age(tmp_path: Path) -> None:
    p = tmp_path / "empty.db"
    store_items(p, [])
    data = json.loads(run("stats", "--json", "-p", p).stdout)
    assert data["pending"] == 0 and data["oldest_age_s"] is None


def test_stats_table_for_people(db: Path) -> None:
    r = run("stats", "--path", db)
    assert r.exit_code == 0, r.output
    assert re.search(r"pending\s+30\b", r.stdout)
    assert re.search(r"size on disk\s+\d+(\.\d)? (KB|MB|B)\b", r.stdout)
    assert str(db) in r.stdout


def test_stats_missing_spool_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "spans.db"
    r = run("stats", "--json", "--path", missing)
    assert r.exit_code == 2
    assert r.stderr == f"Error: no spool at {missing}\n"
    assert r.stdout == ""
    assert not missing.exists()  # a read-only command never creates a spool


def test_stats_process_answers_without_typer_pydantic_or_http(db: Path) -> None:
    """The console script answers `stats --json` without loading typer (which loads pydantic), httpx or the SDK:
    that is what keeps it within its time budget on a large spool. Same output as the typer command."""
    probe = (
        "import sys, json\n"
        "from spool.cli import main\n"
        f"sys.argv = ['spool', 'stats', '--json', '--path', {str(db)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = [m for m in ('typer', 'pydantic', 'httpx', 'scale_gp_beta', 'rich') if m in sys.modules]\n"
        "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)\n"
    )
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    outcome = json.loads(p.stderr.strip().splitlines()[-1])
    assert outcome == {"code": 0, "heavy": []}
    fast = json.loads(p.stdout)
    slow = json.loads(run("stats", "--json", "--path", db).stdout)
    assert set(fast) == set(slow) == STATS_KEYS
    assert {k: v for k, v in fast.items() if k != "oldest_age_s"} == {
        k: v for k, v in slow.items() if k != "oldest_age_s"
    }


def test_stats_process_missing_spool_and_fallback_to_typer(tmp_path: Path, db: Path) -> None:
    missing = tmp_path / "missing.db"
    p = run_process("stats", "--path", str(missing))
    assert p.returncode == 2
    assert p.stderr == f"Error: no spool at {missing}\n"
    # An argument the fast path does not know goes to typer, which reports it as a usage error.
    p = run_process("stats", "--path", str(db), "--bogus")
    assert p.returncode == 2
    assert "--bogus" in p.stderr


# -- flush ------------------------------------------------------------------------------------------------------


def test_flush_delivers_everything_exit_0(db: Path, sgp_env: Receiver) -> None:
    levels = [logging.getLogger(n).level for n in ("spool", "httpx")]
    r = run("flush", "--path", db, "--json")
    assert [logging.getLogger(n).level for n in ("spool", "httpx")] == levels  # the command restores what it quiets
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {
        "ok": True,
        "delivered": 30,
        "refused": 0,
        "pending": 0,
        "dead": 0,
        "last_error": None,
    }
    assert len(sgp_env.spans) == 30
    assert sgp_env.ended == 30
    after = json.loads(run("stats", "--json", "--path", db).stdout)
    assert after["pending"] == 0 and after["delivered_total"] == 30


def test_flush_human_output(db: Path, sgp_env: Receiver) -> None:
    r = run("flush", "--path", db)
    assert r.exit_code == 0, r.output
    assert "delivered 30 spans; nothing pending" in r.stdout


def test_flush_batch_size_sets_the_request_size(db: Path, sgp_env: Receiver) -> None:
    r = run("flush", "--path", db, "--batch-size", "7")
    assert r.exit_code == 0, r.output
    assert sum(sgp_env.batches) == 30
    assert max(sgp_env.batches) <= 7
    assert len(sgp_env.batches) >= 5


def test_flush_backend_down_exit_1_keeps_everything_then_recovers(db: Path, sgp_env: Receiver) -> None:
    sgp_env.fail_status = 503
    r = run("flush", "--path", db, "--timeout", "2", "--json")
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout)
    assert out["ok"] is False and out["delivered"] == 0 and out["pending"] == 30 and out["dead"] == 0
    assert "503" in out["last_error"]
    assert sgp_env.requests >= 1 and len(sgp_env.spans) == 0
    st = json.loads(run("stats", "--json", "--path", db).stdout)
    assert st["pending"] == 30 and st["dropped_total"] == 0 and st["inflight"] == 0
    assert "503" in st["last_error"]

    sgp_env.fail_status = None
    r = run("flush", "--path", db, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["delivered"] == 30
    assert len(sgp_env.spans) == 30
    st = json.loads(run("stats", "--json", "--path", db).stdout)
    assert st["pending"] == 0 and st["last_error"] is None  # cleared by the next success, in another process too


def test_flush_human_output_when_spans_remain(db: Path, sgp_env: Receiver) -> None:
    sgp_env.fail_status = 503
    r = run("flush", "--path", db, "--timeout", "2")
    assert r.exit_code == 1
    assert "30 still pending" in r.stdout
    assert "last error: HTTP 503" in r.stderr


def test_flush_without_credentials_exit_2(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SGP_API_KEY", "SGP_ACCOUNT_ID", "SGP_CLIENT_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    r = run("flush", "--path", db)
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: no Scale GP credentials")
    assert "SGP_API_KEY" in lines[0]
    assert json.loads(run("stats", "--json", "--path", db).stdout)["pending"] == 30


def test_flush_usage_errors_exit_2(tmp_path: Path, db: Path, sgp_env: Receiver) -> None:
    missing = tmp_path / "missing.db"
    r = run("flush", "--path", missing)
    assert r.exit_code == 2 and r.stderr == f"Error: no spool at {missing}\n"
    assert not missing.exists()
    r = run("flush", "--path", db, "--batch-size", "0")
    assert r.exit_code == 2 and r.stderr == "Error: --batch-size must be 1..1000, got 0\n"
    r = run("flush", "--path", db, "--batch-size", "1001")
    assert r.exit_code == 2
    assert sgp_env.requests == 0


# -- dead letters -----------------------------------------------------------------------------------------------


def poison(it: dict[str, Any]) -> str | None:
    return "name 'poison' is not allowed" if it.get("name") == "poison" else None


@pytest.fixture
def dead_db(tmp_path: Path, sgp_env: Receiver) -> Path:
    """A spool where one span of 10 went to the dead letters through the real drainer (the receiver 422s it)."""
    p = tmp_path / "dead.db"
    store_items(p, [item(i, name="poison" if i == 4 else None) for i in range(10)])
    sgp_env.reject_if = poison
    r = run("flush", "--path", p, "--json")
    assert r.exit_code == 3, r.output  # nothing pending (dead letters do not count), but the server refused a span
    assert json.loads(r.stdout) == {
        "ok": True,
        "delivered": 9,
        "refused": 1,
        "pending": 0,
        "dead": 1,
        "last_error": None,
    }
    assert len(sgp_env.spans) == 9
    r = run("flush", "--path", p)  # again: nothing new refused, exit 0
    assert (
        r.exit_code == 0 and r.stdout.strip() == "delivered 0 spans; nothing pending; 1 dead letter (spool dead list)"
    )
    return p


def test_flush_says_what_the_server_refused_and_exits_3(tmp_path: Path, sgp_env: Receiver) -> None:
    p = tmp_path / "spans.db"
    store_items(p, [item(i, name="poison" if i in (2, 7) else None) for i in range(50)])
    sgp_env.reject_if = poison
    r = run("flush", "--path", p)
    assert r.exit_code == 3, r.output
    assert r.stdout.startswith("delivered 48 spans; 2 spans refused by the server: spool dead list; nothing pending")


def dead_list(p: Path) -> list[dict[str, Any]]:
    r = run("dead", "list", "--json", "--path", p)
    assert r.exit_code == 0, r.output
    out: list[dict[str, Any]] = json.loads(r.stdout)
    return out


def test_dead_list_json_and_table(dead_db: Path) -> None:
    letters = dead_list(dead_db)
    assert len(letters) == 1
    (d,) = letters
    assert set(d) == DEAD_KEYS
    assert (d["trace_id"], d["span_id"], d["name"], d["status"]) == ("t1", "s4", "poison", 422)
    assert "name 'poison' is not allowed" in d["detail"]
    assert d["attempts"] >= 1
    assert re.match(r"\d{4}-\d\d-\d\dT", d["failed_at"])
    r = run("dead", "list", "--path", dead_db)
    assert r.exit_code == 0
    for word in ("id", "trace", "span id", "name", "status", "detail", "attempts", "failed at", "poison", "422"):
        assert word in r.stdout
    assert json.loads(run("stats", "--json", "--path", dead_db).stdout)["dead"] == 1


def test_dead_list_limit_and_empty(tmp_path: Path, dead_db: Path) -> None:
    assert run("dead", "list", "--json", "--limit", "0", "--path", dead_db).stdout.strip() == "[]"
    empty = tmp_path / "empty.db"
    store_items(empty, [])
    r = run("dead", "list", "--path", empty)
    assert r.exit_code == 0 and "no dead letters" in r.stdout
    assert run("dead", "list", "--json", "--path", empty).stdout.strip() == "[]"


def test_dead_retry_after_the_fix_delivers_it(dead_db: Path, sgp_env: Receiver) -> None:
    (d,) = dead_list(dead_db)
    sgp_env.reject_if = None
    r = run("dead", "retry", str(d["id"]), "--path", dead_db)
    assert r.exit_code == 0, r.output
    assert "moved 1 dead letter back to pending" in r.stdout
    assert dead_list(dead_db) == []
    assert json.loads(run("stats", "--json", "--path", dead_db).stdout)["pending"] == 1
    r = run("flush", "--path", dead_db, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["delivered"] == 1
    got = sgp_env.spans[("t1", "s4")]
    assert got["name"] == "poison" and got["end_timestamp"]


def test_dead_retry_all(dead_db: Path) -> None:
    r = run("dead", "retry", "--all", "--path", dead_db)
    assert r.exit_code == 0 and "moved 1 dead letter back to pending" in r.stdout
    assert dead_list(dead_db) == []


def test_dead_retry_never_sends_a_start_after_its_end(tmp_path: Path, sgp_env: Receiver) -> None:
    """A 422 period for starts sends them to the dead letters while their ends are delivered; `dead retry --all`
    as the README suggests removes those starts instead of sending them after their ends (on main: 100 of 100)."""
    p = tmp_path / "spans.db"
    store_items(p, [item(i, end=False) for i in range(100)])
    # (each refusal names its span, as a validation error does: refused alike, they would be a request-level refusal)
    sgp_env.reject_if = lambda it: None if it.get("end_timestamp") else f"the start of {it['id']} is refused today"
    assert json.loads(run("flush", "--path", p, "--json").stdout)["dead"] == 100
    sgp_env.reject_if = None
    store_items(p, [item(i) for i in range(100)])
    assert json.loads(run("flush", "--path", p, "--json").stdout)["delivered"] == 100
    store_items(p, [item(100, end=False)])
    r = run("dead", "retry", "--all", "--path", p)
    assert r.exit_code == 0, r.output
    assert "moved 0 dead letters back to pending" in r.stdout
    assert "removed 100 dead starts whose end the server has" in r.stdout
    assert json.loads(run("flush", "--path", p, "--json").stdout)["delivered"] == 1
    sent_starts = [i for _, i, is_end in sgp_env.received_ids if not is_end]
    assert sent_starts == ["s100"]  # a start of a span not ended is sent as usual
    assert dead_list(p) == []


def test_dead_unknown_ids_change_nothing(dead_db: Path) -> None:
    (d,) = dead_list(dead_db)
    for verb in ("retry", "purge"):
        r = run("dead", verb, str(d["id"]), "9007", "9009", "--path", dead_db)
        assert r.exit_code == 2
        assert r.stderr == "Error: no dead letter with id 9007, 9009\n"
        assert len(dead_list(dead_db)) == 1
    assert json.loads(run("stats", "--json", "--path", dead_db).stdout)["pending"] == 0


def test_dead_usage_errors(tmp_path: Path, dead_db: Path) -> None:
    for args in (("retry",), ("purge",), ("retry", "1", "--all"), ("purge", "1", "--all")):
        r = run("dead", *args, "--path", dead_db)
        assert r.exit_code == 2, args
        assert r.stderr.startswith("Error: "), args
    r = run("dead", "purge", "--older-than", "7x", "--path", dead_db)
    assert r.exit_code == 2 and "invalid duration '7x'" in r.stderr
    missing = tmp_path / "missing.db"
    r = run("dead", "list", "--path", missing)
    assert r.exit_code == 2 and r.stderr == f"Error: no spool at {missing}\n"
    assert len(dead_list(dead_db)) == 1


def test_dead_purge_older_than_by_id_and_all(dead_db: Path) -> None:
    r = run("dead", "purge", "--older-than", "1h", "--path", dead_db)
    assert r.exit_code == 0 and "purged 0 dead letters older than 1h" in r.stdout
    assert len(dead_list(dead_db)) == 1
    (d,) = dead_list(dead_db)
    r = run("dead", "purge", str(d["id"]), "--path", dead_db)
    assert r.exit_code == 0 and "purged 1 dead letter" in r.stdout
    assert dead_list(dead_db) == []
    r = run("dead", "purge", "--all", "--path", dead_db)
    assert r.exit_code == 0 and "purged 0 dead letters" in r.stdout
    st = json.loads(run("stats", "--json", "--path", dead_db).stdout)
    assert st["dead"] == 0 and st["pending"] == 0  # purged, not retried


def test_dead_purge_older_than_zero_purges(dead_db: Path) -> None:
    r = run("dead", "purge", "--older-than", "0s", "--path", dead_db)
    assert r.exit_code == 0 and "purged 1 dead letter older than 0s" in r.stdout
    assert dead_list(dead_db) == []


# -- check ------------------------------------------------------------------------------------------------------


def test_check_healthy_file(db: Path) -> None:
    r = run("check", "--path", db)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("ok")
    r = run("check", "--full", "--path", db)
    assert r.exit_code == 0 and "integrity_check" in r.stdout


def test_check_missing_and_damaged(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    r = run("check", "--path", missing)
    assert r.exit_code == 2 and r.stderr == f"Error: no spool at {missing}\n"
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    r = run("check", "--path", garbage)
    assert r.exit_code == 2 and r.stderr == f"Error: {garbage} is not a spool file\n"


def test_check_finds_damaged_pages(tmp_path: Path) -> None:
    p = tmp_path / "damaged.db"
    store_items(p, [item(i) for i in range(2000)])
    data = bytearray(p.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    for off in range(3 * page, len(data) - page, 2 * page):  # scribble over every other page after the schema
        data[off + 100 : off + 600] = os.urandom(500)
    p.write_bytes(bytes(data))
    r = run("check", "--path", p)
    assert r.exit_code == 1, r.output
    assert "problem" in r.stdout


# -- help -------------------------------------------------------------------------------------------------------


def _commands(cmd: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    sub = getattr(cmd, "commands", None)
    if sub:
        for name, c in sub.items():
            yield from _commands(c, (*prefix, name))
    else:
        yield prefix


def test_every_command_help_has_a_description_and_an_example() -> None:
    root = typer.main.get_command(APP)
    paths = list(_commands(root))
    for expected in (("stats",), ("flush",), ("check",), ("demo",), ("dead", "list"), ("dead", "retry")):
        assert expected in paths
    for path in [*paths, ("dead",)]:
        r = run(*path, "--help")
        assert r.exit_code == 0, path
        assert "Example" in r.stdout, path
        assert re.search(r"Example: spool \w", r.stdout), path
        usage_end = r.stdout.index("\n\n")
        assert r.stdout[usage_end:].strip(), path  # a description follows the usage line


# -- demo -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_exits_0_and_proves_every_span_arrived() -> None:
    """The real command as a process (~15-20 s): a receiver outage mid-run, the backlog replayed, nothing lost."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SGP_")}
    p = subprocess.run([sys.executable, "-c", MAIN, "demo"], capture_output=True, text=True, timeout=90, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "receiver DOWN" in out and "receiver back UP" in out
    m = re.search(r"delivered\s+([\d,]+) / ([\d,]+) spans at the receiver, all ended", out)
    assert m is not None, out
    assert m.group(1) == m.group(2) and int(m.group(1).replace(",", "")) > 500
    backlog = re.search(r"max backlog\s+([\d,]+) spans", out)
    assert backlog is not None and int(backlog.group(1).replace(",", "")) > 100
    assert re.search(r"duplicates\s+\d", out)
    assert "PASS" in out
    removed = re.search(r"removed the temporary files in (\S+)", out)
    assert removed is not None and not Path(removed.group(1)).exists()
    assert p.stderr == ""  # nothing noisy: no log lines, no warnings
