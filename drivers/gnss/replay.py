"""Replay of a recorded NMEA log, paced by the receiver's own UTC times (the demo drive).

Fixes without a UTC date (a GGA-only log) are paced at the nominal 1 Hz.

The log goes through the same ``NmeaStream`` as a live receiver, so a replayed
drive exercises the same parsing, counters and epoch merging.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from pathlib import Path

from drivers.backoff import Backoff
from drivers.errors import DriverInitError
from drivers.gnss.base import Fix, FixCallback, GnssSource
from drivers.gnss.nmea import MAX_LENGTH, NmeaStream

_CHUNK = 4096
_NOMINAL_EPOCH = 1.0  # seconds between fixes whose time is unknown


class ReplaySource(GnssSource):
    """Replays ``file``; waits (t - t_prev) / speed between fixes; ``run()`` returns at the end unless ``loop``."""

    def __init__(
        self,
        on_fix: FixCallback,
        file: Path | str,
        speed: float = 1.0,
        loop: bool = False,
        backoff: Backoff | None = None,
        *,
        max_length: int = MAX_LENGTH,
    ) -> None:
        path = Path(file)
        if not path.is_file():
            raise DriverInitError(f"NMEA replay file {path} does not exist or is not a file")
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed) or speed <= 0:
            raise DriverInitError(f"NMEA replay speed must be a positive number, got {speed!r}")
        super().__init__(on_fix, name=f"replay {path.name}", backoff=backoff)
        self.file = path
        self.speed = float(speed)
        self.loop = loop
        self._stream = NmeaStream(self.stats, name=self.name, max_length=max_length)
        self._previous: datetime | None = None

    async def _session(self) -> None:
        self._connected()
        while True:
            fixes = self.stats.fixes
            await self._replay_once()
            if not self.loop:
                return
            if self.stats.fixes == fixes:  # a log without fixes must not spin the loop
                await asyncio.sleep(_NOMINAL_EPOCH / self.speed)

    async def _replay_once(self) -> None:
        self._stream.reset()
        self._previous = None
        try:
            with self.file.open("rb") as log_file:
                while chunk := log_file.read(_CHUNK):
                    self._alive()
                    await self._play(self._stream.feed(chunk))
                    await asyncio.sleep(0)  # stay fair to the loop at any replay speed
        except OSError as exc:
            raise DriverInitError(f"cannot read NMEA replay file {self.file}: {exc}") from exc
        await self._play(self._stream.flush())

    async def _play(self, fixes: list[Fix]) -> None:
        for fix in fixes:
            await self._pace(fix.time)
            self._deliver([fix])

    async def _pace(self, when: datetime | None) -> None:
        """Sleep the scaled gap since the previous timed fix (none if time goes back)."""
        if when is None:
            await asyncio.sleep(_NOMINAL_EPOCH / self.speed)
            return
        if self._previous is not None and when > self._previous:
            await asyncio.sleep((when - self._previous).total_seconds() / self.speed)
        self._previous = when
