"""The vehicle state store: one reading per VSS path, with change events and staleness.

Modelled on Home Assistant's ``StateMachine.async_set``: an update with a new
value fires a "changed" event (old and new reading), the same value again fires
a "reported" event for listeners that asked for it, and ``listen`` returns the
callable that unsubscribes. Values go stale when their source goes quiet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Union

log = logging.getLogger(__name__)

Value = Union[bool, int, float, str]


class EventKind(str, Enum):
    CHANGED = "changed"
    REPORTED = "reported"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class Reading:
    """A value at a VSS path, when it was observed and by which source."""

    path: str
    value: Value
    timestamp: float  # wall clock (epoch seconds) of the observation
    source: str
    seen: float  # vehicle clock of the last confirmation, for staleness
    is_stale: bool = False


@dataclass(frozen=True, slots=True)
class StateEvent:
    kind: EventKind
    path: str
    old: Reading | None
    new: Reading


Listener = Callable[[StateEvent], None]


class VehicleState:
    """The single store every driver writes into and every policy reads from."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._readings: dict[str, Reading] = {}
        self._by_path: dict[str, list[tuple[Listener, bool]]] = {}
        self._any: list[tuple[Listener, bool]] = []
        self._stale_after: dict[str, float] = {}

    # -- reading -------------------------------------------------------------

    def get(self, path: str) -> Reading | None:
        return self._readings.get(path)

    def value(self, path: str, default: Value | None = None) -> Value | None:
        """The fresh value at ``path``, or ``default`` if unknown or stale."""
        reading = self._readings.get(path)
        if reading is None or reading.is_stale:
            return default
        return reading.value

    def snapshot(self) -> dict[str, Reading]:
        return dict(self._readings)

    # -- writing -------------------------------------------------------------

    def update(self, path: str, value: Value, source: str, timestamp: float | None = None) -> None:
        """Record an observation; fire "changed" or "reported" as appropriate."""
        old = self._readings.get(path)
        new = Reading(path, value, self._wall() if timestamp is None else timestamp,
                      source, self._clock())
        self._readings[path] = new
        if old is None or old.value != value or old.is_stale:
            self._fire(StateEvent(EventKind.CHANGED, path, old, new))
        elif self._has_reported_listeners(path):
            self._fire(StateEvent(EventKind.REPORTED, path, old, new))

    def refresh(self, paths: Iterable[str], timestamp: float | None = None) -> None:
        """Confirm that the values at ``paths`` still hold (a repeated frame), quietly.

        Cheaper than ``update``: no event unless the reading had gone stale.
        """
        seen = self._clock()
        wall = self._wall() if timestamp is None else timestamp
        for path in paths:
            old = self._readings.get(path)
            if old is None:
                continue
            new = replace(old, timestamp=wall, seen=seen, is_stale=False)
            self._readings[path] = new
            if old.is_stale:
                self._fire(StateEvent(EventKind.CHANGED, path, old, new))

    # -- staleness -----------------------------------------------------------

    def set_stale_after(self, source: str, seconds: float) -> None:
        """Readings from ``source`` go stale ``seconds`` (vehicle time) after their last confirmation."""
        self._stale_after[source] = seconds

    def expires_at(self, reading: Reading) -> float | None:
        """Vehicle time at which ``reading`` goes stale, or None if it cannot (stale already, or no limit)."""
        limit = self._stale_after.get(reading.source)
        return None if limit is None or reading.is_stale else reading.seen + limit

    def next_expiry(self) -> float | None:
        """Vehicle time at which the next fresh reading goes stale, or None while none can."""
        due = [at for r in self._readings.values() if (at := self.expires_at(r)) is not None]
        return min(due) if due else None

    def expire(self) -> list[str]:
        """Mark quiet readings stale, fire "stale" events, return their paths."""
        now = self._clock()
        expired = []
        for path, reading in list(self._readings.items()):
            limit = self._stale_after.get(reading.source)
            if limit is None or reading.is_stale or now - reading.seen <= limit:
                continue
            new = replace(reading, is_stale=True)
            self._readings[path] = new
            expired.append(path)
            self._fire(StateEvent(EventKind.STALE, path, reading, new))
        return expired

    # -- listening -----------------------------------------------------------

    def listen(
        self,
        listener: Listener,
        paths: Iterable[str] | None = None,
        *,
        reported: bool = False,
    ) -> Callable[[], None]:
        """Call ``listener`` on events at ``paths`` (all paths if None); return the unsubscribe."""
        entry = (listener, reported)
        targets: list[list[tuple[Listener, bool]]]
        if paths is None:
            targets = [self._any]
        else:
            targets = [self._by_path.setdefault(p, []) for p in dict.fromkeys(paths)]
        for target in targets:
            target.append(entry)

        def unsubscribe() -> None:
            for target in targets:
                if entry in target:
                    target.remove(entry)

        return unsubscribe

    def _has_reported_listeners(self, path: str) -> bool:
        return any(r for _, r in self._any) or any(r for _, r in self._by_path.get(path, ()))

    def _fire(self, event: StateEvent) -> None:
        listeners = [*self._by_path.get(event.path, ()), *self._any]
        for listener, wants_reported in listeners:
            if event.kind is EventKind.REPORTED and not wants_reported:
                continue
            try:
                listener(event)
            except Exception:
                log.exception("state listener %r failed on %s %s", listener, event.kind.value, event.path)
