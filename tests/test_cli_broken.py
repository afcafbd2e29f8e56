"""When things are broken: the real `spool` executable against real damaged, empty and foreign files, and against
real receivers that refuse the key or answer 404. One `Error:` line, the contract's exit code, no traceback, and
the file left exactly as it was."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAST, span
from test_cli_ops import Proc

from spool import SGPSink, Spool, SpoolConfig
from spool._store import Store, spool_files
from spool.testing import Receiver

SPOOL = [str(Path(sys.executable).with_name("spool"))]
READERS = [["stats"], ["stats", "--json"], ["stats", "--json", "--detail"], ["dead", "list"], ["export", "-"]]


def spool_cmd(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SPOOL, *map(str, args)], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def make_spool(path: Path, n: int, **cfg: object) -> None:
    async def go() -> None:
        async with Spool(path, config=SpoolConfig(commit_interval=0.001, **cfg)) as sp:  # type: ignore[arg-type]
            for i in range(n):
                sp.put(span(i, trace=f"trace-{i % 7}", end=True, input={"prompt": "p" * 300}))
            await sp.commit()

    asyncio.run(go())


def damage(path: Path, *, first: int = 4, every: int = 2, pages: int | None = None) -> None:
    """Random bytes over every `every`-th page from page `first` (0-based; page 0 holds the schema), at most
    `pages` of them, table and index pages alike, as a bad disk would."""
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 16 * page
    for off in list(range(first * page, len(data) - page, every * page))[:pages]:
        data[off : off + page] = os.urandom(page)
    path.write_bytes(bytes(data))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """Every page but the schema damaged: whatever a command reads, SQLite reports it."""
    p = tmp_path / "damaged.db"
    make_spool(p, 3000)
    damage(p, first=1, every=1)
    return p


@pytest.fixture
def half_damaged(tmp_path: Path) -> Path:
    """8 KB of random bytes in the middle of the file: the rows on those pages are lost, the rest can be read."""
    p = tmp_path / "damaged.db"
    make_spool(p, 3000)
    middle = p.stat().st_size // 2 // 4096
    damage(p, first=middle, every=1, pages=2)
    return p


@pytest.fixture
def sgp(receiver: Receiver) -> dict[str, str]:
    return {"SGP_API_KEY": "k", "SGP_ACCOUNT_ID": "a", "SGP_CLIENT_BASE_URL": receiver.url}


def assert_one_error(r: subprocess.CompletedProcess[str], line: str, code: int = 2) -> None:
    assert r.returncode == code, (r.stdout, r.stderr)
    assert r.stderr == f"Error: {line}\n"
    assert "Traceback" not in r.stdout + r.stderr


# -- a damaged file ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [*READERS, ["flush"], ["import", "-"]], ids=" ".join)
def test_every_command_on_a_damaged_file_says_recover_and_leaves_it(
    args: list[str], damaged: Path, sgp: dict[str, str]
) -> None:
    before = digest(damaged)
    r = subprocess.run(
        [*SPOOL, *args, "--path", str(damaged)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **sgp},
        input=json.dumps(span(1, end=True)) + "\n" if args[0] == "import" else "",
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith(f"Error: {damaged} is damaged (")
    assert r.stderr.endswith(f"); run: spool recover --path {damaged} --out NEW.db\n")
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert digest(damaged) == before


def test_check_reports_the_damage_and_the_way_out(damaged: Path) -> None:
    before = digest(damaged)
    r = spool_cmd("check", "--path", damaged)
    assert r.returncode == 1
    assert "problem:" in r.stdout
    assert f"spool recover --path {damaged} --out NEW.db" in r.stdout
    assert digest(damaged) == before


def test_recover_saves_what_is_readable_counts_the_rest_and_never_touches_the_source(
    half_damaged: Path, tmp_path: Path, receiver: Receiver, sgp: dict[str, str]
) -> None:
    damaged = half_damaged
    before = digest(damaged)
    new = tmp_path / "new.db"
    r = spool_cmd("recover", "--path", damaged, "--out", new)
    assert r.returncode == 1, r.stderr  # some rows were lost to the damage
    assert digest(damaged) == before
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    saved = int(r.stdout.split("saved ")[1].split(" pending")[0].replace(",", ""))
    lost = int(r.stdout.splitlines()[1].split(" row")[0].removeprefix("at least ").replace(",", ""))
    assert 0 < saved < 3000 and lost > 0
    assert saved + lost <= 3000
    rows = sqlite3.connect(new).execute("SELECT body FROM spans").fetchall()
    assert len(rows) == saved
    assert all(b'"prompt":"' + b"p" * 300 in body for (body,) in rows)  # the exact bytes, readable
    r = spool_cmd("flush", "--path", new, env=sgp)
    assert r.returncode == 0, r.stderr
    assert len(receiver.spans) == saved


def test_recover_keeps_the_spans_whose_shared_string_was_lost(tmp_path: Path) -> None:
    """200 spans carry one 17,000-character prompt, stored once (a shared string). A page holding it is damaged:
    `spool recover` saves all 200, the prompt replaced by "[lost in damage]", counted apart (on main: every span that
    referenced it was lost)."""
    prompt = ("You are a careful agent; answer briefly. " * 420).encode()
    p = tmp_path / "spans.db"

    async def go() -> None:
        async with Spool(p, config=SpoolConfig(commit_interval=0.001)) as sp:
            for i in range(200):
                sp.put(span(i, input={"system": prompt.decode()}))
            await sp.commit()

    asyncio.run(go())
    data = p.read_bytes()
    blob = sqlite3.connect(p).execute("SELECT count(*) FROM blobs").fetchone()[0]
    assert blob == 1
    outcomes = []
    pages = []  # where the prompt's bytes are: the first span stored whole, and the shared string
    at = data.find(prompt[:100])
    while at >= 0:
        pages.append(at // 4096)
        at = data.find(prompt[:100], at + 1)
    for at in sorted(set(pages), reverse=True):
        copy = tmp_path / f"damaged-{at}.db"
        copy.write_bytes(data[: at * 4096] + os.urandom(4096) + data[(at + 1) * 4096 :])
        new = tmp_path / f"new-{at}.db"
        r = spool_cmd("recover", "--path", copy, "--out", new)
        outcomes.append((r.returncode, r.stdout))
        if "saved with a lost string" in r.stdout:
            break
    code, out = outcomes[-1]
    assert code == 1 and "saved 200 pending spans" in out, outcomes
    assert "spans saved with a lost string ([lost in damage] in its place)" in out
    bodies = [bytes(b) for (b,) in sqlite3.connect(new).execute("SELECT body FROM spans")]
    lost = [b for b in bodies if b'"system":"[lost in damage]"' in b]
    assert len(bodies) == 200 and len(lost) >= 199  # (the first sight of the prompt is stored whole)
    assert int(out.split("\n")[1].split(" spans saved with")[0].split(", ")[-1]) == len(lost)


def test_recover_of_a_damaged_meta_page_says_the_totals_were_lost(tmp_path: Path) -> None:
    p = tmp_path / "spans.db"
    make_spool(p, 50)
    root = sqlite3.connect(p).execute("SELECT rootpage FROM sqlite_master WHERE name = 'meta'").fetchone()[0]
    data = p.read_bytes()
    p.write_bytes(data[: (root - 1) * 4096] + os.urandom(4096) + data[root * 4096 :])
    r = spool_cmd("recover", "--path", p, "--out", tmp_path / "new.db")
    assert r.returncode == 1, r.stderr
    assert "saved 50 pending spans" in r.stdout and "(totals: unreadable)" in r.stdout
    assert r.stdout.splitlines()[1].startswith("the totals could not be read (")  # not "0 rows could not be read"


def test_recover_of_a_sound_file_saves_everything_and_the_counters(tmp_path: Path, receiver: Receiver) -> None:
    src = tmp_path / "ok.db"
    make_spool(src, 50)
    asyncio.run(_deliver_some(src, receiver))
    new = tmp_path / "new.db"
    r = spool_cmd("recover", "--path", src, "--out", new)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"saved 0 pending spans and 0 dead letters into {new} (totals: delivered_total 50,")
    again = spool_cmd("recover", "--path", src, "--out", new)
    assert_one_error(again, f"{new} exists; recover writes a new spool file (choose another --out)")


async def _deliver_some(path: Path, receiver: Receiver) -> None:
    sink = SGPSink(api_key="k", account_id="a", base_url=receiver.url)
    async with Spool(path, sink=sink, config=FAST) as sp:
        assert await sp.flush(30)


def test_a_running_spool_that_meets_damage_moves_the_file_aside_and_goes_on(tmp_path: Path, receiver: Receiver) -> None:
    p = tmp_path / "spans.db"
    make_spool(p, 3000)  # closed cleanly: the next open does not check it
    damage(p)

    async def go() -> None:
        sink = SGPSink(api_key="k", account_id="a", base_url=receiver.url)
        async with Spool(p, sink=sink, config=FAST) as sp:
            st = await sp.stats()  # the count walks the damaged index
            assert st.last_error is not None and "is damaged" in st.last_error and "moved it aside" in st.last_error
            sp.put(span(9999, trace="after", end=True))
            assert await sp.flush(30)

    asyncio.run(go())
    assert ("after", "span-9999") in receiver.spans
    moved = [f for f in tmp_path.iterdir() if ".corrupt-" in f.name and not f.name.endswith(("-wal", "-shm"))]
    assert len(moved) == 1  # kept for `spool recover`
    assert spool_cmd("check", "--path", p).returncode == 0


# -- files that are not spools -------------------------------------------------------------------------------------


@pytest.fixture(params=["empty", "text", "foreign-sqlite"])
def not_a_spool(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    p = tmp_path / f"{request.param}.db"
    if request.param == "empty":
        p.write_bytes(b"")
    elif request.param == "text":
        p.write_text("hello\n" * 1000)
    else:
        db = sqlite3.connect(p)
        db.execute("CREATE TABLE notes (x)")
        db.commit()
        db.close()
    return p


@pytest.mark.parametrize("args", [*READERS, ["check"], ["flush"], ["recover", "--out", "NEW"]], ids=" ".join)
def test_a_file_that_is_not_a_spool_is_named_so_and_left_alone(
    args: list[str], not_a_spool: Path, sgp: dict[str, str]
) -> None:
    before = digest(not_a_spool)
    args = [a if a != "NEW" else str(not_a_spool.with_name("new.db")) for a in args]
    r = spool_cmd(*args, "--path", not_a_spool, env=sgp)
    assert_one_error(r, f"{not_a_spool} is not a spool file")
    assert digest(not_a_spool) == before
    assert not not_a_spool.with_name("new.db").exists()


def test_import_refuses_an_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    src = tmp_path / "in.jsonl"
    src.write_text('{"trace_id": "t", "id": "s", "name": "n", "start_timestamp": "2026-01-01T00:00:00Z"}\n')
    assert_one_error(spool_cmd("import", src, "--path", empty), f"{empty} is not a spool file")
    assert empty.stat().st_size == 0


# -- read commands only read ---------------------------------------------------------------------------------------


def test_read_commands_never_write_to_the_file(tmp_path: Path) -> None:
    p = tmp_path / "spans.db"
    make_spool(p, 100)
    before, mtime = digest(p), p.stat().st_mtime_ns
    for args in [*READERS, ["check"], ["check", "--full"]]:
        r = spool_cmd(*args, "--path", p)
        assert r.returncode == 0, (args, r.stderr)
    assert digest(p) == before and p.stat().st_mtime_ns == mtime
    wal = p.with_name(p.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # no transaction was written anywhere


def test_read_commands_ignore_spool_settings_they_do_not_use(tmp_path: Path, sgp: dict[str, str]) -> None:
    p = tmp_path / "spans.db"
    make_spool(p, 3)
    r = spool_cmd("stats", "--json", "--detail", "--path", p, env={"SPOOL_BATCH_SIZE": "5000"})
    assert r.returncode == 0, r.stderr
    r = spool_cmd("flush", "--path", p, env={**sgp, "SPOOL_BATCH_SIZE": "5000"})
    assert_one_error(r, "SPOOL_BATCH_SIZE=5000 is out of range (expected 1..1000)")


# -- futile flushes ------------------------------------------------------------------------------------------------


def test_flush_with_a_refused_key_stops_at_once_exit_2(tmp_path: Path, sgp: dict[str, str], receiver: Receiver) -> None:
    p = tmp_path / "spans.db"
    make_spool(p, 20)
    receiver.api_key = "the-right-key"
    r = spool_cmd("flush", "--timeout", "600", "--path", p, env=sgp)
    assert r.returncode == 2
    assert r.stderr.startswith("Error: credentials refused (HTTP 403") and r.stderr.count("\n") == 1
    assert receiver.requests <= 4  # a request or two per drainer, not retries until the 600 s timeout
    assert spool_cmd("stats", "--json", "--path", p).stdout.startswith('{"pending": 20,')


def test_flush_of_requests_refused_alike_stops_at_once_exit_2(
    tmp_path: Path, sgp: dict[str, str], receiver: Receiver
) -> None:
    """A collector that wants a header the sink does not send (MLflow's 422 without x-mlflow-experiment-id)."""
    p = tmp_path / "spans.db"
    make_spool(p, 20)
    receiver.fail_status, receiver.fail_count = 422, 10**6
    r = spool_cmd("flush", "--timeout", "600", "--path", p, env=sgp)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("Error: requests refused: HTTP 422: injected fault") and r.stderr.count("\n") == 1
    assert r.stderr.endswith("check SGP_API_KEY / SGP_ACCOUNT_ID / SGP_CLIENT_BASE_URL (spans kept)\n")
    assert receiver.requests <= 4
    assert spool_cmd("stats", "--json", "--path", p).stdout.startswith('{"pending": 20, "inflight": 0, "dead": 0,')


def test_flush_against_a_url_with_no_span_api_stops_at_once_exit_2(
    tmp_path: Path, sgp: dict[str, str], receiver: Receiver
) -> None:
    p = tmp_path / "spans.db"
    make_spool(p, 20)
    wrong = receiver.url + "/not-the-api"
    r = spool_cmd("flush", "--timeout", "600", "--path", p, env={**sgp, "SGP_CLIENT_BASE_URL": wrong})
    assert r.returncode == 2
    assert r.stderr.startswith(f"Error: no span API at {wrong}/v5/spans/batch (HTTP 404")
    assert r.stderr.endswith("fix SGP_CLIENT_BASE_URL (spans kept)\n")
    assert spool_cmd("stats", "--json", "--path", p).stdout.startswith('{"pending": 20,')


def test_flush_with_a_base_url_that_is_not_http_is_a_config_error(tmp_path: Path, sgp: dict[str, str]) -> None:
    p = tmp_path / "spans.db"
    make_spool(p, 2)
    r = spool_cmd("flush", "--path", p, env={**sgp, "SGP_CLIENT_BASE_URL": "127.0.0.1:8321"})
    assert_one_error(r, "SGP_CLIENT_BASE_URL='127.0.0.1:8321' is not an http(s) URL (e.g. http://127.0.0.1:8321)")


def test_flush_without_credentials_names_the_variables(tmp_path: Path) -> None:
    p = tmp_path / "spans.db"
    make_spool(p, 2)
    assert_one_error(spool_cmd("flush", "--path", p), "no Scale GP credentials: set SGP_API_KEY and SGP_ACCOUNT_ID")


def test_the_background_drainer_pauses_on_a_404_and_keeps_the_rows(tmp_path: Path, receiver: Receiver) -> None:
    async def go() -> None:
        sink = SGPSink(api_key="k", account_id="a", base_url=receiver.url + "/nope")
        async with Spool(tmp_path / "spans.db", sink=sink, config=FAST) as sp:
            sp.put(span(1, end=True))
            assert not await sp.flush(0.5)
            st = await sp.stats()
            assert st.pending == 1 and st.last_error is not None and "no span API at" in st.last_error
            assert sp.metrics()["retried"] == 0  # not an attempt: nothing to retry until the URL is fixed

    asyncio.run(go())


# -- messages that help ----------------------------------------------------------------------------------------------


def test_usage_errors_name_the_value(tmp_path: Path) -> None:
    p = tmp_path / "spans.db"
    make_spool(p, 1)
    r = spool_cmd("dead", "retry", "abc", "--path", p)
    assert r.returncode == 2 and "Error: Invalid value for 'ID...': 'abc' is not a valid int." in r.stderr
    r = spool_cmd("receiver", "--out", tmp_path / "no" / "such" / "x.jsonl")
    assert_one_error(r, f"cannot write --out {tmp_path / 'no' / 'such' / 'x.jsonl'}: No such file or directory")


def test_dead_list_limit_0_still_says_there_are_dead_letters(tmp_path: Path, receiver: Receiver) -> None:
    p = tmp_path / "spans.db"
    receiver.reject_if = lambda item: "bad" if item.get("name") == "step 1" else None

    async def go() -> None:
        sink = SGPSink(api_key="k", account_id="a", base_url=receiver.url)
        async with Spool(p, sink=sink, config=FAST) as sp:
            sp.put(span(1, end=True))
            await sp.flush(30)

    asyncio.run(go())
    r = spool_cmd("dead", "list", "--limit", "0", "--path", p)
    assert r.returncode == 0 and r.stdout == "showing 0 of 1 dead letter (--limit 0)\n"
    r = spool_cmd("dead", "retry", "--all", "--path", p)
    assert r.stdout == "moved 1 dead letter back to pending; run `spool flush` to send it now\n"


def test_files_holding_prompts_are_created_0600(tmp_path: Path) -> None:
    p = tmp_path / "spans.db"
    make_spool(p, 3)
    out = tmp_path / "out.jsonl"
    assert spool_cmd("export", out, "--path", p).returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    captured = tmp_path / "captured.jsonl"
    proc = Proc("receiver", "--port", "0", "--out", str(captured))
    try:
        proc.until(r"listening on")
        assert stat.S_IMODE(captured.stat().st_mode) == 0o600
    finally:
        proc.close()


def test_stats_watch_into_a_pipe_writes_one_plain_frame_per_interval(tmp_path: Path) -> None:
    p = tmp_path / "spans.db"
    make_spool(p, 3)
    proc = Proc("stats", "--watch", "--interval", "0.05", "--path", str(p))
    try:
        for _ in range(3):  # every frame arrives while the command runs, not only at the end
            proc.until(rf"^{p}   \d{{4}}-\d\d-\d\d")
            proc.until(r"^pending\s+3$")
    finally:
        proc.close()


def test_stats_watch_follows_the_path_when_the_file_is_moved_aside(tmp_path: Path) -> None:
    """What a running spool does with a damaged file (`<name>.corrupt-<time>`, then a fresh file): the watch shows
    the file now at the path, or that there is none, not the file that was moved."""
    p = tmp_path / "spans.db"
    make_spool(p, 3)
    proc = Proc("stats", "--watch", "--json", "--interval", "0.05", "--path", str(p))
    try:
        proc.until(r'^\{"pending": 3,')
        for f in spool_files(p):
            if f.exists():
                f.rename(f.with_name(f.name.replace("spans.db", "spans.db.corrupt-20261206T030000Z")))
        proc.until(rf'^\{{"error": "no spool at {p}"\}}$')
        make_spool(p, 5)
        proc.until(r'^\{"pending": 5,')
    finally:
        proc.close()


# -- conventions -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[*SPOOL, "--version"], [sys.executable, "-m", "spool", "--version"], [sys.executable, "-m", "spool.cli", "-V"]],
)
def test_version(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "spool (span-spool) 0.1.0\n"


def test_short_help_flag_and_a_top_level_example() -> None:
    r = spool_cmd("-h")
    assert r.returncode == 0 and "Examples:" in r.stdout and "spool flush --timeout" in r.stdout
    assert "..." not in r.stdout.split("Commands:")[1]  # no description cut short
    assert spool_cmd("dead", "list", "-h").returncode == 0


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    p = tmp_path / "spans.db"
    make_spool(p, 5)
    yield p


@pytest.mark.parametrize("args", [["--help"], ["check"], ["dead", "list"], ["export", "-"], ["flush", "--help"]])
def test_commands_that_send_nothing_never_load_pydantic_or_the_sdk(args: list[str], small: Path) -> None:
    code = (
        "import sys; from spool.cli import main; sys.argv = ['spool', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(m for m in ('pydantic', 'scale_gp_beta', 'httpx', 'rich') if m in sys.modules),"
        " file=sys.stderr)"
    )
    argv = [*args, "--path", str(small)] if args[-1] != "--help" else args
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    loaded = r.stderr.split("LOADED ")[1].strip()
    assert loaded == "[]", loaded


def test_flush_of_an_empty_spool_needs_no_sink_and_says_so(tmp_path: Path) -> None:
    p = tmp_path / "spans.db"
    make_spool(p, 0)
    r = spool_cmd("flush", "--path", p)  # no credentials: nothing to send, nothing to refuse
    assert r.returncode == 0 and r.stdout == "delivered 0 spans; nothing pending\n", r.stderr


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's own are 0700 under root's), removed afterwards."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="spool-ro-"))
    d.chmod(0o755)
    yield d
    for p in (d, *d.rglob("*")):
        p.chmod(0o755 if p.is_dir() else 0o644)
    shutil.rmtree(d)


def _in_cli(argv: list[str], env: dict[str, str]) -> dict[str, object]:
    """`spool ARGV` in this (forked) process: its exit code and what it wrote to stdout and stderr."""
    import contextlib
    import io

    from spool.cli import main

    os.environ.update(env)
    sys.argv = ["spool", *argv]
    out, err = io.StringIO(), io.StringIO()
    code: object = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


@pytest.mark.parametrize("dir_mode", [0o777, 0o755], ids=["writable-dir", "read-only-dir"])
def test_a_read_only_file_is_one_spool_error_and_stays_as_it_was(
    reachable_dir: Path, sgp: dict[str, str], dir_mode: int
) -> None:
    """The file (and maybe its directory) cannot be written by this user: `Spool()` raises `SpoolError`, never a
    raw sqlite3 error; `spool flush` prints one `Error:` line, exit 2; `spool stats` reads it; the rows are all still
    there."""
    from conftest import in_fork

    from spool import SpoolError

    path = reachable_dir / "spans.db"
    make_spool(path, 5)
    before = digest(path)
    path.chmod(0o444)
    reachable_dir.chmod(dir_mode)

    def child() -> dict[str, object]:
        try:
            Spool(path)
        except SpoolError as exc:
            raised = f"SpoolError: {exc}"
        except Exception as exc:
            raised = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
        else:
            raised = "nothing"
        stats = _in_cli(["stats", "--json", "--path", str(path)], sgp)
        return {"raised": raised, "stats": stats, **_in_cli(["flush", "--path", str(path)], sgp)}

    out = in_fork(child, unprivileged=True)
    assert out["stats"]["code"] == 0 and json.loads(out["stats"]["stdout"])["pending"] == 5  # type: ignore[index]
    assert out["raised"] == f"SpoolError: cannot open {path}: attempt to write a readonly database"
    assert out["code"] == 2
    assert out["stderr"] == f"Error: cannot open {path}: attempt to write a readonly database\n"
    assert digest(path) == before
    store = Store(path, readonly=True)
    assert store.counts()[0] == 5
    store.close()


# -- commands that write, on a matrix of damaged pages ----------------------------------------------------------


def _spool_with_everything(path: Path) -> None:
    """2,000 rows over every kind of page: spans and their unique index, shared strings (a 5,000-character prompt
    in 20 spans of 17 KB), dead letters, meta, the record of delivered ends."""
    prompt = "You are a careful agent. " * 200

    async def go() -> None:
        async with Spool(path, config=SpoolConfig(commit_interval=0.001)) as sp:
            for i in range(2000):
                big = i % 100 == 0
                sp.put(span(i, trace=f"trace-{i % 7}", end=i % 3 == 0, input={"prompt": prompt if big else "p" * 300}))
                if big:
                    sp.put(span(i, trace=f"trace-{i % 7}", input={"prompt": prompt, "pad": "x" * 12000}))
            await sp.commit()

    asyncio.run(go())
    store = Store(path, create=False)
    try:
        for row in store.claim("test", 5, 60):
            store.to_dead(row, 422, "refused")
        store.release_owner("test")
    finally:
        store.close()


def _quick_check_finds_damage(path: Path) -> bool:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return [r[0] for r in db.execute("PRAGMA quick_check")] != ["ok"]
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return True


WRITERS = [["import", "-"], ["dead", "purge", "--all"], ["dead", "retry", "--all"], ["flush", "--timeout", "5"]]


def test_commands_that_write_leave_a_damaged_file_byte_identical(
    tmp_path: Path, sgp: dict[str, str], receiver: Receiver
) -> None:
    """One page of random bytes at a time, over ~30 pages spread through the file (the schema, table and index
    leaves, interior pages, shared strings, dead letters): every command that writes checks the whole file first,
    and on a file SQLite finds damaged says the recover line, exit 2, and leaves it byte for byte."""
    from typer.testing import CliRunner

    from spool.cli import _register, app

    _register()
    sound = tmp_path / "sound.db"
    _spool_with_everything(sound)
    data = sound.read_bytes()
    pages = len(data) // 4096
    detected = 0
    for page in sorted({0, 1, 2, *range(3, pages, max(1, pages // 28))}):
        p = tmp_path / f"page-{page}.db"
        p.write_bytes(data[: page * 4096] + os.urandom(4096) + data[(page + 1) * 4096 :])
        damaged = _quick_check_finds_damage(p)
        detected += damaged
        for args in WRITERS:
            before = digest(p)
            r = CliRunner().invoke(
                app, [*args, "--path", str(p)], input=json.dumps(span(99999)) + "\n", env=sgp, catch_exceptions=False
            )
            if damaged:
                assert r.exit_code == 2, (page, args, r.output)
                assert f"Error: {p} is damaged (" in r.stderr or f"Error: {p} is not a spool file" in r.stderr
                assert digest(p) == before, (page, args)
            assert "Traceback" not in r.output
    assert detected >= 25  # the check had damage to find
    assert len(receiver.spans) == 0  # nothing was sent from a damaged file


@pytest.mark.parametrize("where", ["start-up", "command"])
def test_ctrl_c_at_any_moment_exits_130_with_one_line(tmp_path: Path, where: str) -> None:
    p = tmp_path / "spans.db"
    make_spool(p, 3)
    interrupt = (
        "c._register = lambda *a: (_ for _ in ()).throw(KeyboardInterrupt())"  # while the commands load
        if where == "start-up"
        else "from spool._store import Store; Store.check = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())"
    )
    code = f"import sys, spool.cli as c\n{interrupt}\nsys.argv = ['spool', 'check', '--path', {str(p)!r}]\nc.main()"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 130, r.stderr
    assert r.stderr == "Error: interrupted\n"
