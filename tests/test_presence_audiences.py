"""Presence per audience, and entity capabilities, on the real Prosody with real slixmpp clients.

Tried: the demo car parked at its first stop (a road name is known there), an operator of the
fleet and a friend the driver approved, each with an ordinary slixmpp client. Kept: the operator
sees where the car is, the friend never does; every available presence carries XEP-0115 caps
whose hash slixmpp's own caps code recomputes from the car's disco#info; a feature added at run
time gives new caps, sent at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import slixmpp

from agent.app import Agent
from agent.xmpp.client import CAPS_NODE, FEATURES_CHANGED
from devserver.clients import close_client, log_in, verified_client
from devserver.prosody import AccountFactory, ServerInfo
from tests.harness.agentproc import wait_until
from tests.harness.dashboard import WAIT, car_profile, running


@dataclass
class Seen:
    show: str
    status: str
    caps: tuple[str, str, str] | None  # (node, hash, ver)


@dataclass
class Person:
    """Someone's ordinary client, recording the car's presences (with their caps) as they arrive."""

    client: slixmpp.ClientXMPP
    car: str
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client.add_event_handler("presence", self._on_presence)

    def _on_presence(self, presence: Any) -> None:
        if presence["from"].bare != self.car or presence["type"] in ("unavailable", "subscribe", "subscribed",
                                                                     "unsubscribe", "unsubscribed", "error"):
            return
        caps = presence["caps"]
        found = (str(caps["node"]), str(caps["hash"]), str(caps["ver"])) if caps["ver"] else None
        self.seen.append(Seen(presence["show"] or "", presence["status"], found))

    async def wait_for(self, predicate: Callable[[Seen], bool]) -> Seen:
        await wait_until(lambda: any(predicate(s) for s in self.seen), WAIT)
        return next(s for s in reversed(self.seen) if predicate(s))


@dataclass
class Audience:
    agent: Agent
    operator: Person
    friend: Person


@pytest.fixture
async def audience(prosody_server: ServerInfo, xmpp_account: AccountFactory) -> AsyncIterator[Audience]:
    """The parked demo car, its operator (approved at once) and a friend (approved by the driver)."""
    (car, car_pw), (op, op_pw), (friend, friend_pw) = (xmpp_account(p) for p in ("car", "operator", "friend"))
    async with running(car_profile(prosody_server, car, car_pw, operators=(op,))) as agent:
        await wait_until(lambda: agent.presence.last is not None and agent.presence.last.operators_status, WAIT)
        people = [Person(verified_client(jid, pw, prosody_server, plugins=["xep_0030", "xep_0115"]), car)
                  for jid, pw in ((op, op_pw), (friend, friend_pw))]
        try:
            for person in people:
                await log_in(person.client, prosody_server)
                await person.client.get_roster(timeout=WAIT)
                person.client.send_presence_subscription(pto=car, ptype="subscribe")
            await wait_until(lambda: [r.jid for r in agent.cabin.contacts.pending()] == [friend], WAIT)
            agent.cabin.contacts.approve(friend)  # the driver says yes (as on the dashboard)
            yield Audience(agent, *people)
        finally:
            for person in people:
                await close_client(person.client)


async def test_the_operator_sees_where_the_car_is_and_the_friend_does_not(audience: Audience) -> None:
    shown = audience.agent.presence.last
    assert shown is not None and shown.operators_status is not None
    assert shown.operators_status.startswith("Parked · ") and shown.status == "Parked", shown
    road = shown.operators_status.removeprefix("Parked · ")
    seen_by_operator = await audience.operator.wait_for(lambda s: s.status == shown.operators_status)
    await audience.friend.wait_for(lambda s: s.status == "Parked")
    assert seen_by_operator.show == ""
    leaked = [s.status for s in audience.friend.seen if road in s.status or "km/h" in s.status]
    assert audience.friend.seen and not leaked, audience.friend.seen


async def test_every_presence_carries_caps_that_hash_the_cars_disco_info(audience: Audience) -> None:
    operator, agent = audience.operator, audience.agent
    seen = await operator.wait_for(lambda s: s.caps is not None)
    friend_seen = await audience.friend.wait_for(lambda s: s.caps is not None)
    assert seen.caps is not None and friend_seen.caps == seen.caps  # both audiences: the same capabilities
    node, hash_name, ver = seen.caps
    assert (node, hash_name) == (CAPS_NODE, "sha-1")
    car = slixmpp.JID(agent.xmpp.client.boundjid.full)
    info = (await operator.client.plugin["xep_0030"].get_info(jid=car, node=f"{node}#{ver}",
                                                              timeout=WAIT))["disco_info"]
    assert operator.client.plugin["xep_0115"].generate_verstring(info, hash_name) == ver
    features = set(info["features"])
    assert {"http://jabber.org/protocol/disco#info", "urn:xmpp:ping", "http://jabber.org/protocol/caps"} <= features

    agent.xmpp.client.plugin["xep_0030"].add_feature("urn:example:headunit:test")
    agent.xmpp.client.event(FEATURES_CHANGED)
    newer = await operator.wait_for(lambda s: s.caps is not None and s.caps[2] != ver)
    assert newer.caps is not None and newer.status == seen.status  # the same presence, new capabilities
    info = (await operator.client.plugin["xep_0030"].get_info(jid=car, node=f"{node}#{newer.caps[2]}",
                                                              timeout=WAIT))["disco_info"]
    assert "urn:example:headunit:test" in info["features"]
    assert operator.client.plugin["xep_0115"].generate_verstring(info, hash_name) == newer.caps[2]
