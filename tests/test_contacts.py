"""Contacts and subscriptions on a real Prosody: operators, strangers, the driver's answers, both directions."""

from __future__ import annotations

import asyncio
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import slixmpp

from agent.profile.model import ContactsConfig
from agent.jid import is_operator
from agent.policies.contacts import ContactsError, PendingRequest, SubscriptionPolicy, clean_text
from agent.xmpp.plugins.base import enable
from agent.xmpp.plugins.contacts import ContactsPlugin
from devserver.prosody import AccountFactory, ServerInfo

TIMEOUT = 15.0


@dataclass
class Seen:
    type: str  # "subscribe", "subscribed", "unsubscribe", "unsubscribed", "available", "dnd", ...
    status: str


class Signal:
    """Collects a listener's calls and lets a test wait for one matching."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self._changed = asyncio.Event()

    def __call__(self, arg: Any) -> None:
        self.calls.append(arg)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[Any], bool], what: str) -> Any:
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    for call in self.calls:
                        if predicate(call):
                            return call
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {what}; seen: {self.calls}") from None


class Recorder(Signal):
    """Every presence one client receives from one contact."""

    def __init__(self, client: slixmpp.ClientXMPP, contact: str) -> None:
        super().__init__()
        self.contact = contact
        client.add_event_handler("presence", self._on_presence)

    @property
    def seen(self) -> list[Seen]:
        return self.calls

    def _on_presence(self, presence: Any) -> None:
        if presence["from"].bare == self.contact:
            self(Seen(presence["type"], presence["status"]))

    def types(self) -> list[str]:
        return [s.type for s in self.seen]


class Net:
    """Clients on the session's Prosody, configured like the agent's session, all closed at the end."""

    def __init__(self, server: ServerInfo) -> None:
        self.server = server
        self.clients: list[slixmpp.ClientXMPP] = []
        self.policies: list[ContactsPlugin] = []

    async def connect(self, jid: str, password: str, *, resource: str = "test", status: str = "",
                      before: Callable[[slixmpp.ClientXMPP], None] | None = None) -> slixmpp.ClientXMPP:
        client = slixmpp.ClientXMPP(f"{jid}/{resource}", password, plugin_config={
            "feature_mechanisms": {"use_mechs": {"SCRAM-SHA-256", "SCRAM-SHA-1"}}})
        client.enable_direct_tls = False
        client.enable_plaintext = False
        client.ca_certs = Path(self.server.ca_file)
        client.roster.auto_authorize = None  # type: ignore[assignment]  # typed bool; None as XmppSession: nobody is approved by the library
        client.roster.auto_subscribe = False
        online = asyncio.Event()

        async def on_start(_: Any) -> None:
            await client.get_roster(timeout=10)
            client.send_presence(pstatus=status or None)
            online.set()

        client.add_event_handler("session_start", on_start)
        if before is not None:
            before(client)
        self.clients.append(client)
        client.connect(self.server.host, self.server.port)
        async with asyncio.timeout(TIMEOUT):
            await online.wait()
        return client

    async def car(self, jid: str, password: str, *, operators: tuple[str, ...] = (),
                  config: ContactsConfig | None = None, max_pending: int = 200,
                  ) -> tuple[slixmpp.ClientXMPP, ContactsPlugin]:
        """The car's client with the contacts plugin enabled before the session (as the agent does)."""
        policies: list[ContactsPlugin] = []

        def attach(client: slixmpp.ClientXMPP) -> None:
            policy = enable(client, ContactsPlugin, policy=SubscriptionPolicy.from_profile(
                config or ContactsConfig(), operators, max_pending=max_pending))
            policies.append(policy)

        client = await self.connect(jid, password, resource="headunit", status="Parked", before=attach)
        self.policies.append(policies[0])
        return client, policies[0]

    async def disconnect(self, client: slixmpp.ClientXMPP) -> None:
        if client.is_connected():
            try:
                async with asyncio.timeout(5):
                    await client.disconnect(wait=1.0)
            except TimeoutError:
                client.abort()

    async def close(self) -> None:
        for policy in self.policies:
            await policy.stop()
        for client in self.clients:
            await self.disconnect(client)


@pytest.fixture
async def net(prosody_server: ServerInfo) -> AsyncIterator[Net]:
    network = Net(prosody_server)
    try:
        yield network
    finally:
        await network.close()


async def server_roster(client: slixmpp.ClientXMPP) -> dict[str, dict[str, Any]]:
    """The roster as the server keeps it (a fresh, unversioned roster get)."""
    iq = client.Iq()
    iq["type"] = "get"
    iq.enable("roster")
    result = await iq.send(timeout=10)
    return {str(jid): dict(item) for jid, item in result["roster"]["items"].items()}


def subscription(policy: ContactsPlugin, jid: str) -> str | None:
    """The subscription the policy lists for ``jid``; None when it is not a contact."""
    return next((c.subscription for c in policy.contacts() if c.jid == jid), None)


def subscribe(client: slixmpp.ClientXMPP, to: str, *, nick: str | None = None, status: str | None = None) -> None:
    presence = client.make_presence(pto=to, ptype="subscribe", pstatus=status)
    if nick is not None:
        element = ET.Element("{http://jabber.org/protocol/nick}nick")
        element.text = nick
        presence.xml.append(element)
    presence.send()


def inject(client: slixmpp.ClientXMPP, *stanzas: str) -> None:
    """Feed stanzas into the client's stream parser, as if the server had sent them.

    For what a well-behaved server never relays (a request from our own account, a
    malformed sender, a thousand senders): the stanzas take the same path as the
    server's bytes, through slixmpp's parser and handlers.
    """
    client.data_received("".join(stanzas).encode())


# -- operators ---------------------------------------------------------------------------


async def test_an_operator_is_approved_at_once_filed_in_the_fleet_group_and_sees_the_car(
        net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    op_jid, op_pw = xmpp_account("op")
    car, policy = await net.car(car_jid, car_pw, operators=(op_jid,))
    pending = Signal()
    policy.request_pending.listen(pending)
    operator = await net.connect(op_jid, op_pw)
    seen = Recorder(operator, car_jid)

    subscribe(operator, car_jid)
    await seen.wait_for(lambda s: s.type == "subscribed", "approval")
    await seen.wait_for(lambda s: s.type == "available" and s.status == "Parked", "the car's presence")

    item = (await server_roster(car))[op_jid]
    assert (item["subscription"], item["groups"], item["name"]) == ("from", ["Fleet"], op_jid)
    assert item["ask"] == "subscribe", "the car asks for the operator's presence (for location pushes)"
    assert policy.pending() == [] and pending.calls == []
    car.send_presence(pshow="dnd", pstatus="Driving · 63 km/h")
    await seen.wait_for(lambda s: s.type == "dnd" and s.status == "Driving · 63 km/h", "the next presence")


async def test_a_whole_operator_domain_is_approved(net: Net, xmpp_account: AccountFactory,
                                                   prosody_server: ServerInfo) -> None:
    car_jid, car_pw = xmpp_account("car")
    op_jid, op_pw = xmpp_account("anyone")
    car, policy = await net.car(car_jid, car_pw, operators=(f"@{prosody_server.domain}",),
                              config=ContactsConfig(operator_group="Dispatch"))
    changed = Signal()
    policy.changed.listen(changed)
    operator = await net.connect(op_jid, op_pw)
    seen = Recorder(operator, car_jid)
    subscribe(operator, car_jid)
    await seen.wait_for(lambda s: s.type == "subscribed", "approval")
    # Roster pushes (subscription, then group) follow the approval: wait for them to settle.
    await changed.wait_for(lambda _: [(c.jid, c.groups, c.subscription) for c in policy.contacts()]
                           == [(op_jid, ("Dispatch",), "from")], "the operator filed in Dispatch")
    assert (await server_roster(car))[op_jid]["groups"] == ["Dispatch"]


def test_operator_matching() -> None:
    operators = ("boss@fleet.example", "@ops.example")
    assert is_operator("Boss@Fleet.Example/phone", operators)
    assert is_operator("anyone@ops.example", operators)
    assert not is_operator("boss@other.example", operators)
    assert not is_operator("ops.example@evil.example", operators)


# -- strangers and the driver ------------------------------------------------------------


async def test_a_stranger_waits_for_the_driver_and_once_approved_sees_the_car(
        net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    ann_jid, ann_pw = xmpp_account("ann")
    car, policy = await net.car(car_jid, car_pw)
    pending = Signal()
    policy.request_pending.listen(pending)
    ann = await net.connect(ann_jid, ann_pw)
    seen = Recorder(ann, car_jid)
    before = time.time()

    subscribe(ann, car_jid, nick="Ann", status="Hi, it's Ann")
    request: PendingRequest = await pending.wait_for(lambda r: r.jid == ann_jid, "a pending request")
    assert (request.nick, request.status) == ("Ann", "Hi, it's Ann")
    assert before - 1 <= request.since <= time.time() + 1
    assert policy.pending() == [request]
    assert ann_jid not in await server_roster(car)  # nothing granted yet
    assert "subscribed" not in seen.types()

    policy.approve(ann_jid)
    await seen.wait_for(lambda s: s.type == "subscribed", "approval")
    await seen.wait_for(lambda s: s.type == "available" and s.status == "Parked", "the car's presence")
    assert policy.pending() == []
    item = (await server_roster(car))[ann_jid]
    assert (item["subscription"], item["ask"], item["groups"]) == ("from", "", [])  # no ask: the car did not subscribe back
    with pytest.raises(ContactsError, match="no pending subscription request"):
        policy.approve(ann_jid)


async def test_the_driver_refuses_a_stranger(net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    bob_jid, bob_pw = xmpp_account("bob")
    car, policy = await net.car(car_jid, car_pw)
    pending = Signal()
    policy.request_pending.listen(pending)
    bob = await net.connect(bob_jid, bob_pw)
    seen = Recorder(bob, car_jid)
    subscribe(bob, car_jid)
    await pending.wait_for(lambda r: r.jid == bob_jid, "a pending request")

    policy.refuse(bob_jid)
    await seen.wait_for(lambda s: s.type == "unsubscribed", "the refusal")
    assert policy.pending() == []
    assert bob_jid not in await server_roster(car)
    assert bob_jid not in car.client_roster  # nothing left of a stranger
    assert "subscribed" not in seen.types()


async def test_with_unknown_refuse_a_stranger_is_refused_at_once(net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    eve_jid, eve_pw = xmpp_account("eve")
    car, policy = await net.car(car_jid, car_pw, config=ContactsConfig(unknown="refuse"))
    pending = Signal()
    policy.request_pending.listen(pending)
    eve = await net.connect(eve_jid, eve_pw)
    seen = Recorder(eve, car_jid)
    subscribe(eve, car_jid)
    await seen.wait_for(lambda s: s.type == "unsubscribed", "the refusal")
    assert pending.calls == [] and policy.pending() == []
    assert eve_jid not in await server_roster(car)


async def test_a_pending_request_outlives_a_restart_of_the_car(net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    ann_jid, ann_pw = xmpp_account("ann")
    car, policy = await net.car(car_jid, car_pw)
    first = Signal()
    policy.request_pending.listen(first)
    ann = await net.connect(ann_jid, ann_pw)
    seen = Recorder(ann, car_jid)
    subscribe(ann, car_jid, nick="Ann", status="from the road")
    await first.wait_for(lambda r: r.jid == ann_jid, "a pending request")
    await net.disconnect(car)
    await policy.stop()

    # A new process: the server re-sends the request at login, with its nick and status.
    again = Signal()

    def attach(client: slixmpp.ClientXMPP) -> None:
        new_policy = enable(client, ContactsPlugin, policy=SubscriptionPolicy.from_profile(ContactsConfig(), ()))
        new_policy.request_pending.listen(again)
        net.policies.append(new_policy)

    await net.connect(car_jid, car_pw, resource="headunit", status="Parked", before=attach)
    request = await again.wait_for(lambda r: r.jid == ann_jid, "the re-sent request")
    assert (request.nick, request.status) == ("Ann", "from the road")
    new_policy = net.policies[-1]
    new_policy.approve(ann_jid)
    await seen.wait_for(lambda s: s.type == "subscribed", "approval after the restart")


async def test_a_policy_started_late_takes_up_requests_already_received(
        net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    ann_jid, ann_pw = xmpp_account("ann")
    op_jid, op_pw = xmpp_account("op")
    arrived = Signal()
    car = await net.connect(car_jid, car_pw, resource="headunit", status="Parked",
                            before=lambda c: c.add_event_handler("presence_subscribe",
                                                                 lambda p: arrived(p["from"].bare)))
    ann = await net.connect(ann_jid, ann_pw)
    operator = await net.connect(op_jid, op_pw)
    seen_by_op = Recorder(operator, car_jid)
    subscribe(ann, car_jid)
    subscribe(operator, car_jid)
    await arrived.wait_for(lambda jid: jid == ann_jid, "ann's request at the car")
    await arrived.wait_for(lambda jid: jid == op_jid, "the operator's request at the car")

    policy = enable(car, ContactsPlugin, policy=SubscriptionPolicy.from_profile(ContactsConfig(), (op_jid,)))
    net.policies.append(policy)
    assert [r.jid for r in policy.pending()] == [ann_jid]
    await seen_by_op.wait_for(lambda s: s.type == "subscribed", "the operator's approval")
    policy.approve(ann_jid)  # the policy knows it is online although it missed session_start
    assert (await server_roster(car))[ann_jid]["subscription"] == "from"


# -- unsubscribing, both ways ------------------------------------------------------------------


async def test_an_operator_who_unsubscribes_is_let_go(net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    op_jid, op_pw = xmpp_account("op")
    car, policy = await net.car(car_jid, car_pw, operators=(op_jid,))
    changed = Signal()
    policy.changed.listen(changed)
    operator = await net.connect(op_jid, op_pw)
    seen = Recorder(operator, car_jid)
    subscribe(operator, car_jid)
    await seen.wait_for(lambda s: s.type == "subscribed", "approval")
    changed.calls.clear()

    operator.send_presence_subscription(pto=car_jid, ptype="unsubscribe")
    await changed.wait_for(lambda jid: jid == op_jid, "the car noting the unsubscribe")
    item = (await server_roster(car))[op_jid]
    assert item["subscription"] == "none"
    [contact] = [c for c in policy.contacts() if c.jid == op_jid]
    assert contact.subscription == "none" and contact.groups == ("Fleet",)


async def test_the_car_asks_for_a_contacts_presence_and_is_later_cancelled(
        net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    op_jid, op_pw = xmpp_account("op")
    car, policy = await net.car(car_jid, car_pw)
    changed = Signal()
    policy.changed.listen(changed)
    operator = await net.connect(op_jid, op_pw, status="At the depot")
    seen = Recorder(operator, car_jid)

    policy.subscribe(op_jid)
    await seen.wait_for(lambda s: s.type == "subscribe", "the car's request")
    operator.send_presence_subscription(pto=car_jid, ptype="subscribed")
    await changed.wait_for(lambda _: subscription(policy, op_jid) == "to", "the car noting the approval")
    assert (await server_roster(car))[op_jid]["subscription"] == "to"

    async with asyncio.timeout(TIMEOUT):  # the operator's presence now reaches the car
        while not next((c.presence for c in policy.contacts() if c.jid == op_jid), None):
            await asyncio.sleep(0.05)
    [contact] = [c for c in policy.contacts() if c.jid == op_jid]
    assert contact.presence["test"].status == "At the depot"

    operator.send_presence_subscription(pto=car_jid, ptype="unsubscribed")
    await changed.wait_for(lambda _: subscription(policy, op_jid) is None, "the car noting the cancellation")
    assert (await server_roster(car))[op_jid]["subscription"] == "none"


async def test_removing_a_contact_cancels_both_ways(net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    op_jid, op_pw = xmpp_account("op")
    car, policy = await net.car(car_jid, car_pw, operators=(op_jid,))
    operator = await net.connect(op_jid, op_pw)
    seen = Recorder(operator, car_jid)
    subscribe(operator, car_jid)
    await seen.wait_for(lambda s: s.type == "subscribed", "approval")

    await policy.remove(op_jid)
    await seen.wait_for(lambda s: s.type == "unsubscribed", "the cancellation")
    assert op_jid not in await server_roster(car)
    assert op_jid not in [c.jid for c in policy.contacts()]
    with pytest.raises(ContactsError, match="did not remove"):
        await policy.remove(op_jid)  # no longer there: the server says item-not-found


async def test_a_stranger_who_withdraws_the_request_leaves_the_pending_list(
        net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    ann_jid, ann_pw = xmpp_account("ann")
    _, policy = await net.car(car_jid, car_pw)
    pending, changed = Signal(), Signal()
    policy.request_pending.listen(pending)
    policy.changed.listen(changed)
    ann = await net.connect(ann_jid, ann_pw)
    subscribe(ann, car_jid)
    await pending.wait_for(lambda r: r.jid == ann_jid, "a pending request")
    ann.send_presence_subscription(pto=car_jid, ptype="unsubscribe")
    await changed.wait_for(lambda jid: jid == ann_jid, "the withdrawal")
    assert policy.pending() == []


# -- hostile input ---------------------------------------------------------------------------------


async def test_the_driver_cannot_answer_with_a_bad_jid_or_the_cars_own(net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    _, policy = await net.car(car_jid, car_pw)
    for bad in ("@@bad", "", "user@", 42, None):
        with pytest.raises(ContactsError):
            policy.approve(bad)  # type: ignore[arg-type]
        with pytest.raises(ContactsError):
            policy.refuse(bad)  # type: ignore[arg-type]
        with pytest.raises(ContactsError):
            await policy.remove(bad)  # type: ignore[arg-type]
    with pytest.raises(ContactsError, match="own account"):
        policy.approve(car_jid)


async def test_requests_from_the_cars_own_account_or_no_valid_sender_are_dropped(
        net: Net, xmpp_account: AccountFactory, caplog: pytest.LogCaptureFixture) -> None:
    car_jid, car_pw = xmpp_account("car")
    ann_jid, ann_pw = xmpp_account("ann")
    car, policy = await net.car(car_jid, car_pw)
    pending = Signal()
    policy.request_pending.listen(pending)
    caplog.set_level(logging.WARNING, logger="agent.xmpp.plugins.contacts.subscriptions")
    inject(car,
           f"<presence type='subscribe' from='{car_jid}/other' to='{car_jid}/headunit'/>",
           f"<presence type='subscribe' to='{car_jid}/headunit'/>",
           f"<presence type='subscribe' from='@@bad' to='{car_jid}/headunit'/>",
           f"<presence type='unsubscribed' from='{car_jid}' to='{car_jid}/headunit'/>")
    assert policy.pending() == [] and pending.calls == []
    assert "from the car's own account dropped" in caplog.text
    assert "without a sender dropped" in caplog.text

    ann = await net.connect(ann_jid, ann_pw)  # and the car still answers real requests
    subscribe(ann, car_jid)
    await pending.wait_for(lambda r: r.jid == ann_jid, "a real request after the junk")
    assert car.is_connected()


async def test_a_flood_of_requests_keeps_only_the_newest_and_leaves_no_trace_of_the_rest(
        net: Net, xmpp_account: AccountFactory, caplog: pytest.LogCaptureFixture) -> None:
    car_jid, car_pw = xmpp_account("car")
    car, policy = await net.car(car_jid, car_pw)
    roster_before = len(car.client_roster)
    caplog.set_level(logging.WARNING, logger="agent.xmpp.plugins.contacts.subscriptions")
    inject(car, *(f"<presence type='subscribe' from='ghost-{i}@localhost' to='{car_jid}/headunit'/>"
                  for i in range(1000)))
    kept = [r.jid for r in policy.pending()]
    assert kept == [f"ghost-{i}@localhost" for i in range(800, 1000)]
    assert len(car.client_roster) <= roster_before + 200  # refused ones are forgotten by the library too
    assert caplog.text.count("refusing the oldest") == 800
    assert car.is_connected()


async def test_beyond_the_cap_the_oldest_real_requester_is_refused(net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    accounts = [xmpp_account(f"fan{i}") for i in range(3)]
    _, policy = await net.car(car_jid, car_pw, max_pending=2)
    pending = Signal()
    policy.request_pending.listen(pending)
    fans = [await net.connect(jid, pw) for jid, pw in accounts]
    first_seen = Recorder(fans[0], car_jid)
    for (jid, _), fan in zip(accounts, fans):
        subscribe(fan, car_jid)
        await pending.wait_for(lambda r, jid=jid: r.jid == jid, f"{jid}'s request")  # type: ignore[misc]
    await first_seen.wait_for(lambda s: s.type == "unsubscribed", "the oldest being refused")
    assert [r.jid for r in policy.pending()] == [accounts[1][0], accounts[2][0]]


async def test_a_repeated_request_is_one_request(net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    ann_jid, ann_pw = xmpp_account("ann")
    car, policy = await net.car(car_jid, car_pw)
    pending = Signal()
    policy.request_pending.listen(pending)
    marker = Signal()
    car.add_event_handler("message", lambda m: marker(m["body"]))
    ann = await net.connect(ann_jid, ann_pw)
    for i in range(50):
        subscribe(ann, car_jid, status=f"please {i}")
    ann.send_message(mto=slixmpp.JID(car_jid), mbody="done", mtype="chat")  # arrives after every request
    await marker.wait_for(lambda body: body == "done", "the marker message")
    assert [r.jid for r in policy.pending()] == [ann_jid] and len(pending.calls) == 1
    assert policy.pending()[0].status == "please 0"


async def test_hostile_text_in_a_request_is_cleaned_and_bounded(net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    eve_jid, eve_pw = xmpp_account("eve")
    _, policy = await net.car(car_jid, car_pw)
    pending = Signal()
    policy.request_pending.listen(pending)
    eve = await net.connect(eve_jid, eve_pw)
    subscribe(eve, car_jid, nick="E\u202eve\tthe\nnick", status="line one\nline two\t" + "x" * 5000)
    request = await pending.wait_for(lambda r: r.jid == eve_jid, "the request")
    assert request.nick == "Eve the nick"
    assert request.status is not None and request.status.startswith("line one line two x")
    assert len(request.status) == 200 and request.status.endswith("…")


def test_clean_text() -> None:
    assert clean_text(None) is None and clean_text("  \n ") is None
    assert clean_text("a\u200b\u2066b\x00c") == "ab c"
    assert clean_text("Ann 🚗") == "Ann 🚗"
