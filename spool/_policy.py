"""When the drainer sends, and how big: the round policy, I/O-free.

The drainer asks it before a round and tells it each round's outcome; the policy never sleeps, sends or reads the
file. Its clock (`time.monotonic` seconds) and its jitter (uniform in [0, 1)) are given, so a test steps time by
hand. What it decides: a pause after a failed round (`cooldown`, doubling while rounds fail in a row; batches failing
side by side count once), a probe of one small batch before the first full round after a failure, the server's
`Retry-After` (which even a forced drain waits out), and the pre-split of batches at least as big as one refused
with 413.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ._config import SpoolConfig
from ._retry import cooldown

__all__ = ["RoundPolicy"]


@dataclass
class RoundPolicy:
    config: SpoolConfig
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    jitter: Callable[[], float] = field(default=random.random, repr=False)
    failed_rounds: int = 0
    """Rounds failed in a row; 0 once one goes through."""
    paused_until: float = 0.0
    """On `clock`: no unforced round starts before it."""
    not_before: float = 0.0
    """On `clock`: the server's last `Retry-After` runs until then; no round starts before it, forced or not."""
    too_large: int | None = None
    """The smallest request (bytes) refused with 413: a batch of several at least as big is split before sending."""

    def paused(self) -> bool:
        return self.clock() < self.paused_until

    def idle_wait(self) -> float:
        """Seconds the background loop waits before its next round: `flush_interval`, or the pause still running."""
        paused = self.paused_until - self.clock()
        return paused if paused > 0 else self.config.flush_interval

    def force(self) -> float:
        """A forced round (`flush`): our pause is lifted. Returns the seconds of the server's `Retry-After` left to
        wait first (0: none)."""
        self.paused_until = 0.0
        return max(0.0, self.not_before - self.clock())

    def probe_first(self, force: bool) -> bool:
        """Send one small batch before a full round: after a failed round, unless forced."""
        return bool(self.failed_rounds) and not force

    def failed(self, retry_after: float | None = None) -> float:
        """A round failed (attempts ran out, or the key or the URL was refused): pause, and return for how long. A
        failure while the pause of a batch beside it runs counts as the same round."""
        now = self.clock()
        if now >= self.paused_until:
            self.failed_rounds += 1
        pause = cooldown(self.failed_rounds, self.config, retry_after, jitter=self.jitter())
        self.paused_until = max(self.paused_until, now + pause)
        return pause

    def went_through(self) -> bool:
        """A round succeeded: the next failure pauses from the start again. True if rounds had failed before it."""
        failed, self.failed_rounds = self.failed_rounds, 0
        return failed > 0

    def retry_after(self, seconds: float) -> None:
        """The server asked to wait `seconds` (honoured up to `cooldown_max`, never beyond)."""
        self.not_before = max(self.not_before, self.clock() + min(seconds, self.config.cooldown_max))

    def refused_size(self, request_bytes: int) -> None:
        """A request of `request_bytes` was refused with 413."""
        self.too_large = request_bytes if self.too_large is None else min(self.too_large, request_bytes)

    def too_big(self, rows: int, request_bytes: int) -> bool:
        """Split this batch before sending: several rows, at least as big as a request refused with 413."""
        return rows > 1 and self.too_large is not None and request_bytes >= self.too_large
