"""The ``headunit_telemetry`` plugin: telemetry batches published to a PubSub node (XEP-0060).

Why a PubSub node and not messages to a fleet JID:

1. The publish IQ's result comes from the service that stored the item: an
   end-to-end acknowledgement. A message only gets a stream-management ack
   from our own server, which says nothing about the fleet having it.
2. Items persist on the node, so a fleet receiver that was offline catches up
   by retrieving them (messages would need MAM on the receiver's side).
3. The item id is the batch id: a batch republished after a crash or a lost
   result replaces the item of the same id instead of adding one, and a
   receiver that saw both notifications drops the second by id.

The node is ``TelemetryConfig.node`` on ``TelemetryConfig.service``, created if
missing with persistent items, as many items as the service allows
(``max_items = "max"``), ``publish_model = publishers`` and, by default,
``access_model = whitelist`` with the fleet operators (bare JIDs) as members:
telemetry shows where the car is, so nobody else may subscribe or read items.
``"@domain"`` operators cannot be whitelisted (XEP-0060 affiliations name
JIDs); use ``access_model = "open"`` on a fleet-only service for those.

Services differ on who may create nodes. Prosody's PubSub component lets only
its admins create nodes: there the fleet provisions one node per car and gives
the car the ``publisher`` affiliation, and ``ensure_node`` just checks that the
node is there. ejabberd lets local users
create nodes, and the car then owns its node and sets the members itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar
from xml.etree.ElementTree import Element

from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.jid import JID
from slixmpp.plugins.xep_0004 import Form

from agent.jid import JidError, bare as bare_jid
from agent.telemetry.publisher import NodeSetupError, PublishError, PublishTimeout
from agent.xmpp import surface
from agent.xmpp.plugins.base import HeadunitPlugin

log = logging.getLogger(__name__)

SETUP_TIMEOUT = 15.0  # s for each IQ of the node setup
ACCESS_MODELS = ("whitelist", "open")


class TelemetryPlugin(HeadunitPlugin):
    """Publishes payloads to the car's telemetry node; a result from the service is the acknowledgement.

    Configuration: ``service`` (the PubSub service's JID), ``node``, ``access_model``
    ("whitelist" or "open"), ``members`` (the operators whitelisted when the car owns the node).
    It implements :class:`agent.telemetry.publisher.Publisher`.
    """

    name = "headunit_telemetry"
    description = "headunit: telemetry to the fleet's PubSub node (XEP-0060)"
    dependencies: ClassVar[set[str]] = {"xep_0030", "xep_0004", "xep_0060"}
    default_config: ClassVar[dict[str, object]] = {"service": "", "node": "", "access_model": "whitelist",
                                                    "members": ()}

    def plugin_init(self) -> None:
        access_model = str(self.config["access_model"])
        if access_model not in ACCESS_MODELS:
            raise ValueError(f"access_model must be one of {ACCESS_MODELS}, not {access_model!r}")
        if not self.config["service"] or not self.config["node"]:
            raise ValueError("the telemetry plugin needs a service and a node")
        self._service = str(self.config["service"])
        self._node = str(self.config["node"])
        self.access_model = access_model
        members: Sequence[str] = self.config["members"]
        self.members = _bare_jids(members)
        self._pubsub = surface.pubsub(self.xmpp)

    @property
    def service(self) -> str:
        return self._service

    @property
    def node(self) -> str:
        return self._node

    async def ensure_node(self, timeout: float = SETUP_TIMEOUT) -> None:
        """Create the node if missing (or check the fleet made it); set the members when we own it."""
        try:
            await self._pubsub.create_node(self.service, self.node, config=self._config(), timeout=timeout)
            log.info("telemetry node %s created on %s (%s)", self.node, self.service, self.access_model)
        except IqError as exc:
            if exc.condition == "conflict":
                log.debug("telemetry node %s already exists on %s", self.node, self.service)
            elif exc.condition in ("forbidden", "not-allowed", "feature-not-implemented"):
                await self._check_provisioned(timeout)
                return  # not ours to configure
            else:
                raise NodeSetupError(f"{self.service} refused to create {self.node}: {_describe(exc)}") from exc
        except IqTimeout as exc:
            raise NodeSetupError(f"{self.service} did not answer in {timeout:.0f} s (creating {self.node})") from exc
        await self._set_members(timeout)

    async def publish(self, item_id: str, payload: Element, timeout: float) -> None:
        """Publish one item; returns once the service acknowledged it, else raises ``PublishError``."""
        try:
            await self._pubsub.publish(self.service, self.node, id=item_id, payload=payload, timeout=timeout)
        except IqError as exc:
            raise PublishError(f"{self.service} refused item {item_id} on {self.node}: {_describe(exc)}",
                               exc.condition) from exc
        except IqTimeout as exc:
            raise PublishTimeout(f"no answer from {self.service} for item {item_id} in {timeout:.0f} s") from exc

    # -- setup -----------------------------------------------------------------

    def _config(self) -> Form:
        form = surface.forms(self.xmpp).make_form(ftype="submit")
        for var, value in (("pubsub#persist_items", "1"), ("pubsub#max_items", "max"),
                           ("pubsub#access_model", self.access_model), ("pubsub#publish_model", "publishers"),
                           ("pubsub#send_last_published_item", "never"), ("pubsub#notification_type", "headline"),
                           ("pubsub#title", "headunit telemetry")):
            surface.form_api(form).add_field(var=var, value=value)
        return form

    async def _check_provisioned(self, timeout: float) -> None:
        """We may not create nodes here: the fleet must have made ours (with us as publisher)."""
        try:
            await self.xmpp.plugin["xep_0030"].get_info(jid=JID(self.service), node=self.node, timeout=timeout)
        except IqError as exc:
            if exc.condition == "item-not-found":
                raise NodeSetupError(
                    f"{self.service} does not let this account create nodes and {self.node} does not exist: "
                    f"the fleet must create it with {self.xmpp.boundjid.bare} as publisher") from exc
            log.warning("cannot see telemetry node %s on %s (%s); trying to publish anyway",
                        self.node, self.service, _describe(exc))
            return
        except IqTimeout as exc:
            raise NodeSetupError(f"{self.service} did not answer in {timeout:.0f} s (looking up {self.node})") from exc
        log.info("telemetry node %s on %s is provisioned by the fleet", self.node, self.service)

    async def _set_members(self, timeout: float) -> None:
        if self.access_model != "whitelist" or not self.members:
            return
        affiliations = [(jid, "member") for jid in self.members]
        try:
            await self._pubsub.modify_affiliations(self.service, self.node, affiliations, timeout=timeout)
        except (IqError, IqTimeout) as exc:
            log.warning("operators not made members of %s on %s: %s", self.node, self.service, _describe(exc))
            return
        log.info("telemetry node %s readable by %s", self.node, ", ".join(self.members))


def _bare_jids(operators: Sequence[str]) -> tuple[str, ...]:
    """The operators that can be whitelisted: bare JIDs (a "@domain" entry cannot)."""
    found = []
    for entry in operators:
        if entry.startswith("@"):
            log.info("operator domain %s cannot be a PubSub member; list its operators by JID", entry)
            continue
        try:
            found.append(bare_jid(entry))
        except JidError:
            log.warning("operator %r is not a JID; not made a member of the telemetry node", entry)
    return tuple(found)


def _describe(exc: IqError | IqTimeout) -> str:
    if isinstance(exc, IqTimeout):
        return "no answer"
    text = exc.text or ""
    return f"{exc.condition}{f' ({text})' if text else ''}"
