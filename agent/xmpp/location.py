"""The car's position as XEP-0080 user location, published through PEP (XEP-0163).

What goes out: latitude and longitude rounded to the profile's ``precision``, altitude,
bearing, speed in m/s, an accuracy that is never better than the rounding, and the fix's
own time. When: at most every ``every`` seconds of vehicle time and only after moving
``min_distance`` metres; once more when the car stops (mode parked or off) so the last
position is exact; once after each (re)connection. Stale positions are never published,
and nothing is queued while offline: the server gets the current position when the
session is back.

Who sees it (the PEP node's access model, set before anything is published and then
required by every publish through XEP-0060 publish-options, so a node reconfigured
behind our back is never published into):

- ``access = "operators"``: the ``whitelist`` model, with the operators as members
  (XEP-0060 owner affiliations). An ``@domain`` operator entry cannot be whitelisted
  as such, so the members are the explicit operator JIDs plus every roster contact of
  that domain who has been approved (subscription from/both), kept in step with the
  roster. Falling back to the ``presence`` model would show the car to every approved
  contact, friends included, which is what "operators only" must not do.
- ``access = "contacts"``: the ``presence`` model, every approved contact.

Prosody 0.12's mod_pep supports exactly this (access models presence, whitelist and
open; owner affiliations; publish-options as preconditions). Notifications go to
explicit XEP-0060 subscribers and, through XEP-0115 caps "+notify", to contacts whose
presence reaches the car (a two-way subscription); both are filtered by the access
model at each publish.
"""

from __future__ import annotations

import asyncio
import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.jid import JID, InvalidJID

from agent.clock import Clock
from agent.profile.model import LocationConfig
from agent.vehicle import paths
from agent.vehicle.places import haversine_m
from agent.vehicle.state import EventKind, StateEvent, VehicleState
from agent.jid import is_operator

log = logging.getLogger(__name__)

NODE = "http://jabber.org/protocol/geoloc"  # XEP-0080 §3: the PEP node is the payload's namespace
ITEM_ID = "current"  # one item, replaced at each publish
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
ACCESS_MODELS = {"operators": "whitelist", "contacts": "presence"}
STOPPED_MODES = frozenset({"parked", "off"})
IQ_TIMEOUT = 15.0  # s for the server to answer a publish or a node change
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


def _fixed(value: float, decimals: int) -> str:
    return f"{round(value, decimals) + 0.0:.{decimals}f}"  # + 0.0: no "-0.0"


def _timestamp(epoch: float) -> str | None:
    """XEP-0082 date-time in UTC, with milliseconds only when the fix has them; None if not a time."""
    try:
        moment = datetime.fromtimestamp(epoch, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    spec = "seconds" if moment.microsecond == 0 else "milliseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def geoloc_element(position: Position, precision: int) -> ET.Element:
    """The ``<geoloc/>`` payload; the accuracy is never better than the rounding makes it."""
    geoloc = ET.Element(f"{{{NODE}}}geoloc")
    accuracy = max(position.accuracy or 0.0, rounding_error_m(position.latitude, precision))
    fields = {
        "accuracy": str(math.ceil(accuracy)),
        "alt": None if position.altitude is None else str(round(position.altitude)),
        "bearing": None if position.bearing is None else str(round(position.bearing) % 360),
        "lat": _fixed(position.latitude, precision),
        "lon": _fixed(position.longitude, precision),
        "speed": None if position.speed is None else _fixed(position.speed, 1),
        "timestamp": _timestamp(position.timestamp),
    }
    for name, text in fields.items():
        if text is not None:
            ET.SubElement(geoloc, f"{{{NODE}}}{name}").text = text
    return geoloc


class LocationPublisher:
    """Publishes the car's position to its PEP geoloc node while online, as the profile allows."""

    def __init__(self, client: slixmpp.ClientXMPP, state: VehicleState, config: LocationConfig,
                 operators: Sequence[str], clock: Clock) -> None:
        self.client = client
        self.state = state
        self.config = config
        self.operators = tuple(operators)
        self.clock = clock
        self.access_model = ACCESS_MODELS[config.access]
        self.throttle = Throttle(config.every, config.min_distance)
        self.acked: Position | None = None  # the last position the server confirmed
        self.published = 0  # publishes the server confirmed
        client.register_plugin("xep_0060")
        self._pubsub = client.plugin["xep_0060"]
        self._forms = client.plugin["xep_0004"]
        self._handlers: list[tuple[str, Callable[[Any], None]]] = [
            ("session_start", self._on_session_start), ("session_resumed", self._on_resumed),
            ("disconnected", self._on_disconnected), ("roster_update", self._on_roster_update)]
        self._unsubscribe: Callable[[], None] | None = None
        self._online = False
        self._node_ready = False
        self._members_dirty = True
        self._gave_up = False
        self._pending: Position | None = None
        self._stopping = False
        self._evaluation: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Listen to the state and the session; if already online, set up the node and publish."""
        if self._worker is not None or not self.config.enabled:
            return
        for event, handler in self._handlers:
            self.client.add_event_handler(event, handler)
        self._unsubscribe = self.state.listen(self._on_state, WATCHED)
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="location-publisher")
        if self.access_model == "whitelist" and any(op.startswith("@") for op in self.operators):
            log.info("location: operators of %s are whitelisted as they appear approved in the roster",
                     ", ".join(op for op in self.operators if op.startswith("@")))
        started = self.client.sessionstarted or getattr(self.client, "_session_started", False)
        if self.client.is_connected() and started:
            self._came_online(fresh=True)

    async def stop(self) -> None:
        """Stop listening and publishing; idempotent. What the server holds stays there."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
            for event, handler in self._handlers:
                self.client.del_event_handler(event, handler)
        for handle in (self._evaluation, self._timer):
            if handle is not None:
                handle.cancel()
        self._evaluation = self._timer = None
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            await asyncio.wait([worker])  # a cancel of stop() itself still propagates

    # -- session events --------------------------------------------------------

    def _on_session_start(self, _: Any) -> None:
        self._came_online(fresh=True)

    def _on_resumed(self, _: Any) -> None:
        self._came_online(fresh=False)

    def _came_online(self, *, fresh: bool) -> None:
        """Publish the current position once; on a fresh session, check the node's access first."""
        self._online = True
        if fresh:
            self._node_ready = False
            self._members_dirty = True
            self._gave_up = False
        position = current_position(self.state)
        if position is not None and not self._same_place(position, self.acked):
            self._queue(position)
        self._wake.set()

    def _on_disconnected(self, _: Any) -> None:
        self._online = False
        self._pending = None  # the position of the moment is published on reconnection instead
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_roster_update(self, _: Any) -> None:
        """An approved contact of an operator domain may have come or gone: re-check the members."""
        if self.access_model == "whitelist" and any(op.startswith("@") for op in self.operators):
            self._members_dirty = True
            self._wake.set()

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
        if position is None or not self._online:
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
        return other is not None and (_fixed(position.latitude, p), _fixed(position.longitude, p)) == (
            _fixed(other.latitude, p), _fixed(other.longitude, p))

    def _queue(self, position: Position) -> None:
        self.throttle.mark(position, self.clock.now())
        self._pending = position
        self._wake.set()

    # -- talking to the server ---------------------------------------------------

    async def _work(self) -> None:
        """The one task that talks to the server, so the node is ready before the first publish."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._online or self._gave_up:
                continue
            try:
                await self._step()
            except IqError as exc:
                log.warning("location: the server refused: %s %s", exc.condition, exc.text or "")
            except IqTimeout:
                log.warning("location: no answer from the server in %.0f s", IQ_TIMEOUT)
            except Exception:
                log.exception("location: publishing failed")

    async def _step(self) -> None:
        if not self._node_ready:
            await self._prepare_node()
        if self._members_dirty:
            try:
                await self._sync_members()
                self._members_dirty = False
            except (IqError, IqTimeout) as exc:  # fewer members is only stricter: publish anyway
                log.warning("location: the node's members were not updated: %s",
                            getattr(exc, "condition", "no answer"))
        position, self._pending = self._pending, None
        if position is not None:
            await self._publish(position)

    async def _prepare_node(self) -> None:
        """Create the node with our access model, or bring an existing one to it."""
        own = self.client.boundjid.bare
        try:
            await self._pubsub.create_node(own, NODE, config=self._node_form(), timeout=IQ_TIMEOUT)
            log.info("location: created the PEP node (access model %s)", self.access_model)
        except IqError as exc:
            if exc.condition != "conflict":
                self._gave_up = True  # until the next session: no point asking at every fix
                log.error("location: cannot create the PEP node, not publishing: %s", exc.condition)
                raise
            await self._pubsub.set_node_config(own, NODE, self._node_form(NODE_CONFIG), timeout=IQ_TIMEOUT)
        self._node_ready = True

    def _node_form(self, form_type: str | None = None) -> Any:
        """Our node configuration (create_node adds the FORM_TYPE itself; configure needs it)."""
        form = self._forms.make_form(ftype="submit")
        if form_type is not None:
            form.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
        form.add_field(var="pubsub#access_model", value=self.access_model)
        form.add_field(var="pubsub#persist_items", value=True)
        form.add_field(var="pubsub#max_items", value="1")  # no location history on the server
        return form

    async def _sync_members(self) -> None:
        """Make the node's members exactly the operators (none with the presence model)."""
        own = self.client.boundjid.bare
        result = await self._pubsub.get_node_affiliations(own, NODE, timeout=IQ_TIMEOUT)
        current = {str(a["jid"]).lower(): a["affiliation"] for a in result["pubsub_owner"]["affiliations"]}
        wanted = self.members()
        changes = [(jid, "member") for jid in sorted(wanted) if current.get(jid) not in ("member", "owner")]
        changes += [(jid, "none") for jid, aff in sorted(current.items()) if aff == "member" and jid not in wanted]
        if changes:
            await self._pubsub.modify_affiliations(own, NODE, changes, timeout=IQ_TIMEOUT)
            log.info("location: members now %s", ", ".join(sorted(wanted)) or "none")

    def members(self) -> set[str]:
        """Bare JIDs that may see the location besides the car: the operators, with the whitelist."""
        if self.access_model != "whitelist":
            return set()
        wanted = {op.lower() for op in self.operators if not op.startswith("@")}
        roster = self.client.client_roster
        for jid in list(roster):
            try:
                bare = JID(str(jid)).bare.lower()
            except InvalidJID:
                continue
            if roster[jid]["from"] and is_operator(bare, self.operators):
                wanted.add(bare)
        wanted.discard(self.client.boundjid.bare.lower())
        return wanted

    async def _publish(self, position: Position) -> None:
        try:
            await self._send(position)
        except IqError as exc:
            if not _precondition_failed(exc):
                raise
            # the node's access model is not ours any more: set it again, once
            log.warning("location: the PEP node's access model had changed; setting %s again", self.access_model)
            await self._prepare_node()
            await self._sync_members()
            await self._send(position)
        self.acked = position
        self.published += 1
        log.debug("location published: %.5f, %.5f", position.latitude, position.longitude)

    async def _send(self, position: Position) -> None:
        options = self._forms.make_form(ftype="submit")
        options.add_field(var="FORM_TYPE", ftype="hidden", value=PUBLISH_OPTIONS)
        options.add_field(var="pubsub#access_model", value=self.access_model)
        await self._pubsub.publish(self.client.boundjid.bare, NODE, id=ITEM_ID,
                                   payload=geoloc_element(position, self.config.precision),
                                   options=options, timeout=IQ_TIMEOUT)


def _precondition_failed(exc: IqError) -> bool:
    """XEP-0060 §7.1.5: the node's configuration does not match the publish-options."""
    condition = exc.iq["error"].xml.find(f"{{{PUBSUB_ERRORS}}}precondition-not-met")
    return exc.condition == "conflict" and condition is not None
