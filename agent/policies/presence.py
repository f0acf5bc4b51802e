"""Presence follows the vehicle: the mode picks show, status text and priority, per audience.

A change of mode goes out at once; a change of the status text alone (the
speed in "Driving · 63 km/h") at most every ``min_text_interval`` seconds, so
a busy drive does not flood contacts or trip the server's limits.

Two audiences: the fleet's operators see the profile's ``status`` (place, speed and
direction included: "Driving · 98 km/h · Gyeongbu Expressway southbound"), sent to them
as directed presence; everyone else who may see the car sees ``public_status``, which by
default is the same template without the segments that tell where the car is or how
fast it goes ("Driving"). Location is for operators only, and so is the status that
would give it away.
"""

from __future__ import annotations

import asyncio
import logging
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.events import Event
from agent.profile.model import PresencePolicyConfig, PresenceRule
from agent.vehicle import paths
from agent.vehicle.places import Places, compass
from agent.vehicle.state import StateEvent, VehicleState

log = logging.getLogger(__name__)

SEPARATOR = " · "

PLACEHOLDER_PATHS = {
    "speed": paths.SPEED,
    "rpm": paths.ENGINE_SPEED,
    "fuel": paths.FUEL_LEVEL,
    "coolant": paths.ENGINE_COOLANT,
    "mode": paths.MODE,
    "latitude": paths.LATITUDE,
    "longitude": paths.LONGITUDE,
}


PRIVATE_FIELDS = frozenset({"speed", "road", "direction", "latitude", "longitude"})  # where and how fast


@dataclass(frozen=True)
class PresenceUpdate:
    show: str | None  # None: available
    status: str  # what everyone who may see the car sees
    priority: int
    operators_status: str | None = None  # the operators' own, when it says more than ``status``

    @property
    def for_operators(self) -> str:
        """The status text the operators see."""
        return self.status if self.operators_status is None else self.operators_status


def public_template(template: str) -> str:
    """``template`` without its " · " segments that name a place, a speed or a direction."""
    formatter = string.Formatter()
    kept = [segment for segment in template.split(SEPARATOR)
            if not {field.split(".")[0].split("[")[0] for _, field, _, _ in formatter.parse(segment) if field}
            & PRIVATE_FIELDS]
    return SEPARATOR.join(kept)


OVERRIDE_SHOWS = ("available", "away", "xa", "dnd")  # what the driver may choose
MAX_STATUS = 100  # characters of an overriding status text


class PresenceSink(Protocol):
    def send_presence_update(self, update: PresenceUpdate) -> None: ...


def render(template: str, values: dict[str, Any]) -> str:
    """Fill a status template; a " · " segment that needs an unknown value is left out.

    "Driving · {speed:.0f} km/h · {road} {direction}" with no place known gives
    "Driving · 63 km/h", not "Driving · 63 km/h · ? ?".
    """
    formatter = string.Formatter()
    kept = []
    for segment in template.split(SEPARATOR):
        fields = {field for _, field, _, _ in formatter.parse(segment) if field}
        if all(values.get(field) is not None for field in fields):
            kept.append(formatter.vformat(segment, (), values))
    return SEPARATOR.join(part for part in kept if part.strip())


class PresencePolicy:
    """Subscribes to the mode and to the values its templates use; sends presence updates."""

    def __init__(self, state: VehicleState, config: PresencePolicyConfig, sink: PresenceSink,
                 *, moving_speed: float = 3.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._state = state
        self._config = config
        self._places = Places.load(config.places) if config.places is not None else None
        self._moving_speed = moving_speed
        self._sink = sink
        self._monotonic = monotonic
        self._unsubscribe: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.last: PresenceUpdate | None = None
        self._last_sent_at = -1e9
        self._override: PresenceUpdate | None = None
        self.changed: Event[None] = Event("presence change")  # after each presence sent, and on override/auto

    def start(self) -> None:
        watched = {paths.MODE, *self._template_paths()}
        if {"road", "direction"} & self._template_fields():
            watched |= {paths.LATITUDE, paths.LONGITUDE, paths.HEADING, paths.SPEED}
        self._unsubscribe = self._state.listen(self._on_change, watched)
        self.push(force=True)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def is_automatic(self) -> bool:
        """True while presence follows the vehicle; False while the driver's override holds."""
        return self._override is None

    def override(self, show: str, status: str | None = None) -> PresenceUpdate:
        """The driver's choice (e.g. do not disturb) until :meth:`automatic`; sent at once.

        ``show`` is "available", "away", "xa" or "dnd"; without ``status`` the automatic
        text is kept. ValueError for anything else.
        """
        if show not in OVERRIDE_SHOWS:
            raise ValueError(f"presence show must be one of {', '.join(OVERRIDE_SHOWS)}, not {show!r}")
        text = " ".join((status or "").split())[:MAX_STATUS]
        auto = self.current()
        self._override = PresenceUpdate(None if show == "available" else show, text or auto.status, auto.priority,
                                        None if text else auto.operators_status)
        log.info("presence overridden by the driver: %s", show)
        self.push(force=True)
        self._notify()
        return self._override

    def automatic(self) -> None:
        """Presence follows the vehicle again; the mode's presence is sent at once."""
        if self._override is not None:
            self._override = None
            log.info("presence follows the vehicle again")
            self.push(force=True)
        self._notify()

    def current(self) -> PresenceUpdate:
        """The presence the state calls for right now."""
        mode = str(self._state.value(paths.MODE, "off"))
        rule = self._config.rules.get(mode) or PresenceRule(None, mode)
        values: dict[str, Any] = {name: self._state.value(path) for name, path in PLACEHOLDER_PATHS.items()}
        values["road"] = self._road(values["latitude"], values["longitude"])
        values["direction"] = self._direction(values["speed"])
        detailed = render(rule.status, values)
        public = render(rule.public_status if rule.public_status is not None else public_template(rule.status),
                        values)
        return PresenceUpdate(rule.show, public, rule.priority, None if detailed == public else detailed)

    def _road(self, latitude: object, longitude: object) -> str | None:
        if self._places is None or not isinstance(latitude, float) or not isinstance(longitude, float):
            return None
        return self._places.nearest(latitude, longitude, self._config.place_distance)

    def _direction(self, speed: object) -> str | None:
        """The compass direction of travel; standing still, the heading is noise."""
        heading = self._state.value(paths.HEADING)
        if not isinstance(speed, (int, float)) or speed < self._moving_speed or not isinstance(heading, (int, float)):
            return None
        return compass(float(heading))

    def push(self, *, force: bool = False) -> None:
        """Send the current presence if the show changed (or ``force``), else respect the text rate limit."""
        update = self._override or self.current()
        if update == self.last:
            return
        show_changed = self.last is None or update.show != self.last.show or (
            update.priority != self.last.priority)
        wait = self._last_sent_at + self._config.min_text_interval - self._monotonic()
        if force or show_changed or wait <= 0:
            self._send(update)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._flush)

    def _flush(self) -> None:
        self._timer = None
        self.push()

    def _send(self, update: PresenceUpdate) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.last = update
        self._last_sent_at = self._monotonic()
        log.info("presence: %s · %s%s", update.show or "available", update.status,
                 "" if update.operators_status is None else f" (operators: {update.operators_status})")
        self._sink.send_presence_update(update)
        self._notify()

    def _notify(self) -> None:
        self.changed.emit(None)

    def _on_change(self, event: StateEvent) -> None:
        if event.path == paths.MODE:
            self.push(force=True)
        elif self._timer is None:  # a pending flush will render the latest values anyway
            self.push()

    def _template_fields(self) -> set[str]:
        return {field for rule in self._config.rules.values()
                for template in (rule.status, rule.public_status or "")
                for _, field, _, _ in string.Formatter().parse(template) if field}

    def _template_paths(self) -> set[str]:
        return {PLACEHOLDER_PATHS[f] for f in self._template_fields() if f in PLACEHOLDER_PATHS}
