"""The fleet's side of telemetry: a receiver on the PubSub node, and a Prosody whose PubSub has admins.

``FleetReceiver`` is an operator's slixmpp client, as a fleet back end would be:
it subscribes to a car's telemetry node, takes the notifications, retrieves
every stored item on demand (catch-up after being offline), decodes them with
``agent.telemetry.codec`` and drops a batch it already has by item id.

Prosody's PubSub component lets only admins create nodes, so a fleet admin
provisions each car's node (``FleetReceiver.provision``) with the car as
publisher. ``FleetProsody`` is the harness's Prosody with such admins.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element

import slixmpp
from slixmpp.exceptions import IqError

from agent.telemetry.codec import CodecError, decode
from agent.telemetry.queue import Sample
from devserver.clients import close_client, log_in, verified_client
from devserver.prosody import Prosody, ServerInfo

log = logging.getLogger(__name__)

WAIT = 20.0  # generous: only there so a broken server cannot hang a test
NODE_CONFIG = {
    "pubsub#persist_items": "1", "pubsub#max_items": "max", "pubsub#access_model": "whitelist",
    "pubsub#publish_model": "publishers", "pubsub#send_last_published_item": "never",
}  # fmt: skip


FleetProsody = Prosody  # the harness's Prosody has admins ("fleet" by default)


@dataclass(frozen=True)
class ReceivedBatch:
    item_id: str
    samples: tuple[Sample, ...]
    via: str  # "notification" or "retrieval"


class FleetReceiver:
    """Subscribes to one car's telemetry node; keeps each batch once, in the car's order."""

    def __init__(self, jid: str, password: str, server: ServerInfo, service: str, node: str) -> None:
        self.jid = jid
        self.password = password
        self.server = server
        self.service = service
        self.node = node
        self.batches: dict[str, ReceivedBatch] = {}
        self.duplicates: list[str] = []  # item ids seen again (dropped)
        self.rejected: list[str] = []  # item ids whose payload did not decode
        self._stores: dict[str, int] = {}
        self._changed = asyncio.Event()
        self.client: slixmpp.ClientXMPP | None = None
        self.when_batch: Callable[[ReceivedBatch], None] | None = None  # e.g. make watch printing

    # -- connection ------------------------------------------------------------

    async def connect(self) -> None:
        """Log in (verified STARTTLS) and show as available, without subscribing."""
        client = verified_client(self.jid, self.password, self.server, resource="fleet", plugins=["xep_0060"])
        client.add_event_handler("pubsub_publish", self._on_publish)
        await log_in(client, self.server)  # available: notifications to a bare JID go to available resources
        self.client = client

    async def start(self) -> None:
        """Connect and subscribe to the node."""
        await self.connect()
        await self.subscribe()

    async def subscribe(self) -> None:
        await self._pubsub.subscribe(self.service, self.node, timeout=WAIT)

    async def stop(self) -> None:
        """Disconnect; idempotent."""
        client, self.client = self.client, None
        if client is not None:
            await close_client(client)

    @property
    def _pubsub(self) -> Any:
        assert self.client is not None, "FleetReceiver not connected"
        return self.client.plugin["xep_0060"]

    # -- the fleet admin's part ------------------------------------------------

    async def provision(self, car_jid: str, members: Sequence[str] = ()) -> None:
        """As a PubSub admin: create the car's node and make the car its publisher."""
        form = self.client.plugin["xep_0004"].make_form(ftype="submit")  # type: ignore[union-attr]
        for var, value in NODE_CONFIG.items():
            form.add_field(var=var, value=value)
        try:
            await self._pubsub.create_node(self.service, self.node, config=form, timeout=WAIT)
        except IqError as exc:
            if exc.condition != "conflict":
                raise
        affiliations = [(car_jid, "publisher"), *((m, "member") for m in members)]
        await self._pubsub.modify_affiliations(self.service, self.node, affiliations, timeout=WAIT)

    async def delete_node(self) -> None:
        await self._pubsub.delete_node(self.service, self.node, timeout=WAIT)

    async def affiliations(self) -> dict[str, str]:
        """The node's affiliations, as its owner sees them: JID → affiliation."""
        iq = await self._pubsub.get_node_affiliations(self.service, self.node, timeout=WAIT)
        return {str(a["jid"]): a["affiliation"] for a in iq["pubsub_owner"]["affiliations"]}

    # -- receiving -------------------------------------------------------------

    async def catch_up(self) -> int:
        """Retrieve every item stored on the node; return how many were new."""
        iq = await self._pubsub.get_items(self.service, self.node, timeout=WAIT)
        before = len(self.batches)
        for item in list(iq["pubsub"]["items"].iterables):
            self._record(item["id"], item["payload"], "retrieval")
        return len(self.batches) - before

    def _on_publish(self, msg: slixmpp.Message) -> None:
        items = msg["pubsub_event"]["items"]
        if items["node"] != self.node:
            return
        # Not ``for item in items``: slixmpp iterates this very object around us (ElementBase
        # keeps its iteration index on itself), and a nested loop over it never ends.
        for item in list(items.iterables):
            if item.name == "item":
                self._record(item["id"], item["payload"], "notification")

    def _record(self, item_id: str, payload: Element | None, via: str) -> None:
        if item_id in self.batches:
            self.duplicates.append(item_id)
            return
        try:
            samples = decode(payload) if payload is not None else []
        except CodecError as exc:
            log.warning("fleet: item %s dropped: %s", item_id, exc)
            self.rejected.append(item_id)
            return
        self.batches[item_id] = ReceivedBatch(item_id, tuple(samples), via)
        self._changed.set()
        if self.when_batch is not None:
            self.when_batch(self.batches[item_id])

    # -- what was kept ---------------------------------------------------------

    def _order(self, item_id: str) -> tuple[int, int, str]:
        """The car's order: batch ids are ``<store>-<counter>``; stores in the order first seen."""
        store, _, counter = item_id.rpartition("-")
        rank = self._stores.setdefault(store, len(self._stores))
        return rank, int(counter) if counter.isdigit() else -1, item_id

    @property
    def item_ids(self) -> list[str]:
        return sorted(self.batches, key=self._order)

    @property
    def samples(self) -> list[Sample]:
        """Every sample received, each batch once, in the car's order."""
        return [s for item_id in self.item_ids for s in self.batches[item_id].samples]

    async def wait_for_samples(self, count: int, timeout: float = WAIT) -> list[Sample]:
        """Wait until at least ``count`` samples have arrived; return them all."""
        async with asyncio.timeout(timeout):
            while len(self.samples) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.samples
