"""Capped exponential backoff with full jitter, shared by every driver's retry loop."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays for retrying a failed device: initial, doubled each failure, capped, jittered.

    Jitter spreads a fleet of boards that lost the same device (or network) so
    they do not retry in lockstep.
    """

    initial: float = 0.5
    cap: float = 30.0
    jitter: float = 0.5
    attempts: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """Return the delay before the next attempt and count this failure."""
        base = min(self.cap, self.initial * 2.0 ** self.attempts)
        self.attempts += 1
        return base * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        """Forget past failures after a success."""
        self.attempts = 0
