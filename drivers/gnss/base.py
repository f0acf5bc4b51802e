"""GNSS readings, their counters, and the run loop every GNSS backend shares.

A backend only knows how to open its device and read it until it is lost
(``_session``); the base owns reconnecting with ``Backoff``, the connected flag,
delivery of fixes to the callback, and an idempotent ``stop()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal, get_args

from drivers.backoff import Backoff
from drivers.errors import DriverError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Fix:
    """One epoch's position and its quality, as the receiver reported it."""

    latitude: float  # degrees, WGS84, signed
    longitude: float
    time: datetime | None  # UTC from the receiver; None until a trusted date is known
    altitude: float | None = None  # m above MSL
    speed: float | None = None  # km/h over ground
    course: float | None = None  # degrees true
    fix_type: str = "NONE"  # VSS GNSSReceiver.FixType: NONE | TWO_D | THREE_D
    quality: int | None = None  # GGA quality indicator
    satellites_used: int | None = None
    satellites_in_view: int | None = None
    hdop: float | None = None
    pdop: float | None = None
    vdop: float | None = None
    talker: str = "GP"


FixCallback = Callable[[Fix], None]

SkipReason = Literal[
    "bad_checksum",
    "no_checksum",
    "truncated",
    "spliced",
    "too_long",
    "garbage",
    "empty_fields",
    "invalid_fix",
    "rollover",
    "proprietary",
    "unsupported",
    "parse_error",
]
SKIP_REASONS: tuple[SkipReason, ...] = get_args(SkipReason)


@dataclass(slots=True)
class NmeaStats:
    """Counters of one source: every framed sentence is accepted or skipped for one reason.

    ``sentences == accepted + skipped()`` always holds. ``nul_bytes`` counts
    padding bytes removed from the stream (harmless: they do not change a
    checksum) and ``callback_errors`` counts exceptions raised by ``on_fix``.
    """

    sentences: int = 0
    accepted: int = 0
    fixes: int = 0
    bad_checksum: int = 0
    no_checksum: int = 0
    truncated: int = 0
    spliced: int = 0
    too_long: int = 0
    garbage: int = 0  # binary or non-ASCII bytes (e.g. UBX frames on the same port)
    empty_fields: int = 0
    invalid_fix: int = 0
    rollover: int = 0
    proprietary: int = 0
    unsupported: int = 0
    parse_error: int = 0
    nul_bytes: int = 0
    callback_errors: int = 0

    def count(self, reason: SkipReason) -> None:
        """Count one skipped sentence under ``reason``."""
        self.sentences += 1
        setattr(self, reason, getattr(self, reason) + 1)

    def skipped(self) -> int:
        """All skipped sentences, whatever the reason."""
        return sum(int(getattr(self, reason)) for reason in SKIP_REASONS)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# Skipped but not bad: a receiver without a fix yet, sentences we do not use.
ORDINARY_SKIPS = frozenset({"invalid_fix", "empty_fields", "unsupported", "proprietary"})


class SkipLog:
    """Counts a skipped sentence, logs it at debug, and warns with a summary at most every ``interval`` s.

    The summary keeps a receiver that spews garbage from flooding the journal.
    """

    def __init__(
        self,
        stats: NmeaStats,
        name: str,
        interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self.stats = stats
        self.name = name
        self.interval = interval
        self._clock = clock
        self._log = logger
        self._recent: Counter[str] = Counter()
        self._warned_at: float | None = None

    def __call__(self, reason: SkipReason, detail: str, raw: bytes | str) -> None:
        self.stats.count(reason)
        self._log.debug("GNSS %s: skipped (%s: %s): %r", self.name, reason, detail, raw[:120])
        if reason in ORDINARY_SKIPS:
            return
        self._recent[reason] += 1
        now = self._clock()
        if self._warned_at is None or now - self._warned_at >= self.interval:
            summary = ", ".join(f"{k} {v}" for k, v in sorted(self._recent.items()))
            self._log.warning(
                "GNSS %s: skipped bad input (%s); next summary in %.0f s at the earliest",
                self.name, summary, self.interval,
            )
            self._recent.clear()
            self._warned_at = now


class GnssSource(ABC):
    """A GNSS backend: ``run()`` reads fixes until cancelled or stopped, reopening lost devices."""

    def __init__(self, on_fix: FixCallback, *, name: str, backoff: Backoff | None = None) -> None:
        self.name = name
        self.stats = NmeaStats()
        self.is_connected = False
        self._on_fix = on_fix
        self._backoff = backoff if backoff is not None else Backoff()
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()
        self._is_running = False
        self._is_fresh = False
        self._was_lost = False

    @abstractmethod
    async def _session(self) -> None:
        """Open the device and read it; raise DriverError/OSError when lost, return when exhausted."""

    async def run(self) -> None:
        """Read until cancelled, ``stop()`` or (replay) the end of the data; never raises on bad data."""
        if self._is_running:
            raise RuntimeError(f"GNSS source {self.name} is already running")
        self._is_running = True
        self._finished.clear()
        try:
            while not self._stopping.is_set():
                if await self._attempt():
                    return
        finally:
            self.is_connected = False
            self._is_running = False
            self._finished.set()

    async def stop(self) -> None:
        """Make ``run()`` return and wait for it; safe to call twice or before ``run()``."""
        self._stopping.set()
        if self._is_running:
            await self._finished.wait()

    async def _attempt(self) -> bool:
        """One open-and-read cycle; True when the source is exhausted or stopped."""
        try:
            await self._until_stopped(self._session())
        except (DriverError, OSError) as exc:
            self._lost(exc, unexpected=False)
        except Exception as exc:  # a bug must not end GNSS for the rest of the drive
            self._lost(exc, unexpected=True)
        else:
            return True
        self.is_connected = False
        await self._until_stopped(asyncio.sleep(self._backoff.next_delay()))
        return self._stopping.is_set()

    async def _until_stopped(self, work: Coroutine[Any, Any, None]) -> None:
        """Await ``work`` unless ``stop()`` comes first, in which case it is cancelled."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            task.cancel()
            stopper.cancel()
            await asyncio.gather(task, stopper, return_exceptions=True)
        if not task.cancelled():
            task.result()

    def _lost(self, exc: BaseException, *, unexpected: bool) -> None:
        """Log a failed or lost device: a warning on the first failure, debug while it stays away."""
        if unexpected:
            log.error("GNSS %s failed unexpectedly; retrying", self.name, exc_info=exc)
        elif self.is_connected or not self._was_lost:
            log.warning("GNSS %s unavailable: %s; retrying with backoff", self.name, exc)
        else:
            log.debug("GNSS %s still unavailable: %s", self.name, exc)
        self._was_lost = True

    def _connected(self) -> None:
        """Called by a backend once its device is open."""
        self.is_connected = True
        self._is_fresh = True
        log.info("GNSS %s connected", self.name)

    def _alive(self) -> None:
        """Called by a backend when data arrives: the device works, so forget past failures."""
        if self._is_fresh:
            self._is_fresh = False
            self._was_lost = False
            self._backoff.reset()

    def _deliver(self, fixes: Iterable[Fix]) -> None:
        """Hand fixes to the callback; a failing callback is logged and counted, never fatal."""
        for fix in fixes:
            try:
                self._on_fix(fix)
            except Exception:
                self.stats.callback_errors += 1
                log.exception("GNSS %s: on_fix failed for %s", self.name, fix)
