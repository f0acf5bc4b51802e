"""What the health check measures: event-loop lag, recent errors, crash counts, rates.

Each is a small object fed from the event loop (or from logging, which runs where the
record is made) and read by :class:`agent.service.health.Health` on demand.
"""

from __future__ import annotations

import asyncio
import logging
import selectors
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

TICK = 0.25  # s between two looks of the loop-lag probe
MAX_ERRORS = 20  # recent warnings and errors kept for ``headunit status``
MAX_MESSAGE = 300  # characters of one kept log message

Clock = Callable[[], float]


class TimingSelector(selectors.DefaultSelector):
    """The event loop's selector, noting how long each loop iteration ran between two waits.

    Whatever blocks the loop (a slow callback, a synchronous call) shows as one long
    iteration, measured with no timer of its own: a parked agent stays asleep.
    """

    def __init__(self, threshold: float = TICK, clock: Clock = time.monotonic) -> None:
        super().__init__()
        self.threshold = threshold
        self._clock = clock
        self.busy_since = clock()
        self.late: deque[tuple[float, float]] = deque(maxlen=256)  # (when, how long) above the threshold

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        now = self._clock()
        busy = now - self.busy_since
        if busy > self.threshold:
            self.late.append((now, busy))
        try:
            return super().select(timeout)
        finally:
            self.busy_since = self._clock()


_SELECTORS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TimingSelector] = weakref.WeakKeyDictionary()


def timing_event_loop() -> asyncio.AbstractEventLoop:
    """An event loop whose iterations :class:`LoopProbe` can time (``asyncio.Runner(loop_factory=...)``)."""
    selector = TimingSelector()
    loop = asyncio.SelectorEventLoop(selector)
    _SELECTORS[loop] = selector
    return loop


class LoopProbe:
    """How late the event loop runs, the worst for ``window`` s: the longest iteration, or the look overdue now.

    On a loop made by :func:`timing_event_loop` (the agent's, from ``headunit run``) it reads
    the selector's timings and needs no timer at all. On any other loop (an agent inside a
    test's loop) it falls back to a timer every ``TICK`` s that measures how late it wakes.
    While the loop is blocked nothing is measured, and :meth:`lag` (called once it runs
    again) counts the time since the last look as lag too, so a block is seen at once.
    """

    def __init__(self, window: float, clock: Clock = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._last_tick = clock()
        self._late: deque[tuple[float, float]] = deque()  # (when, how late) above one tick
        self._task: asyncio.Task[None] | None = None
        self._selector: TimingSelector | None = None

    @property
    def is_timing_the_loop(self) -> bool:
        """True when the loop's own selector is measured (no timer runs)."""
        return self._selector is not None

    def start(self) -> None:
        if self._task is not None or self._selector is not None:
            return
        self._selector = _SELECTORS.get(asyncio.get_running_loop())
        if self._selector is None:
            self._last_tick = self._clock()
            self._task = asyncio.create_task(self._run(), name="health-loop-probe")

    async def stop(self) -> None:
        """Stop measuring; idempotent."""
        self._selector = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def lag(self) -> float:
        """The worst lateness (s) within the window, including the look that is overdue now."""
        now = self._clock()
        if self._selector is not None:
            running = now - self._selector.busy_since  # the iteration this call is part of
            late = [busy for at, busy in self._selector.late if now - at <= self.window]
            return max([running if running > TICK else 0.0, *late])
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
