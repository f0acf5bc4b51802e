"""Budgets that keep a misbehaving page from costing the agent much: requests per second, log lines."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Budget:
    """A token bucket: ``rate`` takes a second on average, up to ``burst`` at once."""

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def take(self) -> bool:
        """Spend one token; False (nothing spent) when the bucket is empty."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class LogLimiter:
    """At most ``lines`` log lines every ``period`` seconds; the next one says how many were left out."""

    def __init__(self, logger: logging.Logger, lines: int = 5, period: float = 10.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self._budget = Budget(lines / period, lines, clock=clock)
        self._skipped = 0

    def warning(self, message: str, *args: object) -> None:
        if not self._budget.take():
            self._skipped += 1
            return
        if self._skipped:
            message = f"{message} ({self._skipped} similar line(s) left out)"
            self._skipped = 0
        self.logger.warning(message, *args)
