"""The drainer's round policy on a hand-stepped clock: no server, no file, no sleep."""

from __future__ import annotations

from spool import SpoolConfig
from spool._policy import RoundPolicy

CFG = SpoolConfig(backoff_max=1.0, cooldown_max=10.0, flush_interval=0.5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy(jitter: float = 0.5) -> tuple[RoundPolicy, Clock]:
    clock = Clock()
    return RoundPolicy(CFG, clock=clock, jitter=lambda: jitter), clock


def test_a_fresh_policy_sends_at_once_and_waits_flush_interval_between_rounds() -> None:
    p, _ = policy()
    assert not p.paused() and not p.probe_first(force=False)
    assert p.idle_wait() == CFG.flush_interval
    assert p.force() == 0.0


def test_failed_rounds_double_the_pause_up_to_the_cap_and_a_success_starts_over() -> None:
    p, clock = policy(jitter=1.0)  # no jitter taken off: the pause is exactly the doubling
    pauses = []
    for _ in range(6):
        pauses.append(p.failed())
        assert p.paused() and p.idle_wait() == pauses[-1]
        clock.now += pauses[-1]  # the pause runs out: the next failure is a new round
        assert not p.paused()
    assert pauses == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert p.probe_first(force=False) and not p.probe_first(force=True)
    assert p.went_through() and not p.went_through()  # True once: rounds had failed
    assert p.failed() == 1.0


def test_batches_failing_side_by_side_count_as_one_round() -> None:
    p, clock = policy(jitter=1.0)
    assert p.failed() == 1.0
    clock.now += 0.5  # still paused: a second batch of the same round fails
    assert p.failed() == 1.0 and p.failed_rounds == 1
    assert p.paused_until == clock.now + 1.0  # the later pause holds


def test_jitter_takes_up_to_a_tenth_off() -> None:
    assert policy(jitter=0.0)[0].failed() == 0.9
    assert policy(jitter=0.999)[0].failed() > 0.999


def test_retry_after_is_a_floor_capped_by_cooldown_max_and_even_a_forced_round_waits_it() -> None:
    p, clock = policy(jitter=1.0)
    assert p.failed(retry_after=7.0) == 7.0
    p.retry_after(7.0)
    assert p.force() == 7.0 and not p.paused()  # our pause lifted, the server's kept
    clock.now += 3.0
    assert p.force() == 4.0
    clock.now += 4.0
    assert p.force() == 0.0
    p.retry_after(86_400.0)  # a far date: one bad header must not silence tracing for a day
    assert p.force() == CFG.cooldown_max
    assert policy()[0].failed(retry_after=86_400.0) == CFG.cooldown_max


def test_a_413_pre_splits_batches_at_least_as_big_as_the_smallest_refused() -> None:
    p, _ = policy()
    assert not p.too_big(rows=100, request_bytes=10**9)  # nothing refused yet
    p.refused_size(50_000)
    p.refused_size(80_000)  # a bigger refusal does not raise the bar
    assert p.too_large == 50_000
    assert p.too_big(rows=2, request_bytes=50_000) and not p.too_big(rows=2, request_bytes=49_999)
    assert not p.too_big(rows=1, request_bytes=10**6)  # one span cannot be split: it goes, and its 413 dead-letters
