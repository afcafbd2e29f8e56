"""A large repeated string (a system prompt in every span) stored once: every way out gives back the exact bytes
`put` encoded (delivery, export, dead letters and their retry, recover, import), coalescing still works, a blob goes
with its last reference, and a schema-2 file migrates."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from conftest import FAST, SCHEMA_2, span

from spool import SGPSink, Spool, SpoolConfig
from spool._blobs import MIN_BODY, Blobs, Split, whole
from spool._items import encode_item
from spool._recover import recover
from spool._store import Store
from spool.testing import Receiver

PROMPT = "You are a careful agent. " * 2200  # ~55 KB


def prompted(i: int, *, end: bool = False, **extra: object) -> dict[str, Any]:
    """A span whose input carries an equal but distinct copy of PROMPT and a message of its own."""
    messages = [{"role": "system", "content": (PROMPT + " ")[:-1]}, {"role": "user", "content": f"question {i}"}]
    return span(i, end=end, input={"messages": messages}, **extra)


def encoded(item: dict[str, Any]) -> bytes:
    return encode_item(item, 1 << 20).body


def blob_rows(path: Path) -> tuple[int, int]:
    """(rows of `blobs`, rows of `spans` that reference one)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        blobs = db.execute("SELECT count(*) FROM blobs").fetchone()[0]
        refs = db.execute("SELECT count(*) FROM spans WHERE blob IS NOT NULL").fetchone()[0]
    return blobs, refs


def exported(path: Path, *, dead: bool = False) -> list[bytes]:
    store = Store(path, readonly=True)
    try:
        return list(store.iter_bodies(dead=dead))
    finally:
        store.close()


def test_a_string_seen_twice_is_cut_out_and_put_back_exactly() -> None:
    blobs = Blobs()
    items = [prompted(i) for i in range(3)]
    first, second = (blobs.split(encode_item(it, 1 << 20), it) for it in items[:2])
    assert not isinstance(first, Split)  # the first sight keeps it whole
    assert isinstance(second, Split)
    assert len(second.body) < 200 and second.data == json.dumps(PROMPT).encode()
    assert whole(second.body, second.at, second.data) == encoded(items[1])
    assert json.loads(second.body)["input"]["messages"][0]["content"] == ""  # the rest is valid JSON
    decoy = prompted(3)  # the prompt's first bytes appear earlier in this span, the whole prompt only after them
    decoy["input"]["messages"].insert(0, {"role": "note", "content": PROMPT[:100]})
    third = blobs.split(encode_item(decoy, 1 << 20), decoy)
    assert isinstance(third, Split) and whole(third.body, third.at, third.data) == encoded(decoy)
    assert json.loads(third.body)["input"]["messages"][0]["content"] == PROMPT[:100]
    small = span(1, input={"text": "x" * 100})
    assert blobs.split(encode_item(small, 1 << 20), small) == encode_item(small, 1 << 20)
    assert len(encoded(items[2])) >= MIN_BODY


def test_prompted_spans_are_delivered_and_exported_byte_identical_with_one_copy_on_disk(
    spool_path: Path, receiver: Receiver, sink: SGPSink
) -> None:
    items = [prompted(i) for i in range(40)]

    async def store() -> None:
        async with Spool(spool_path, config=FAST) as sp:  # store only: look at the file first
            for it in items:
                sp.put(it)

    asyncio.run(store())
    assert blob_rows(spool_path) == (1, 39)  # one copy of the prompt, referenced by all but the first
    assert exported(spool_path) == [encoded(it) for it in items]
    assert spool_path.stat().st_size < 40 * len(PROMPT) // 4

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=FAST) as sp:
            assert await sp.flush(timeout=30)
            assert (await sp.stats()).delivered_total == 40  # spans, not the blob deleted with them

    asyncio.run(main())
    assert [json.dumps(s, sort_keys=True) for s in receiver.spans.values()] == [
        json.dumps(json.loads(encoded(it)), sort_keys=True) for it in items
    ]
    assert blob_rows(spool_path) == (0, 0)  # gone with its last reference


def test_an_end_replaces_its_start_and_a_rejected_span_comes_back_whole_from_the_dead(
    spool_path: Path, receiver: Receiver, sink: SGPSink
) -> None:
    starts = [prompted(i) for i in range(10)]
    ends = [prompted(i, end=True) for i in range(10)]
    bad = prompted(99, parent_id="span-99")  # its own parent: a cycle, refused with 409

    async def main() -> None:
        async with Spool(spool_path, sink=sink, config=FAST) as sp:
            for it in [*starts, bad, *ends]:
                sp.put(it)
            assert await sp.flush(timeout=30)
            st = await sp.stats()
            assert st.dead == 1

    asyncio.run(main())
    assert receiver.ended == 10
    assert exported(spool_path, dead=True) == [encoded(bad)]
    with contextlib.closing(sqlite3.connect(spool_path)) as db:
        assert db.execute("SELECT count(*) FROM blobs").fetchone()[0] == 1  # kept for the dead letter
    store = Store(spool_path, SpoolConfig())
    try:
        assert store.dead_retry(None) == (1, 0)
        assert list(store.iter_bodies()) == [encoded(bad)]
        store.dead_purge(None)
        claimed = store.claim("me", 10, 30)
        assert [c.body for c in claimed] == [encoded(bad)]
        store.complete(claimed)
        assert store._db.execute("SELECT count(*) FROM blobs").fetchone()[0] == 0
    finally:
        store.close()


def test_recover_and_import_give_back_the_exact_bytes(spool_path: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import spool.cli

    spool.cli._register()
    app = spool.cli.app

    items = [prompted(i) for i in range(20)]

    async def main() -> None:
        async with Spool(spool_path, config=FAST) as sp:
            for it in items:
                sp.put(it)

    asyncio.run(main())
    saved = recover(spool_path, tmp_path / "recovered.db")
    assert saved.spans == 20 and saved.complete
    assert exported(tmp_path / "recovered.db") == [encoded(it) for it in items]
    out = CliRunner().invoke(app, ["export", "--path", str(spool_path), str(tmp_path / "spans.jsonl")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "spans.jsonl").read_bytes() == b"".join(encoded(it) + b"\n" for it in items)
    back = CliRunner().invoke(app, ["import", "--path", str(tmp_path / "new.db"), str(tmp_path / "spans.jsonl")])
    assert back.exit_code == 0, back.output
    assert exported(tmp_path / "new.db") == [encoded(it) for it in items]


def test_a_schema_2_file_migrates_and_drains_with_old_and_new_rows_byte_identical(
    spool_path: Path, receiver: Receiver, sink: SGPSink
) -> None:
    old = [prompted(i) for i in range(5)]
    with contextlib.closing(sqlite3.connect(spool_path)) as db:
        db.executescript("PRAGMA journal_mode = WAL;" + SCHEMA_2)
        with db:
            db.executemany(
                "INSERT INTO spans (trace_id, span_id, is_end, body, enqueued_at) VALUES (?, ?, ?, ?, 1.0)",
                [(r.trace_id, r.span_id, r.is_end, r.body) for r in (encode_item(it, 1 << 20) for it in old)],
            )
            db.execute(
                "INSERT INTO dead (trace_id, span_id, body, attempts, enqueued_at, failed_at)"
                " VALUES ('trace-1', 'span-d', ?, 1, 1.0, 1.0)",
                (encoded(prompted(77)),),
            )
    new = [prompted(i) for i in range(5, 10)]

    async def main() -> None:
        async with Spool(spool_path, config=FAST) as sp:
            for it in new:
                sp.put(it)
            await sp.commit()
            assert exported(spool_path) == [encoded(it) for it in [*old, *new]]
            assert exported(spool_path, dead=True) == [encoded(prompted(77))]
        async with Spool(spool_path, sink=sink, config=FAST) as sp:
            assert await sp.flush(timeout=30)

    asyncio.run(main())
    with contextlib.closing(sqlite3.connect(spool_path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    assert len(receiver.spans) == 10
    assert {k[1]: json.dumps(v, sort_keys=True) for k, v in receiver.spans.items()} == {
        it["id"]: json.dumps(json.loads(encoded(it)), sort_keys=True) for it in [*old, *new]
    }
