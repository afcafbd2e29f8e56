"""The retry policy: tenacity for attempts within a round; `cooldown`, the pause between rounds (see `RoundPolicy`)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_exponential_jitter

from ._config import SpoolConfig
from ._errors import TransientError

__all__ = ["Sleep", "cooldown", "retrying"]

Sleep = Callable[[float], Awaitable[None]]


def _retry_after(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    return (exc.retry_after or 0.0) if isinstance(exc, TransientError) else 0.0


class _AtLeastRetryAfter(wait_base):
    """Exponential backoff with jitter, but never sooner than the server's `Retry-After`."""

    def __init__(self, base: wait_base) -> None:
        self.base = base

    def __call__(self, retry_state: RetryCallState) -> float:
        return max(float(self.base(retry_state)), _retry_after(retry_state))


class _RetryAfterOver(stop_base):
    """Stop when the server asks for a longer wait than a backoff step: cool down instead of holding the lease."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def __call__(self, retry_state: RetryCallState) -> bool:
        return _retry_after(retry_state) > self.limit


def retrying(config: SpoolConfig, sleep: Sleep = asyncio.sleep) -> AsyncRetrying:
    """Attempts for one batch: only `TransientError` is retried, up to `max_attempts`, with exponential backoff
    (`backoff_initial` doubling, capped at `backoff_max`, jittered) and never sooner than a `Retry-After`. A
    `Retry-After` longer than `backoff_max` ends the round at once: the rows cool down instead of holding a lease.
    The last error is re-raised."""

    return AsyncRetrying(
        stop=stop_after_attempt(config.max_attempts) | _RetryAfterOver(config.backoff_max),
        wait=_AtLeastRetryAfter(
            wait_exponential_jitter(
                multiplier=config.backoff_initial, max=config.backoff_max, jitter=config.backoff_initial
            )
        ),
        retry=retry_if_exception_type(TransientError),
        sleep=sleep,
        reraise=True,
    )


def cooldown(
    failed_rounds: int, config: SpoolConfig, retry_after: float | None = None, *, jitter: float | None = None
) -> float:
    """Seconds to wait after `failed_rounds` consecutive rounds ran out of attempts (or met bad credentials):
    doubling from `backoff_max`, capped at `cooldown_max`, jittered by up to 10% (`jitter` in [0, 1): 0 takes 10%
    off; by default a random draw), never below `retry_after` (itself honoured up to `cooldown_max`, never beyond:
    one bad header must not silence tracing for a day)."""
    base = min(config.cooldown_max, config.backoff_max * 2.0 ** min(max(0, failed_rounds - 1), 64))
    draw = random.random() if jitter is None else jitter
    return max(base * (0.9 + 0.1 * draw), min(retry_after or 0.0, config.cooldown_max))
