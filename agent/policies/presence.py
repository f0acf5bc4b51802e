"""Presence follows the vehicle: the mode picks show, status text and priority.

A change of mode goes out at once; a change of the status text alone (the
speed in "Driving · 63 km/h") at most every ``min_text_interval`` seconds, so
a busy drive does not flood contacts or trip the server's limits.
"""

from __future__ import annotations

import asyncio
import logging
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.profile.model import PresencePolicyConfig, PresenceRule
from agent.vehicle import paths
from agent.vehicle.state import StateEvent, VehicleState

log = logging.getLogger(__name__)

PLACEHOLDER_PATHS = {
    "speed": paths.SPEED,
    "rpm": paths.ENGINE_SPEED,
    "fuel": paths.FUEL_LEVEL,
    "coolant": paths.ENGINE_COOLANT,
    "mode": paths.MODE,
    "latitude": paths.LATITUDE,
    "longitude": paths.LONGITUDE,
}


@dataclass(frozen=True)
class PresenceUpdate:
    show: str | None  # None: available
    status: str
    priority: int


class PresenceSink(Protocol):
    def send_presence_update(self, update: PresenceUpdate) -> None: ...


class _Unknown:
    """Stands for a value the state does not have: formats as "?" whatever the spec."""

    def __format__(self, spec: str) -> str:
        return "?"


def render(template: str, values: dict[str, Any]) -> str:
    """Fill a status template; unknown values show as "?"."""
    return string.Formatter().vformat(template, (), _Defaults(values))


class _Defaults(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        return _Unknown()


class PresencePolicy:
    """Subscribes to the mode and to the values its templates use; sends presence updates."""

    def __init__(self, state: VehicleState, config: PresencePolicyConfig, sink: PresenceSink,
                 *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._state = state
        self._config = config
        self._sink = sink
        self._monotonic = monotonic
        self._unsubscribe: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.last: PresenceUpdate | None = None
        self._last_sent_at = -1e9

    def start(self) -> None:
        watched = {paths.MODE, *self._template_paths()}
        self._unsubscribe = self._state.listen(self._on_change, watched)
        self.push(force=True)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def current(self) -> PresenceUpdate:
        """The presence the state calls for right now."""
        mode = str(self._state.value(paths.MODE, "off"))
        rule = self._config.rules.get(mode) or PresenceRule(None, mode)
        values = {name: v for name, path in PLACEHOLDER_PATHS.items()
                  if (v := self._state.value(path)) is not None}
        return PresenceUpdate(rule.show, render(rule.status, values), rule.priority)

    def push(self, *, force: bool = False) -> None:
        """Send the current presence if the show changed (or ``force``), else respect the text rate limit."""
        update = self.current()
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
        log.info("presence: %s · %s", update.show or "available", update.status)
        self._sink.send_presence_update(update)

    def _on_change(self, event: StateEvent) -> None:
        if event.path == paths.MODE:
            self.push(force=True)
        elif self._timer is None:  # a pending flush will render the latest values anyway
            self.push()

    def _template_paths(self) -> set[str]:
        used: set[str] = set()
        for rule in self._config.rules.values():
            for _, field, _, _ in string.Formatter().parse(rule.status):
                if field in PLACEHOLDER_PATHS:
                    used.add(PLACEHOLDER_PATHS[field])
        return used
