"""Leases: who holds which rows, and until when, judged so that no dead owner, reused pid or stepped clock can fool
a drainer. I/O-free rules, and the few reads of this host (`/proc`) that tell whether an owner still runs.

A lease is a row of `leases` (id, owner, lo, hi, until): the owner names its host, pid and process start time;
`until` is wall-clock time, written by a process whose clock may be hours off. A claim judges every lease before it
takes rows (`LeaseBook.void`):

- a lease of a process of this host that no longer runs (or whose pid now belongs to another process) is void at once;
- an `until` further ahead than any lease can be (`bound`: `lease_seconds` + the longest request or backoff) counts
  as now: a clock hours ahead cannot hold rows for hours;
- a lease whose `until` has passed is void once this process has itself watched it, unchanged, for `bound` seconds
  of its monotonic clock, or at once when this process wrote it (its clock wrote `until`) or its owner is stopped
  (SIGSTOP): a drainer whose clock is behind, whose leases look expired to the others, keeps its batches while it
  works on them.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["LeaseBook", "Owner", "new_owner", "owner_state", "past_bound"]


def past_bound(stored: float, now: float, bound: float) -> float:
    """A stored time, or `now` when it lies further ahead than `bound` seconds (written by a clock that was ahead)."""
    return now if stored > now + bound else stored


@dataclass(frozen=True, slots=True)
class Owner:
    """A lease owner, as written in `leases.owner`: `host:pid:start:machine:tag`. `start` is the process's start
    time in clock ticks since boot (`/proc/PID/stat`; 0 where unknown), `machine` this host's boot and pid namespace
    (a pid means the same process only there), `tag` one drainer of the process."""

    host: str
    pid: int
    start: int
    machine: str
    tag: str

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start}:{self.machine}:{self.tag}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """The owner a lease names; None for one written by an older span-spool (`host:pid:tag`) or garbage."""
        parts = text.split(":")
        if len(parts) != 5 or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        return cls(parts[0], int(parts[1]), int(parts[2]), parts[3], parts[4])


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _machine() -> str:
    """This boot of this host, and this pid namespace: where a pid names one process."""
    boot = (_read("/proc/sys/kernel/random/boot_id") or "").strip().replace("-", "")[:12]
    try:
        ns = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        ns = ""
    return f"{boot or 'noboot'}.{ns or 'nons'}"


_MACHINE = _machine()


def _proc(pid: int) -> tuple[int, str] | None:
    """(start time in ticks since boot, state: `R`, `S`, `T` stopped, `Z` zombie, ...) of `pid` from `/proc`; None
    where `/proc` does not tell."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": the comm may hold spaces and parentheses
    try:
        return int(fields[19]), fields[0]
    except (IndexError, ValueError):
        return None


def new_owner() -> Owner:
    """An owner for one drainer of this process (call again in a fork child: its pid and start differ)."""
    pid = os.getpid()
    proc = _proc(pid)
    return Owner(socket.gethostname(), pid, proc[0] if proc else 0, _MACHINE, os.urandom(4).hex())


def owner_state(owner: Owner | None) -> str | None:
    """`"gone"` when `owner` is a process of this host (this boot, this pid namespace) that no longer runs, or whose
    pid another process has taken since; `"stopped"` when it is stopped (SIGSTOP, a debugger): alive, but sending
    nothing; `"running"` otherwise; None when this process cannot tell (another host, an older span-spool's lease)."""
    if owner is None or owner.machine != _MACHINE or owner.host != socket.gethostname():
        return None
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        pass  # another user's process: it runs
    except OSError:
        return None
    proc = _proc(owner.pid)
    if proc is None:
        return "running"  # (no /proc: the pid runs, which is all that can be told)
    start, state = proc
    if state == "Z" or (owner.start and start != owner.start):
        return "gone"
    return "stopped" if state in ("T", "t") else "running"


class LeaseBook:
    """This process's judgement of the leases in one file (see the module): what it has watched, on its monotonic
    clock, and what it found of their owners (`owner_state`, asked again after a second)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[tuple[int, float], float] = {}  # (lease, until) -> when this process first saw it so
        self._state: dict[str, tuple[str | None, float]] = {}
        self._me: Owner | None = None

    def me(self) -> Owner:
        """This process as an owner (its `tag` is this book's; made again in a fork child)."""
        if self._me is None or self._me.pid != os.getpid():
            self._me = new_owner()
        return self._me

    def state(self, owner: str) -> str | None:
        """`owner_state` of a lease's owner, asked again once a second has passed."""
        now = self._clock()
        known = self._state.get(owner)
        if known is None or now - known[1] > 1.0:
            known = self._state[owner] = (owner_state(Owner.parse(owner)), now)
        return known[0]

    def void(self, leases: Iterable[tuple[int, str, float]], now: float, bound: float) -> list[int]:
        """The ids of `leases` (id, owner, until) that are void now (`now`: this process's wall clock; `bound`: the
        longest a lease can run from its last renewal). A lease whose owner this span-spool cannot read (an older
        one's) is void once its `until` (within `bound`) has passed."""
        mono, me = self._clock(), self.me()
        seen: dict[tuple[int, float], float] = {}
        out = []
        for lease, owner, until in leases:
            parsed = Owner.parse(owner)
            state = None if parsed is None else self.state(owner)
            if state == "gone":
                out.append(lease)
                continue
            first = seen[lease, until] = self._seen.get((lease, until), mono)
            if past_bound(until, now, bound) > now:
                continue
            if parsed is None or (parsed.pid, parsed.start, parsed.machine) == (me.pid, me.start, me.machine):
                out.append(lease)  # its `until` came from this process's clock (or is all there is to judge)
            elif state == "stopped" or mono - first >= bound:
                out.append(lease)  # (a stopped owner is working on nothing: its expired lease need not be watched)
        self._seen = seen  # only the leases still in the file
        self._state = {o: v for o, v in self._state.items() if mono - v[1] <= 1.0}
        return out
