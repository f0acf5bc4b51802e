"""The location policy: when the car's position goes out, and how precisely (XEP-0080 through PEP).

What goes out: latitude and longitude rounded to the profile's ``precision``, altitude,
bearing, speed in m/s, an accuracy that is never better than the rounding, and the fix's
own time. When: at most every ``every`` seconds of vehicle time and only after moving
``min_distance`` metres; once more when the car stops (mode parked or off) so the last
position is exact; once after each (re)connection. Stale positions are never published,
and nothing is queued while offline: the server gets the current position when the
session is back.

Who sees it, and how the node is kept that way, is the publisher's business
(:mod:`agent.xmpp.plugins.geoloc`). The policy is handed it as a :class:`GeolocPort`
and hears of the session from it alone: ``online`` (a fresh or resumed session),
``offline`` (the link dropped), ``acknowledged`` (the server confirmed a position).
The policy owns the publisher it is given: :meth:`LocationPolicy.stop` stops it too.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.clock import Clock
from agent.events import Event
from agent.profile.model import LocationConfig
from agent.vehicle import paths
from agent.vehicle.places import haversine_m
from agent.vehicle.state import EventKind, StateEvent, VehicleState

log = logging.getLogger(__name__)

ACCESS_MODELS = {"operators": "whitelist", "contacts": "presence"}  # the profile's access → XEP-0060's
STOPPED_MODES = frozenset({"parked", "off"})
METRES_PER_DEGREE = math.pi * 6_371_000.0 / 180.0
WATCHED = (paths.LATITUDE, paths.LONGITUDE, paths.MODE)


@dataclass(frozen=True)
class Position:
    """One fix, as XEP-0080 carries it."""

    latitude: float
    longitude: float
    timestamp: float  # wall-clock epoch of the fix itself
    altitude: float | None = None  # m above sea level
    bearing: float | None = None  # degrees clockwise from true north
    speed: float | None = None  # m/s
    accuracy: float | None = None  # m, horizontal


class GeolocPort(Protocol):
    """What the policy needs of the publisher: the session's ups and downs, and a publish."""

    @property
    def is_online(self) -> bool: ...

    @property
    def online(self) -> Event[None]: ...

    @property
    def offline(self) -> Event[None]: ...

    @property
    def acknowledged(self) -> Event[Position]: ...

    def publish(self, position: Position) -> None:
        """Send ``position`` in this session (replacing one not sent yet); dropped if the link drops first."""

    async def stop(self) -> None: ...


def _number(state: VehicleState, path: str) -> float | None:
    """The fresh, finite number at ``path``, else None (a bool or text is not a number)."""
    value = state.value(path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def current_position(state: VehicleState) -> Position | None:
    """The position in the state if it is fresh and valid, else None."""
    reading = state.get(paths.LATITUDE)
    lat, lon = _number(state, paths.LATITUDE), _number(state, paths.LONGITUDE)
    if reading is None or lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    kmh = _number(state, paths.SPEED)
    return Position(lat, lon, reading.timestamp, altitude=_number(state, paths.ALTITUDE),
                    bearing=_number(state, paths.HEADING), speed=None if kmh is None else abs(kmh) / 3.6,
                    accuracy=_number(state, paths.HORIZONTAL_ACCURACY))


class Throttle:
    """When a new position is worth publishing: ``min_distance`` m moved and ``every`` s passed."""

    def __init__(self, every: float, min_distance: float) -> None:
        self.every = every
        self.min_distance = min_distance
        self.last: Position | None = None
        self.last_at = -math.inf

    def wait(self, position: Position, now: float) -> float | None:
        """0 if due now, the seconds still to wait if moved far enough, None if not moved far enough."""
        if self.last is not None and self.distance(position) < self.min_distance:
            return None
        return max(0.0, self.last_at + self.every - now)

    def distance(self, position: Position) -> float:
        """Metres from the last published position (inf if none)."""
        if self.last is None:
            return math.inf
        return haversine_m(self.last.latitude, self.last.longitude, position.latitude, position.longitude)

    def mark(self, position: Position, now: float) -> None:
        self.last, self.last_at = position, now


def rounding_error_m(latitude: float, precision: int) -> float:
    """The largest distance that rounding both coordinates to ``precision`` decimals can add."""
    half_step = 0.5 * 10.0 ** -precision * METRES_PER_DEGREE
    return math.hypot(half_step, half_step * math.cos(math.radians(latitude)))


def fixed(value: float, decimals: int) -> str:
    """``value`` rounded to ``decimals``, as it is written out."""
    return f"{round(value, decimals) + 0.0:.{decimals}f}"  # + 0.0: no "-0.0"


class LocationPolicy:
    """Decides when the car's position is handed to the publisher, as the profile allows."""

    def __init__(self, state: VehicleState, config: LocationConfig, clock: Clock, publisher: GeolocPort) -> None:
        self.state = state
        self.config = config
        self.clock = clock
        self.throttle = Throttle(config.every, config.min_distance)
        self.acked: Position | None = None  # the last position the server confirmed
        self.published = 0  # publishes the server confirmed
        self._publisher = publisher
        self._unsubscribe: list[Callable[[], None]] = []
        self._stopping = False
        self._evaluation: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Listen to the state and the publisher; if already online, publish the current position."""
        if self._unsubscribe or not self.config.enabled:
            return
        publisher = self._publisher
        self._unsubscribe = [self.state.listen(self._on_state, WATCHED),
                             publisher.online.listen(self._on_online), publisher.offline.listen(self._on_offline),
                             publisher.acknowledged.listen(self._on_acknowledged)]
        if publisher.is_online:
            self._on_online(None)

    async def stop(self) -> None:
        """Stop deciding, then stop the publisher; idempotent. What the server holds stays there."""
        for undo in self._unsubscribe:
            undo()
        self._unsubscribe.clear()
        self._cancel_timers()
        await self._publisher.stop()

    # -- the session, as the publisher tells it ----------------------------------

    def _on_online(self, _: None) -> None:
        """Publish the current position once, unless the server already has it."""
        position = current_position(self.state)
        if position is not None and not self._same_place(position, self.acked):
            self._queue(position)

    def _on_offline(self, _: None) -> None:
        """Nothing waits while offline: the position of the moment goes out on reconnection instead."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_acknowledged(self, position: Position) -> None:
        self.acked = position
        self.published += 1

    # -- deciding --------------------------------------------------------------

    def _on_state(self, event: StateEvent) -> None:
        if event.kind is not EventKind.CHANGED:
            return
        if event.path == paths.MODE:
            was = event.old.value if event.old is not None and not event.old.is_stale else None
            if event.new.value in STOPPED_MODES and was not in STOPPED_MODES:
                self._stopping = True
        if self._evaluation is None:  # a fix updates several paths at once: decide once they are all in
            self._evaluation = asyncio.get_running_loop().call_soon(self._evaluate)

    def _evaluate(self) -> None:
        self._evaluation = None
        stopping, self._stopping = self._stopping, False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        position = current_position(self.state)
        if position is None or not self._publisher.is_online:
            return
        if stopping:
            self._queue(position)
            return
        wait = self.throttle.wait(position, self.clock.now())
        if wait is None or self._same_place(position, self.throttle.last):
            return
        if wait <= 0:
            self._queue(position)
        else:  # moved far enough, too soon: publish when due even if no new fix comes
            self._timer = asyncio.get_running_loop().call_later(self.clock.real_delay(wait), self._evaluate)

    def _same_place(self, position: Position, other: Position | None) -> bool:
        """True if both would publish the same rounded coordinates."""
        p = self.config.precision
        return other is not None and (fixed(position.latitude, p), fixed(position.longitude, p)) == (
            fixed(other.latitude, p), fixed(other.longitude, p))

    def _queue(self, position: Position) -> None:
        self.throttle.mark(position, self.clock.now())
        self._publisher.publish(position)

    def _cancel_timers(self) -> None:
        for handle in (self._evaluation, self._timer):
            if handle is not None:
                handle.cancel()
        self._evaluation = self._timer = None
