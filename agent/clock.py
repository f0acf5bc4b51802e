"""Vehicle time: monotonic seconds that a simulation can run faster than the wall."""

from __future__ import annotations

import time


class Clock:
    """Monotonic vehicle time, ``speed`` times faster than real time.

    Every timer of the agent's policies (mode hysteresis, staleness, rate limits)
    runs on this clock, so a drive replayed at 10x takes the same decisions as
    the real drive, ten times sooner.
    """

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, not {speed}")
        self.speed = speed
        self._origin = time.monotonic()

    def now(self) -> float:
        """Vehicle seconds since an arbitrary origin."""
        return (time.monotonic() - self._origin) * self.speed

    def real_delay(self, vehicle_seconds: float) -> float:
        """How long to sleep, in real seconds, for ``vehicle_seconds`` to pass."""
        return max(0.0, vehicle_seconds / self.speed)
