"""The ``headunit_geoloc`` plugin: XEP-0080 user location published to the car's PEP node (XEP-0163).

When a position goes out is :mod:`agent.policies.location`'s decision; this plugin is its
:class:`~agent.policies.location.GeolocPort`. It tells the policy of the session
(``online``, ``offline``) and of each publish the server confirmed (``acknowledged``),
and runs the one task that talks to the server, so the node is ready before the first
publish. A position handed over is sent in this session or not at all: nothing is queued
while offline.

Who sees it (the PEP node's access model, set before anything is published and then
required by every publish through XEP-0060 publish-options, so a node reconfigured
behind our back is never published into; if the precondition fails, the node is set
again and the publish retried once):

- ``access_model = "whitelist"``: the operators are the members (XEP-0060 owner
  affiliations). An ``@domain`` operator entry cannot be whitelisted as such, so the
  members are the explicit operator JIDs plus every roster contact of that domain who
  has been approved (subscription from/both), kept in step with the roster. Falling
  back to the ``presence`` model would show the car to every approved contact, friends
  included, which is what "operators only" must not do.
- ``access_model = "presence"``: every approved contact.

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
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar

from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.jid import JID, InvalidJID
from slixmpp.plugins.xep_0004 import Form

from agent.events import Event
from agent.jid import is_operator
from agent.policies.location import Position, fixed, rounding_error_m
from agent.xmpp import surface
from agent.xmpp.plugins.base import HeadunitPlugin

log = logging.getLogger(__name__)

NODE = "http://jabber.org/protocol/geoloc"  # XEP-0080 §3: the PEP node is the payload's namespace
ITEM_ID = "current"  # one item, replaced at each publish
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
ACCESS_MODELS = ("whitelist", "presence")
IQ_TIMEOUT = 15.0  # s for the server to answer a publish or a node change


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
        "lat": fixed(position.latitude, precision),
        "lon": fixed(position.longitude, precision),
        "speed": None if position.speed is None else fixed(position.speed, 1),
        "timestamp": _timestamp(position.timestamp),
    }
    for name, text in fields.items():
        if text is not None:
            ET.SubElement(geoloc, f"{{{NODE}}}{name}").text = text
    return geoloc


class GeolocPlugin(HeadunitPlugin):
    """Publishes positions to the car's PEP geoloc node, with the access model it keeps the node at.

    Configuration: ``access_model`` ("whitelist" or "presence"), ``operators`` (bare JIDs and
    "@domain" entries: the whitelist's members), ``precision`` (decimals of latitude and
    longitude). It implements :class:`agent.policies.location.GeolocPort`.
    """

    name = "headunit_geoloc"
    description = "headunit: user location (XEP-0080) through PEP (XEP-0163, XEP-0060)"
    dependencies: ClassVar[set[str]] = {"xep_0030", "xep_0004", "xep_0060"}
    default_config: ClassVar[dict[str, object]] = {"access_model": "whitelist", "operators": (), "precision": 4}

    def plugin_init(self) -> None:
        access_model = str(self.config["access_model"])
        if access_model not in ACCESS_MODELS:
            raise ValueError(f"access_model must be one of {ACCESS_MODELS}, not {access_model!r}")
        operators: Sequence[str] = self.config["operators"]
        self._access = access_model
        self._operators = tuple(operators)
        self._precision = int(self.config["precision"])
        self._pubsub = surface.pubsub(self.xmpp)
        self.online: Event[None] = Event("geoloc online")  # a fresh or resumed session
        self.offline: Event[None] = Event("geoloc offline")  # the link dropped
        self.acknowledged: Event[Position] = Event("geoloc acknowledged")  # the server has this position
        self._online = False
        self._node_ready = False
        self._members_dirty = True
        self._gave_up = False
        self._pending: Position | None = None
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[Any] | None = None
        self.on("session_start", self._on_session_start)
        self.on("session_resumed", self._on_resumed)
        self.on("disconnected", self._on_disconnected)
        self.on("roster_update", self._on_roster_update)
        if self._whitelists_domains:
            log.info("location: operators of %s are whitelisted as they appear approved in the roster",
                     ", ".join(op for op in self._operators if op.startswith("@")))
        if self.session_started:
            self._came_online(fresh=True)

    @property
    def is_online(self) -> bool:
        return self._online

    def publish(self, position: Position) -> None:
        """Publish ``position`` in this session, replacing one not sent yet; nothing is queued offline."""
        if not self._online:
            return
        self._pending = position
        self._wake.set()

    def members(self) -> set[str]:
        """Bare JIDs that may see the location besides the car: the operators, with the whitelist."""
        if self._access != "whitelist":
            return set()
        wanted = {op.lower() for op in self._operators if not op.startswith("@")}
        roster = self.xmpp.client_roster
        for jid in list(roster):
            try:
                bare = JID(str(jid)).bare.lower()
            except InvalidJID:
                continue
            if roster[jid]["from"] and is_operator(bare, self._operators):
                wanted.add(bare)
        wanted.discard(self.xmpp.boundjid.bare.lower())
        return wanted

    # -- session events --------------------------------------------------------

    def _on_session_start(self, _: Any) -> None:
        self._came_online(fresh=True)

    def _on_resumed(self, _: Any) -> None:
        self._came_online(fresh=False)

    def _came_online(self, *, fresh: bool) -> None:
        """On a fresh session, check the node's access before the next publish; tell the policy."""
        self._online = True
        if fresh:
            self._node_ready = False
            self._members_dirty = True
            self._gave_up = False
        if self._worker is None:
            self._worker = self.spawn(self._work(), "location-publisher")
        self.online.emit(None)
        self._wake.set()

    def _on_disconnected(self, _: Any) -> None:
        self._online = False
        self._pending = None  # the policy sends the position of the moment on reconnection instead
        self.offline.emit(None)

    def _on_roster_update(self, _: Any) -> None:
        """An approved contact of an operator domain may have come or gone: re-check the members."""
        if self._whitelists_domains:
            self._members_dirty = True
            self._wake.set()

    @property
    def _whitelists_domains(self) -> bool:
        return self._access == "whitelist" and any(op.startswith("@") for op in self._operators)

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
        own = self.xmpp.boundjid.bare
        try:
            await self._pubsub.create_node(own, NODE, config=self._node_form(), timeout=IQ_TIMEOUT)
            log.info("location: created the PEP node (access model %s)", self._access)
        except IqError as exc:
            if exc.condition != "conflict":
                self._gave_up = True  # until the next session: no point asking at every fix
                log.error("location: cannot create the PEP node, not publishing: %s", exc.condition)
                raise
            await self._pubsub.set_node_config(own, NODE, self._node_form(NODE_CONFIG), timeout=IQ_TIMEOUT)
        self._node_ready = True

    def _node_form(self, form_type: str | None = None) -> Form:
        """Our node configuration (create_node adds the FORM_TYPE itself; configure needs it)."""
        form = surface.forms(self.xmpp).make_form(ftype="submit")
        fields = surface.form_api(form)
        if form_type is not None:
            fields.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
        fields.add_field(var="pubsub#access_model", value=self._access)
        fields.add_field(var="pubsub#persist_items", value=True)
        fields.add_field(var="pubsub#max_items", value="1")  # no location history on the server
        return form

    async def _sync_members(self) -> None:
        """Make the node's members exactly the operators (none with the presence model)."""
        own = self.xmpp.boundjid.bare
        result = await self._pubsub.get_node_affiliations(own, NODE, timeout=IQ_TIMEOUT)
        current = {str(a["jid"]).lower(): a["affiliation"] for a in result["pubsub_owner"]["affiliations"]}
        wanted = self.members()
        changes = [(jid, "member") for jid in sorted(wanted) if current.get(jid) not in ("member", "owner")]
        changes += [(jid, "none") for jid, aff in sorted(current.items()) if aff == "member" and jid not in wanted]
        if changes:
            await self._pubsub.modify_affiliations(own, NODE, changes, timeout=IQ_TIMEOUT)
            log.info("location: members now %s", ", ".join(sorted(wanted)) or "none")

    async def _publish(self, position: Position) -> None:
        try:
            await self._send(position)
        except IqError as exc:
            if not _precondition_failed(exc):
                raise
            # the node's access model is not ours any more: set it again, once
            log.warning("location: the PEP node's access model had changed; setting %s again", self._access)
            await self._prepare_node()
            await self._sync_members()
            await self._send(position)
        log.debug("location published: %.5f, %.5f", position.latitude, position.longitude)
        self.acknowledged.emit(position)

    async def _send(self, position: Position) -> None:
        options = surface.forms(self.xmpp).make_form(ftype="submit")
        fields = surface.form_api(options)
        fields.add_field(var="FORM_TYPE", ftype="hidden", value=PUBLISH_OPTIONS)
        fields.add_field(var="pubsub#access_model", value=self._access)
        await self._pubsub.publish(self.xmpp.boundjid.bare, NODE, id=ITEM_ID,
                                   payload=geoloc_element(position, self._precision),
                                   options=options, timeout=IQ_TIMEOUT)


def _precondition_failed(exc: IqError) -> bool:
    """XEP-0060 §7.1.5: the node's configuration does not match the publish-options."""
    condition = exc.iq["error"].xml.find(f"{{{PUBSUB_ERRORS}}}precondition-not-met")
    return exc.condition == "conflict" and condition is not None
