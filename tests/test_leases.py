"""The lease rules (`spool._leases`): owners that are dead or reused, clocks ahead or behind, on a stepped clock."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

from conftest import poll

from spool._leases import LeaseBook, Owner, new_owner, owner_state, past_bound

BOUND = 90.0  # lease_seconds + the longest request or backoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _dead_owner() -> str:
    """The owner a process of this host had, which has exited (and been reaped)."""
    out = subprocess.run(
        [sys.executable, "-c", "from spool._leases import new_owner; print(new_owner())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@contextlib.contextmanager
def _other_process() -> Iterator[str]:
    """The owner of a live process of this host, for the block."""
    code = "from spool._leases import new_owner; print(new_owner(), flush=True); input()"
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        try:
            yield proc.stdout.readline().decode().strip()
        finally:
            proc.kill()


def test_an_owner_names_host_pid_and_process_start() -> None:
    me = new_owner()
    assert Owner.parse(str(me)) == me and me.start > 0
    assert owner_state(me) == "running"
    assert Owner.parse("host:123:tag") is None  # an older span-spool's owner: nothing to judge it by
    assert owner_state(Owner.parse(_dead_owner())) == "gone"


def test_a_reused_pid_is_not_its_old_owner() -> None:
    me = new_owner()
    assert owner_state(Owner(me.host, me.pid, me.start + 1, me.machine, "x")) == "gone"  # same pid, another process
    assert owner_state(Owner(me.host, me.pid, me.start, "another-boot.1", "x")) is None  # not this host: unknown
    assert owner_state(Owner("elsewhere", me.pid, me.start, me.machine, "x")) is None


def test_a_dead_owners_lease_is_void_at_once() -> None:
    book = LeaseBook(Clock())
    assert book.void([(1, _dead_owner(), 2000.0)], now=1000.0, bound=BOUND) == [1]  # 1,000 s left: void anyway


def test_a_live_owners_lease_runs_to_its_end() -> None:
    with _other_process() as owner:
        book = LeaseBook(Clock())
        assert book.void([(1, owner, 1060.0)], now=1000.0, bound=BOUND) == []


def test_a_lease_far_ahead_counts_as_now() -> None:
    """Written by a clock 2 h ahead: not held for 2 h, but as an expired lease (watched for `bound`, then void)."""
    with _other_process() as owner:
        clock = Clock()
        book = LeaseBook(clock)
        leases = [(1, owner, 1000.0 + 7200)]
        assert book.void(leases, now=1000.0, bound=BOUND) == []
        clock.now += BOUND
        assert book.void(leases, now=1000.0 + BOUND, bound=BOUND) == [1]


def test_a_lease_that_looks_expired_is_kept_while_watched_for_less_than_the_bound() -> None:
    """A drainer whose clock is 2 h behind writes leases that look expired to everyone else: they stay its own until
    this process has watched them, unchanged, for `bound` seconds of its own monotonic clock."""
    with _other_process() as owner:
        clock = Clock()
        book = LeaseBook(clock)
        behind = [(1, owner, 1000.0 - 7200 + 60)]
        assert book.void(behind, now=1000.0, bound=BOUND) == []
        clock.now += BOUND - 1
        assert book.void(behind, now=1000.0 + BOUND - 1, bound=BOUND) == []
        renewed = [(1, owner, 1000.0 - 7200 + 120)]  # renewed: its holder is at work, watched anew
        clock.now += 2
        assert book.void(renewed, now=1000.0 + BOUND + 1, bound=BOUND) == []
        clock.now += BOUND
        assert book.void(renewed, now=1000.0 + 2 * BOUND + 1, bound=BOUND) == [1]


def test_this_processs_own_expired_lease_and_an_older_span_spools_are_void_at_their_end() -> None:
    book = LeaseBook(Clock())
    mine = str(new_owner())
    assert book.void([(1, mine, 999.0), (2, "host:1:tag", 999.0), (3, "host:1:tag", 1001.0)], 1000.0, BOUND) == [1, 2]
    assert book.void([(4, "host:1:tag", 1000.0 + BOUND + 1)], 1000.0, BOUND) == [4]  # ahead of any lease: now


def test_past_bound() -> None:
    assert past_bound(1050.0, 1000.0, BOUND) == 1050.0
    assert past_bound(1000.0 + BOUND + 0.5, 1000.0, BOUND) == 1000.0


def test_a_stopped_owners_expired_lease_is_void_at_once_its_live_one_runs_to_its_end() -> None:
    """A drainer stopped with SIGSTOP (or in a debugger) sends nothing: once its lease has run out, nobody needs to
    watch it for the bound before taking its rows; while the lease runs, the rows stay its own."""
    import os
    import signal

    with _other_process() as owner:
        pid = Owner.parse(owner).pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        try:
            assert poll(lambda: owner_state(Owner.parse(owner)) == "stopped", 10)
            book = LeaseBook(Clock())
            assert book.void([(1, owner, 1060.0), (2, owner, 999.0)], now=1000.0, bound=BOUND) == [2]
        finally:
            os.kill(pid, signal.SIGCONT)
