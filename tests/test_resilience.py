"""A spool that heals itself: the disk cap, a full disk, corrupt files, space given back, migrations, permissions.

Real SQLite files in tmp_path, the real receiver and SGPSink; failures are made for real (RLIMIT_FSIZE, garbage
bytes, a second connection holding the lock), never mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import FAST, SCHEMA_1, RecordingSleep, span, until

from spool import SGPSink, Spool, SpoolConfig, SpoolError, SpoolSchemaError, SpoolStats
from spool import _schema as schema_mod
from spool import _store as store_mod
from spool._heal import move_aside
from spool._items import encode_item
from spool._store import Store, row_cost, spool_files
from spool.testing import Receiver

PAD = "x" * 900  # ~1 KB encoded spans


def big(i: int, trace: str | None = None, **extra: object) -> dict[str, object]:
    return span(i, trace=trace or f"trace-{i % 50}", metadata={"pad": PAD}, **extra)


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in spool_files(path) if f.exists())


def stored_ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT span_id FROM spans")}


def corrupt_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".corrupt-*"))


# -- the disk cap ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest"])
def test_cap_20000_items_into_2_mb(spool_path: Path, overflow: str) -> None:
    cap = 2 * 1024 * 1024
    cfg = SpoolConfig(max_bytes=cap, overflow=overflow, commit_interval=0.001)  # type: ignore[arg-type]
    one_commit = store_mod.wal_limit(cap) + row_cost(encode_item(big(0), 1 << 20))  # one transaction
    peak = 0

    async def main() -> None:
        nonlocal peak
        async with Spool(spool_path, config=cfg) as sp:
            for i in range(20_000):
                sp.put(big(i))  # never raises, whatever the cap does
                if i % 250 == 249:
                    await sp.commit()
                    peak = max(peak, disk_bytes(spool_path))
            await sp.commit()
            st = await sp.stats()
            assert st.pending + st.dropped_total == 20_000  # every span is either stored or counted as dropped
            assert 0 < st.pending < 2_000 and st.dropped_total > 18_000
            assert st.db_bytes <= cap + one_commit
            assert sp.metrics(gauges=False)["dropped_overflow"] == st.dropped_total

    asyncio.run(main())
    assert peak <= cap + one_commit, (peak, cap, one_commit)
    assert peak <= cap * 1.05
    ids = stored_ids(spool_path)
    most = len(ids) * 9 // 10
    # drop_newest keeps (nearly all of) the first spans put, drop_oldest the last ones
    kept, gone = (range(most), 19_999) if overflow == "drop_newest" else (range(20_000 - most, 20_000), 0)
    assert {f"span-{i}" for i in kept} <= ids and f"span-{gone}" not in ids


@pytest.mark.parametrize(("cap", "reads"), [(256 * 1024, False), (1024 * 1024, False), (256 * 1024, True)])
def test_the_cap_holds_within_5_percent_with_the_wal_while_draining(
    spool_path: Path, receiver: Receiver, sink: SGPSink, cap: int, reads: bool
) -> None:
    """Producers outrun a slow backend, so the spool sits at its cap while the drainer claims and deletes: the three
    files together never pass the cap by more than 5% (a thread samples them; once 9.8 MB for an 8 MiB cap). With
    `reads`, a monitor calls `stats()` all along: a read holds the WAL, so deletes near the cap wait for it (once
    +40% on a 256 KiB cap)."""
    receiver.latency = 0.005
    cfg = replace(FAST, max_bytes=cap, flush_interval=0.05)
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(FileNotFoundError):
                peak[0] = max(peak[0], disk_bytes(spool_path))
            time.sleep(0.0005)

    async def main() -> SpoolStats:
        async with Spool(spool_path, sink=sink, config=cfg) as sp:
            sampler.start()

            async def monitor() -> None:
                while True:
                    await sp.stats()

            watching = asyncio.get_running_loop().create_task(monitor()) if reads else None
            i = 0
            while sp.metrics(gauges=False)["delivered"] < 300 or not sp.metrics(gauges=False)["dropped"]:
                for _ in range(50):
                    sp.put(big(i))
                    i += 1
                await asyncio.sleep(0.005)
            if watching is not None:
                watching.cancel()
            return await sp.stats()

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        st = asyncio.run(main())
    finally:
        done.set()
    sampler.join()
    assert st.dropped_total > 0 and st.delivered_total >= 300  # at the cap, and draining
    assert 0 < peak[0] <= cap * 1.05, (peak[0], cap)


def test_cap_always_takes_the_end_of_a_stored_span(spool_path: Path) -> None:
    cfg = SpoolConfig(max_bytes=1024 * 1024, commit_interval=0.001)

    async def main() -> None:
        async with Spool(spool_path, config=cfg) as sp:
            sp.put(big(0))
            for i in range(1, 3000):
                sp.put(big(i))
            await sp.commit()
            full = await sp.stats()
            assert full.dropped_total > 0
            sp.put(big(0, end_timestamp="2026-11-28T10:00:05+00:00"))  # the end of a span already stored
            sp.put(big(5000))  # a new span: refused
            await sp.commit()
            st = await sp.stats()
            assert st.dropped_total == full.dropped_total + 1
            assert st.pending == full.pending

    asyncio.run(main())
    with sqlite3.connect(spool_path) as db:
        (is_end,) = db.execute("SELECT is_end FROM spans WHERE span_id = 'span-0'").fetchone()
    assert is_end == 1


def test_drop_oldest_never_evicts_rows_in_flight(spool_path: Path) -> None:
    cfg = SpoolConfig(max_bytes=1024 * 1024, overflow="drop_oldest")
    store = Store(spool_path, cfg)
    try:
        store.append([encode_item(big(i), 1 << 20) for i in range(100)])
        held = store.claim("other-drainer", 50, 60.0)  # the oldest, leased by a live drainer
        lost = sum(store.append([encode_item(big(i), 1 << 20) for i in range(j, j + 50)]) for j in range(100, 3000, 50))
        ids = {r[0] for r in store._db.execute("SELECT span_id FROM spans")}
        assert 0 < len(held) < 100  # a claim takes at most `claim_bytes` of bodies (the WAL's share of a small cap)
        assert {f"span-{i}" for i in range(len(held))} <= ids  # in flight: kept
        assert f"span-{len(held)}" not in ids and "span-2999" in ids  # the oldest not in flight went first
        assert store.stats().dropped_total == lost == 3000 - store.stats().pending
    finally:
        store.close()


# -- a full disk and a lock held elsewhere ------------------------------------------------------------------

_DISK_FULL_CHILD = textwrap.dedent(
    """
    import asyncio, json, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing us
    from spool import Spool, SpoolConfig

    def item(i):
        return {"trace_id": "t", "id": f"s{i}", "name": "n", "start_timestamp": "2026-01-01T00:00:00+00:00",
                "metadata": {"pad": "x" * 900}}

    async def main():
        put = 0
        async with Spool(sys.argv[1], config=SpoolConfig(commit_interval=0.001)) as sp:
            for _ in range(20):
                sp.put(item(put)); put += 1
            await sp.commit()
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, hard))  # the disk is full at 512 KiB a file
            full = None
            while full is None or full.dropped_total < 500:
                for _ in range(100):
                    sp.put(item(put)); put += 1
                await sp.commit()
                st = await sp.stats()
                if st.last_error is not None:  # (a tiny commit, e.g. of the drop count alone, may still fit)
                    full = st
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space comes back
            for _ in range(10):
                sp.put(item(put)); put += 1
            await sp.commit()
            after = await sp.stats()
        print(json.dumps({"put": put, "full_error": full.last_error, "full_dropped": full.dropped_total,
                          "after_error": after.last_error, "after_dropped": after.dropped_total}))

    asyncio.run(main())
    """
)


def test_disk_full_child_keeps_running_and_counts_drops(spool_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _DISK_FULL_CHILD, str(spool_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["full_dropped"] >= 500
    assert "commit failed" in out["full_error"] and "spans dropped" in out["full_error"]
    assert out["after_error"] is None  # recovered once space came back
    assert proc.stderr.count("spans dropped (") == 1  # logged with the count, at most once a minute
    store = Store(spool_path, create=False)
    try:
        assert store.check() == []  # the file opens cleanly and is sound
        st = store.stats()
        assert st.dropped_total == out["after_dropped"] >= out["full_dropped"]  # the in-memory count was saved
        assert st.pending + st.dropped_total == out["put"]  # every span put is stored or counted
    finally:
        store.close()


def test_read_only_connection_drops_are_counted_then_saved_on_recovery(spool_path: Path) -> None:
    async def main() -> None:
        async with Spool(spool_path, config=FAST) as sp:
            sp.put(span(0))
            await sp.commit()
            sp._store._db.execute("PRAGMA query_only = ON")  # every write now fails with SQLITE_READONLY
            for i in range(1, 4):
                sp.put(span(i))
            await sp.commit()  # returns: the producer never sees the failure
            st = await sp.stats()
            assert st.dropped_total == 3 and st.pending == 1
            assert st.last_error is not None and "readonly" in st.last_error
            sp._store._db.execute("PRAGMA query_only = OFF")
            sp.put(span(9))
            await sp.commit()
            st = await sp.stats()
            assert (st.dropped_total, st.pending, st.last_error) == (3, 2, None)
        store = Store(spool_path, create=False)
        try:
            assert store.stats().dropped_total == 3  # written with the first commit that succeeded
        finally:
            store.close()

    asyncio.run(main())


def test_a_lock_held_elsewhere_is_waited_out_not_dropped(spool_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with Spool(spool_path, config=FAST) as sp:
            sp._store._db.execute("PRAGMA busy_timeout = 20")  # SQLite's own wait, shortened so ours is reached
            other = sqlite3.connect(spool_path, isolation_level=None, check_same_thread=False)
            other.execute("BEGIN IMMEDIATE")
            sp.put(span(1))
            commit = asyncio.ensure_future(sp.commit())
            deadline = time.monotonic() + 10
            while "is locked by another connection" not in caplog.text:
                assert time.monotonic() < deadline, "the writer never reported the lock"
                await asyncio.sleep(0.01)
            assert not commit.done()
            other.execute("COMMIT")
            other.close()
            await asyncio.wait_for(commit, 10)
            st = await sp.stats()
            assert (st.pending, st.dropped_total, st.last_error) == (1, 0, None)

    with caplog.at_level(logging.WARNING, logger="spool"):
        asyncio.run(main())


# -- corrupt, foreign and newer files -----------------------------------------------------------------------


def test_garbage_file_is_moved_aside_and_a_fresh_spool_works(
    spool_path: Path, receiver: Receiver, sink: SGPSink, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = os.urandom(3000) + b"not a database" * 100
    spool_path.write_bytes(garbage)
    spool_path.with_name(spool_path.name + "-wal").write_bytes(b"wal junk")

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=FAST) as sp:
            st = await sp.stats()
            assert st.last_error is not None and ".corrupt-" in st.last_error
        async with Spool(spool_path, sink=sink, config=FAST) as sp:  # persisted in the fresh file
            st = await sp.stats()
            assert st.last_error is not None and ".corrupt-" in st.last_error
            sp.put(span(1))
            assert await sp.flush(timeout=10)

    with caplog.at_level(logging.ERROR, logger="spool"):
        asyncio.run(main())
    assert receiver.wait_for(1)
    moved = corrupt_files(spool_path)
    db = [m for m in moved if not m.name.endswith(("-wal", "-shm"))]
    assert len(db) == 1 and db[0].read_bytes() == garbage  # never deleted, bytes untouched
    assert Path(str(db[0]) + "-wal").read_bytes() == b"wal junk"
    assert db[0].name.startswith("spans.db.corrupt-") and len(db[0].name) == len("spans.db.corrupt-20260101T000000Z")
    # The delivery cleared last_error; the stats table still tells the operator which file was moved aside.
    table = subprocess.run(
        [sys.executable, "-m", "spool.cli", "stats", "--path", str(spool_path)], capture_output=True, text=True
    )
    assert table.returncode == 0, table.stderr
    assert "moved aside" in table.stdout and db[0].name in table.stdout
    assert re.search(r"^last error\s+-$", table.stdout, re.M)
    assert str(db[0]) in caplog.text  # the log names the moved file
    store = Store(spool_path, create=False)
    try:
        assert str(db[0]) in store.meta("moved_aside")  # persisted (`last_error` too, until a delivery succeeds)
        assert store.check() == []
    finally:
        store.close()


def test_foreign_sqlite_database_is_moved_aside(spool_path: Path) -> None:
    with sqlite3.connect(spool_path) as db:
        db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
        db.execute("INSERT INTO accounts (owner) VALUES ('someone')")
    original = spool_path.read_bytes()

    async def main() -> None:
        async with Spool(spool_path) as sp:
            sp.put(span(1))
            await sp.commit()
            assert (await sp.stats()).pending == 1

    asyncio.run(main())
    moved = corrupt_files(spool_path)
    assert [m.read_bytes() for m in moved] == [original]


def _damage_after_crash(path: Path) -> None:
    """A spool with rows whose last close was not clean, then pages in the middle of the file overwritten."""
    store = Store(path)
    store.append([encode_item(big(i), 1 << 20) for i in range(300)])
    store.set_meta("clean_close", 0)
    store.close()
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(4096 * 3))


def test_damaged_pages_after_a_crash_are_moved_aside(spool_path: Path) -> None:
    _damage_after_crash(spool_path)
    damaged = spool_path.read_bytes()

    async def main() -> None:
        async with Spool(spool_path) as sp:
            st = await sp.stats()
            assert st.pending == 0 and "failed its integrity check" in (st.last_error or "")

    asyncio.run(main())
    assert [m.read_bytes() for m in corrupt_files(spool_path)] == [damaged]


def test_clean_close_is_recorded(spool_path: Path) -> None:
    async def main() -> None:
        async with Spool(spool_path) as sp:
            assert sp._store.meta("clean_close") == 0  # in use: a crash now means a check at the next open

    asyncio.run(main())
    store = Store(spool_path, create=False)
    try:
        assert store.meta("clean_close") == 1
    finally:
        store.close()


def test_newer_schema_raises_naming_both_versions_and_is_left_alone(spool_path: Path) -> None:
    Store(spool_path).close()
    with sqlite3.connect(spool_path) as db:
        db.execute(f"PRAGMA user_version = {store_mod.SCHEMA_VERSION + 5}")
    before = spool_path.read_bytes()
    with pytest.raises(SpoolSchemaError) as info:
        Spool(spool_path)
    assert f"version {store_mod.SCHEMA_VERSION + 5}" in str(info.value)
    assert f"this span-spool's {store_mod.SCHEMA_VERSION}" in str(info.value)
    assert spool_path.read_bytes() == before and corrupt_files(spool_path) == []


def test_cli_read_commands_never_move_a_file(spool_path: Path) -> None:
    from typer.testing import CliRunner

    import spool.cli
    from spool.cli import app

    spool.cli._register()
    spool_path.write_bytes(b"garbage" * 1000)
    result = CliRunner().invoke(app, ["stats", "--path", str(spool_path), "--json"])
    assert result.exit_code == 2
    assert "Error:" in result.output
    assert spool_path.read_bytes() == b"garbage" * 1000 and corrupt_files(spool_path) == []


def test_unopenable_path_raises_and_moves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "adir"
    path.mkdir()
    with pytest.raises((SpoolError, OSError)):
        Spool(path)
    assert path.is_dir() and corrupt_files(path) == []


def test_move_aside_never_overwrites(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    path = tmp_path / "s.db"
    names = []
    for content in (b"one", b"two"):
        path.write_bytes(content)
        names.append(move_aside(path, now))
    assert [n.name for n in names] == ["s.db.corrupt-20260102T030405Z", "s.db.corrupt-20260102T030405Z-1"]
    assert [n.read_bytes() for n in names] == [b"one", b"two"]


# -- space given back ---------------------------------------------------------------------------------------


def test_50000_spans_flushed_file_shrinks_to_10_mb(spool_path: Path, sink: SGPSink, receiver: Receiver) -> None:
    cfg = SpoolConfig(commit_interval=0.001, batch_size=500, max_inflight=4, flush_interval=60)
    sizes: dict[str, int] = {}

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=cfg) as sp:
            receiver.refuse()  # an outage while the backlog builds
            for i in range(50_000):
                sp.put(big(i, trace=f"t{i % 97}"))
                if i % 5000 == 4999:
                    await sp.commit()
            await sp.commit()
            sizes["full"] = (await sp.stats()).db_bytes
            receiver.resume()
            assert await sp.flush(timeout=120)
            st = await sp.stats()
            sizes["drained"] = st.db_bytes
            assert st.pending == 0 and st.delivered_total == 50_000

    asyncio.run(main())
    assert sizes["full"] > 50_000_000
    assert sizes["drained"] <= 10 * 1024 * 1024, sizes


def test_reclaim_gives_free_pages_back_in_steps(spool_path: Path) -> None:
    store = Store(spool_path)
    try:
        store.append([encode_item(big(i), 1 << 20) for i in range(10_000)])
        store._db.execute("DELETE FROM spans")
        before = spool_path.stat().st_size
        steps = []
        while n := store.reclaim(256):
            steps.append(n)
        assert steps and max(steps) <= 256  # one short transaction per step
        assert spool_path.stat().st_size <= before - sum(steps) * 4096 + 4096
        assert store._db.execute("PRAGMA freelist_count").fetchone()[0] * 4096 <= 4 * 1024 * 1024
        assert store.reclaim(256) == 0
    finally:
        store.close()


# -- migrations ---------------------------------------------------------------------------------------------


def _current_file(path: Path) -> int:
    store = Store(path)
    store.append([encode_item(span(i), 1 << 20) for i in range(5)])
    store.close()
    return store_mod.SCHEMA_VERSION


def test_older_schema_is_migrated_in_one_transaction(spool_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    version = _current_file(spool_path)

    def to_next(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE spans ADD COLUMN note TEXT")
        db.execute("UPDATE spans SET note = 'migrated'")

    monkeypatch.setattr(schema_mod, "SCHEMA_VERSION", version + 1)
    monkeypatch.setattr(schema_mod, "_MIGRATIONS", {version: to_next})
    store = Store(spool_path)
    try:
        assert store._db.execute("PRAGMA user_version").fetchone()[0] == version + 1
        notes = store._db.execute("SELECT note FROM spans").fetchall()
        assert notes == [("migrated",)] * 5
    finally:
        store.close()


def test_a_failing_migration_changes_nothing(spool_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    version = _current_file(spool_path)

    def broken(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE spans ADD COLUMN note TEXT")
        db.execute("UPDATE no_such_table SET x = 1")

    monkeypatch.setattr(schema_mod, "SCHEMA_VERSION", version + 1)
    monkeypatch.setattr(schema_mod, "_MIGRATIONS", {version: broken})
    with pytest.raises(SpoolError):
        Store(spool_path)
    with sqlite3.connect(spool_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == version
        columns = [r[1] for r in db.execute("PRAGMA table_info(spans)")]
        assert "note" not in columns and db.execute("SELECT count(*) FROM spans").fetchone()[0] == 5


def test_schema_1_file_is_upgraded_and_its_rows_delivered(spool_path: Path) -> None:
    """A file written by span-spool's schema 1 (leases in each row) opens as schema 2 (leases in their own table):
    nothing lost, rows a dead schema-1 drainer had leased are delivered too."""
    with sqlite3.connect(spool_path) as db:
        db.executescript("PRAGMA journal_mode = WAL;" + SCHEMA_1)
        rows = [encode_item(span(i), 1 << 20) for i in range(6)]
        db.executemany(
            "INSERT INTO spans (trace_id, span_id, is_end, body, enqueued_at, lease_owner, lease_until)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (r.trace_id, r.span_id, r.is_end, r.body, 1.0, "old:1" if i < 3 else None, 9e9 if i < 3 else 0)
                for i, r in enumerate(rows)
            ],
        )
    db.close()

    async def main() -> None:
        with Receiver() as rx:
            async with Spool(spool_path, sink=SGPSink(api_key="k", account_id="a", base_url=rx.url), config=FAST) as sp:
                assert await sp.flush(timeout=10)
            assert len(rx.spans) == 6

    asyncio.run(main())
    with sqlite3.connect(spool_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3  # through 2, to today's
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        assert {"leases", "blobs", "spans_blob_gone"} <= names and "spans_leased" not in names
        assert db.execute("SELECT value FROM meta WHERE key = 'delivered_total'").fetchone()[0] == 6
    db.close()


# -- permissions and secrets --------------------------------------------------------------------------------


def test_files_0600_and_created_directory_0700(tmp_path: Path) -> None:
    path = tmp_path / "new-dir" / "spans.db"
    old = os.umask(0o022)
    try:

        async def main() -> None:
            async with Spool(path) as sp:
                sp.put(span(1))
                await sp.commit()
                modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in spool_files(path)}
                assert modes == {"spans.db": 0o600, "spans.db-wal": 0o600, "spans.db-shm": 0o600}

        asyncio.run(main())
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_credentials_never_reach_the_file_or_the_logs(spool_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = "sk-live-DO-NOT-LEAK-4242"
    with Receiver(api_key="the-right-key") as rx:
        sink = SGPSink(api_key=key, account_id="acct", base_url=rx.url)
        assert key not in repr(sink) and key not in str(sink)

        async def main() -> None:
            async with Spool(spool_path, sink=sink, config=replace(FAST, shutdown_timeout=0)) as sp:
                assert key not in repr(sp)
                for i in range(5):
                    sp.put(span(i))
                await until(lambda: sp.metrics(gauges=False)["credentials_refused"] >= 1, what="the key refused")
                await sp.commit()  # (queued behind the recording of the error on the store's thread)
                st = await sp.stats()  # kept, not delivered
                assert st.pending == 5 and st.last_error is not None and "HTTP 403" in st.last_error
                assert key not in st.last_error
                for f in spool_files(spool_path):
                    if f.exists():
                        assert key.encode() not in f.read_bytes()

        with caplog.at_level(logging.DEBUG):
            asyncio.run(main())
    assert "credentials refused" in caplog.text
    assert key not in caplog.text
    assert all(key not in str(r.args) for r in caplog.records)
    assert key.encode() not in spool_path.read_bytes()


@pytest.mark.parametrize("header", [86400, 1e9])
def test_a_huge_retry_after_is_honoured_only_up_to_cooldown_max(
    spool_path: Path, receiver: Receiver, sink: SGPSink, header: object
) -> None:
    receiver.fail_status, receiver.fail_count, receiver.retry_after = 503, 2, header  # type: ignore[assignment]
    sleep = RecordingSleep()

    async def go() -> None:
        async with Spool(spool_path, sink=sink, config=FAST, sleep=sleep) as sp:
            sp.put(span(1, end=True))
            assert await sp.flush(60)  # not silenced for a day by one proxy's header

    asyncio.run(go())
    assert receiver.ended == 1
    assert sleep.delays and max(sleep.delays) <= FAST.cooldown_max


def test_retry_after_garbage_is_ignored_and_a_far_date_is_capped_by_the_cooldown() -> None:
    from spool._retry import cooldown
    from spool._sink import classify_response

    for garbage in ("inf", "nan", "-inf", "soon"):
        err = classify_response(503, b"", garbage)
        assert err is not None and getattr(err, "retry_after", 0) is None
    far = classify_response(503, b"", "Fri, 31 Dec 9999 23:59:59 GMT")
    assert far is not None and getattr(far, "retry_after", 0) > 1e9
    assert cooldown(1, FAST, getattr(far, "retry_after", None)) <= FAST.cooldown_max


# -- a small, full filesystem ----------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB filesystem (tmpfs), mounted for the test when this user may mount; skipped otherwise."""
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_spool_that_fills_a_small_disk_still_drains_all_of_it(small_fs: Path, receiver: Receiver) -> None:
    """The default cap (1 GiB) is far above the filesystem's 16 MiB: the spool stops taking spans while room is
    left for its WAL and for delivery, so with the backend back every stored span is delivered (once wedged: 0)."""
    receiver.refuse()
    cfg = replace(FAST, max_bytes=SpoolConfig().max_bytes)

    async def main() -> tuple[int, dict[str, int | float | None], bool, SpoolStats]:
        async with Spool(small_fs / "spans.db", sink=SGPSink("k", "a", receiver.url), config=cfg) as sp:
            put = 0
            while sp.metrics(gauges=False)["dropped"] == 0:
                for _ in range(500):
                    sp.put(span(put, input={"prompt": "p" * 1000}))
                    put += 1
                await sp.commit()
            full = sp.metrics()
            receiver.resume()
            flushed = await sp.flush(120)
            return put, full, flushed, await sp.stats()

    put, full, flushed, st = asyncio.run(main())
    assert full["dropped_overflow"] == full["dropped"] and full["dropped_disk_error"] == 0  # refused, not failed
    assert flushed
    assert st.delivered_total == len(receiver.spans) == put - st.dropped_total > 10_000
    assert st.last_error is None


def test_a_disk_another_program_fills_never_raises_into_the_application(
    small_fs: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program takes the last byte: new spans are refused (the filesystem is full) or their commit fails,
    counted either way and logged once; delivery may stall (a delete needs a little space for its WAL pages);
    `flush`, `aclose` and the `async with` never raise, and every span is stored, delivered or counted."""
    receiver.refuse()
    path = small_fs / "spans.db"

    async def main() -> tuple[SpoolStats, bool, int]:
        cfg = replace(FAST, shutdown_timeout=0)  # (the flush below is the one that may stall)
        async with Spool(path, sink=SGPSink("k", "a", receiver.url), config=cfg) as sp:
            for i in range(2000):
                sp.put(span(i, input={"prompt": "p" * 1000}))
            await sp.commit()
            fd = os.open(small_fs / "other", os.O_CREAT | os.O_WRONLY)
            try:
                while True:
                    os.write(fd, b"x" * 65536)
            except OSError:
                pass
            finally:
                os.close(fd)
            for i in range(2000, 12_000):
                sp.put(span(i, input={"prompt": "p" * 1000}))
            await sp.commit()
            st = await sp.stats()
            receiver.resume()
            flushed = await sp.flush(3)
            return st, flushed, int(sp.metrics(gauges=False)["dropped"] or 0)

    with caplog.at_level(logging.WARNING, logger="spool"):
        st, flushed, dropped = asyncio.run(main())  # the block exits cleanly: nothing raised
    assert dropped > 0
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert drops and all("filesystem is full" in m or "disk is full" in m for m in drops)
    assert len(drops) <= 2  # once a minute, per kind (refused, failed)
    assert st.last_error is not None and ("filesystem is full" in st.last_error or "disk is full" in st.last_error)
    assert isinstance(flushed, bool)
    assert not any(r.exc_info for r in caplog.records)  # no tracebacks in the log
    (small_fs / "other").unlink()
    store = Store(path, create=False)
    try:
        assert store.check() == []
        s = store.stats()
        assert s.pending + s.delivered_total + s.dropped_total == 12_000  # every span stored, sent or counted
    finally:
        store.close()


def test_a_failing_disk_under_the_drainer_is_reported_and_never_raised(
    spool_path: Path, receiver: Receiver, sink: SGPSink, caplog: pytest.LogCaptureFixture
) -> None:
    """Every write fails (SQLite refuses them: `query_only`): claims fail, `flush` returns False, `last_error` says
    what happened, one log line, and leaving `async with` raises nothing."""

    async def main() -> tuple[bool, SpoolStats]:
        async with Spool(spool_path, sink=sink, config=FAST) as sp:
            for i in range(50):
                sp.put(span(i))
            await sp.commit()
            sp._store._db.execute("PRAGMA query_only = ON")
            flushed = await sp.flush(1.0)
            return flushed, await sp.stats()

    with caplog.at_level(logging.ERROR, logger="spool"):
        flushed, st = asyncio.run(main())
    assert flushed is False
    assert st.last_error is not None and "the spool file failed while delivering" in st.last_error
    assert "readonly" in st.last_error
    failures = [r for r in caplog.records if "failed while delivering" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is None
    assert receiver.writes <= 50
