"""Leases in the store: two connections to one file (as two processes would have) never hold the same row."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import span

from spool import SpoolConfig
from spool._items import encode_item
from spool._store import Store


def _stores(path: Path, n: int = 2, rows: int = 10) -> list[Store]:
    stores = [Store(path, SpoolConfig()) for _ in range(n)]
    stores[0].append([encode_item(span(i), 1 << 20) for i in range(rows)])
    return stores


def test_claims_of_two_drainers_never_overlap_and_all_rows_are_claimed(spool_path: Path) -> None:
    a, b = _stores(spool_path, rows=25)
    try:
        first = a.claim("a", 10, 60)
        second = b.claim("b", 10, 60)
        third = a.claim("a", 10, 60)
        seqs = [r.seq for r in first + second + third]
        assert len(seqs) == len(set(seqs)) == 25
        assert len({first[0].lease, second[0].lease, third[0].lease}) == 3
        assert a.claim("a", 10, 60) == [] and a.counts()[1] == 25  # all in flight
        b.release(second[0].lease)  # given back: claimable again, by anyone
        again = a.claim("a", 50, 60)
        assert [r.seq for r in again] == [r.seq for r in second]
    finally:
        a.close()
        b.close()


def test_an_expired_lease_is_taken_over_and_its_holder_cannot_renew_it(spool_path: Path) -> None:
    a, b = _stores(spool_path)
    try:
        held = a.claim("a", 10, 0.05)
        assert a.renew(held[0].lease, 0.05)  # alive: renewed
        deadline = time.monotonic() + 10
        while not (taken := b.claim("b", 10, 60)):
            assert time.monotonic() < deadline, "the expired lease was never taken over"
        assert [r.seq for r in taken] == [r.seq for r in held]
        assert not a.renew(held[0].lease, 60)  # gone: the holder must not send those rows again
        assert b.renew(taken[0].lease, 60)
    finally:
        a.close()
        b.close()


def test_a_completion_answered_after_its_lease_was_given_back_deletes_nothing(spool_path: Path) -> None:
    """A request still on the wire when its lease is given back (a close, a cancelled flush): another drainer sends
    the same rows and deletes them, new spans take the row numbers freed, and then the first answer arrives. It must
    delete nothing: neither the new spans (same seq, same version 1) nor anything else."""
    a, b = _stores(spool_path, rows=20)
    try:
        sent = a.claim("a", 50, 60)
        a.release(sent[0].lease)
        taken = b.claim("b", 50, 60)
        assert b.complete(taken) == 20
        b.release(taken[0].lease)
        b.append([encode_item(span(i, trace="trace-2", end=True), 1 << 20) for i in range(20)])
        assert {r.seq for r in b.claim("peek", 50, 60)} == {r.seq for r in sent}  # the freed numbers, reused
        b.release_owner("peek")
        assert a.complete(sent) == 0
        assert a.to_dead(sent[0], 422, "late") is False
        a.attempt_failed(sent[0].lease, [r.seq for r in sent], 60)
        a.release(sent[0].lease, [r.seq for r in sent], time.time() + 3600)  # no cool-down set on others' rows
        assert a.counts()[0] == 20 and a.stats().dead == 0
        again = b.claim("b", 50, 60)
        assert len(again) == 20 and {r.attempts for r in again} == {0}
        assert b.stats().delivered_total == 20
    finally:
        a.close()
        b.close()


def test_the_churn_loss_a_late_completion_then_reused_row_numbers_inside_a_live_lease(spool_path: Path) -> None:
    """The path by which processes that open, put, commit and close lost acknowledged spans: drainer E's request is
    on the wire when E closes and gives its lease back; drainer D claims the same rows; E's answer arrives and
    deleted them (by seq and version); a producer's new spans then took the freed row numbers, inside D's live lease
    range (hidden from every other drainer); D's answer arrives and deleted those new spans, never sent."""
    e, d = _stores(spool_path, rows=20)
    try:
        on_the_wire = e.claim("e", 50, 60)
        e.release(on_the_wire[0].lease)  # E closes while its request is on the wire
        held = d.claim("d", 50, 60)
        assert [r.seq for r in held] == [r.seq for r in on_the_wire]
        e.complete(on_the_wire)  # E's answer
        d.append([encode_item(span(i, trace="acknowledged", end=True), 1 << 20) for i in range(20)])
        d.complete(held)  # D's answer
        d.release(held[0].lease)
        left = d.claim("check", 50, 60)
        assert len(left) == 20 and all(r.trace_id == "acknowledged" for r in left)
    finally:
        e.close()
        d.close()


def test_a_completion_deletes_by_identity_and_version_not_by_row_number(spool_path: Path) -> None:
    (store,) = _stores(spool_path, n=1, rows=2)
    try:
        sent = store.claim("a", 2, 60)
        forged = [sent[0]._replace(span_id="span-1"), sent[1]._replace(span_id="another")]  # right seq, wrong span
        assert store.complete(forged) == 0
        assert store.complete(sent) == 2
    finally:
        store.close()


def test_completion_deletes_only_the_versions_sent(spool_path: Path) -> None:
    (store,) = _stores(spool_path, n=1, rows=4)
    try:
        sent = store.claim("a", 4, 60)
        store.append([encode_item(span(1, end=True), 1 << 20)])  # span-1 ends while its start is in flight
        deleted, nxt = store.complete_and_claim("a", sent, 4, 60)
        assert deleted == 3
        assert [r.version for r in nxt] == [2] and nxt[0].seq == sent[1].seq  # the end, sent next
        assert store.stats().delivered_total == 3
    finally:
        store.close()


def test_appends_in_blocks_of_rows_keep_the_upsert_rules_of_one_row_at_a_time(tmp_path: Path) -> None:
    """Batches of 64+ rows go in as multi-row statements: same rows, versions, bodies and order as row by row, with
    starts, ends and repeats of one span inside one block and across blocks."""
    import random

    rng = random.Random(6)
    # Within the first block: an end then its start (kept: the end), a start put twice then its end (version 2).
    first = [span(900, end=True), span(900), span(901), span(901), span(901, end=True)]
    batches = []
    for n in (64, 130, 1, 200, 63):
        batch = [encode_item(item, 1 << 20) for item in (first if not batches else [])]
        while len(batch) < n:
            k = rng.randrange(40)
            batch.append(encode_item(span(k, trace=f"t{k % 3}", end=rng.random() < 0.5, v=rng.randrange(2)), 1 << 20))
        batches.append(batch)
    blocks, singles = Store(tmp_path / "blocks.db", SpoolConfig()), Store(tmp_path / "singles.db", SpoolConfig())
    try:
        for batch in batches:
            blocks.append(batch, now=1.0)
            for row in batch:
                singles.append([row], now=1.0)
        query = "SELECT seq, trace_id, span_id, version, is_end, body, enqueued_at FROM spans ORDER BY seq"
        got, want = blocks._db.execute(query).fetchall(), singles._db.execute(query).fetchall()
        assert got == want
        by_id = {r[2]: r for r in got}
        assert by_id["span-900"][3:5] == (1, 1)  # (version, is_end): the start did not overwrite the end
        assert by_id["span-901"][3:5] == (2, 1)  # the repeated start was no update; the end was
    finally:
        blocks.close()
        singles.close()


def test_outcomes_predict_what_append_does_by_the_one_coalescing_rule(tmp_path: Path) -> None:
    """`outcomes` (Python, `coalesce`) and `append` (SQL) are one rule: for random batches of starts, ends, repeats
    and starts after a delivered end, the predicted new and updated rows are the rows and versions the file gains."""
    import random

    rng = random.Random(15)
    store = Store(tmp_path / "s.db", SpoolConfig())
    query = "SELECT trace_id, span_id, version FROM spans"
    try:
        store.append([encode_item(span(k, end=True), 1 << 20) for k in range(5)])
        store.complete(store.claim("d", 5, 60))  # spans 0-4: ends delivered, so their starts are no longer stored
        for _ in range(30):
            batch = [
                encode_item(span(rng.randrange(12), end=rng.random() < 0.4, v=rng.randrange(2)), 1 << 20)
                for _ in range(rng.randrange(1, 20))
            ]
            predicted = store.outcomes(batch)
            before = {(t, s): v for t, s, v in store._db.execute(query)}
            store.append(batch)
            after = {(t, s): v for t, s, v in store._db.execute(query)}
            assert predicted["new"] == len(after.keys() - before.keys())
            versions_gained = sum(v - before.get(k, 1) for k, v in after.items())
            assert predicted["updated"] == versions_gained, (predicted, batch)
            assert sum(predicted.values()) == len(batch)
            if rng.random() < 0.3:  # deliver some: their ends join the record, their starts become refusable
                store.complete(store.claim("d", rng.randrange(1, 6), 60))
    finally:
        store.close()
