"""What the health check measures: event-loop lag, recent errors, crash counts, rates.

Each is a small object fed from the event loop (or from logging, which runs where the
record is made) and read by :class:`agent.service.health.Health` on demand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

TICK = 0.25  # s between two looks of the loop-lag probe
MAX_ERRORS = 20  # recent warnings and errors kept for ``headunit status``
MAX_MESSAGE = 300  # characters of one kept log message

Clock = Callable[[], float]


class LoopProbe:
    """Measures how late the event loop runs a timer, remembering the worst lag for ``window`` s.

    It runs ON the loop it measures: while the loop is blocked it measures nothing,
    and :meth:`lag` (called from the loop once it runs again) counts the time since
    its last look as lag too, so a block is seen even before the probe has run.
    """

    def __init__(self, window: float, clock: Clock = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._last_tick = clock()
        self._late: deque[tuple[float, float]] = deque()  # (when, how late) above one tick
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._last_tick = self._clock()
            self._task = asyncio.create_task(self._run(), name="health-loop-probe")

    async def stop(self) -> None:
        """Cancel the probe and wait for it; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def lag(self) -> float:
        """The worst lateness (s) within the window, including the look that is overdue now."""
        now = self._clock()
        while self._late and now - self._late[0][0] > self.window:
            self._late.popleft()
        overdue = max(0.0, now - self._last_tick - TICK)
        return max([overdue, *(late for _, late in self._late)])

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.tick()

    def tick(self) -> None:
        """One look: how much later than asked did the loop wake us."""
        now = self._clock()
        late = now - self._last_tick - TICK
        self._last_tick = now
        if late > TICK:
            self._late.append((now, late))


@dataclass(frozen=True)
class LoggedError:
    """One warning or error the agent logged."""

    at: float  # time.time()
    level: str
    logger: str
    message: str

    def as_json(self) -> dict[str, object]:
        return {"at": self.at, "level": self.level, "logger": self.logger, "message": self.message}


class ErrorLog(logging.Handler):
    """Keeps the last warnings and errors of the agent's own loggers (``agent.*``, ``drivers.*``)."""

    LOGGERS = ("agent", "drivers", "headunit")

    def __init__(self, size: int = MAX_ERRORS, clock: Clock = time.time) -> None:
        super().__init__(logging.WARNING)
        self.records: deque[LoggedError] = deque(maxlen=size)
        self._clock = clock

    def install(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)

    def uninstall(self) -> None:
        """Stop listening; idempotent."""
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f": {record.exc_info[1]!r}"
            message = " ".join(message.split())[:MAX_MESSAGE]
            self.records.append(LoggedError(record.created, record.levelname, record.name, message))
        except Exception:  # a handler never raises into the code that logged
            self.handleError(record)

    def as_json(self) -> list[dict[str, object]]:
        """Oldest first."""
        return [error.as_json() for error in self.records]


class CrashCounter:
    """Counts crashes per task name within a sliding window (fed by ``Supervisor.when_crashed``)."""

    def __init__(self, window: float, clock: Clock = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._crashes: dict[str, deque[float]] = {}
        self.total: dict[str, int] = {}

    def note(self, name: str) -> None:
        self._crashes.setdefault(name, deque()).append(self._clock())
        self.total[name] = self.total.get(name, 0) + 1

    def recent(self, name: str) -> int:
        """Crashes of ``name`` within the window."""
        times = self._crashes.get(name)
        if not times:
            return 0
        now = self._clock()
        while times and now - times[0] > self.window:
            times.popleft()
        return len(times)

    def names(self) -> list[str]:
        return sorted(self.total)


class RateMeter:
    """A counter's rate per second over the last ``window`` seconds, from samples taken now and then."""

    def __init__(self, window: float = 10.0, clock: Clock = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, count: int) -> None:
        now = self._clock()
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()

    def rate(self) -> float | None:
        """Per second between the oldest and newest sample; None before two samples."""
        if len(self._samples) < 2:
            return None
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else None
