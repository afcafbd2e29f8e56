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
