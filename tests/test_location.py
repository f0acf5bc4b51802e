"""Location through PEP on a real Prosody: who sees it, how often, how precise, after a reconnection."""

from __future__ import annotations

import asyncio
import math
import secrets
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from agent.clock import Clock
from agent.profile.model import LocationConfig
from agent.vehicle import paths
from agent.vehicle.state import VehicleState
from agent.policies.location import (ACCESS_MODELS, LocationPolicy, Position, Throttle, current_position,
                                     rounding_error_m)
from agent.xmpp.plugins.base import enable
from agent.xmpp.plugins.geoloc import NODE, GeolocPlugin, geoloc_element
from devserver.prosody import AccountFactory, ServerInfo

TIMEOUT = 15.0
FIX_TIME = 1776471120.0  # 2026-04-18T00:12:00Z, the demo drive's start
GEO = "{%s}" % NODE
START = (37.401500, 127.108800)  # Pangyoyeok-ro


class ManualClock(Clock):
    """Vehicle time that moves only when the test says so; its timers never fire during a test."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def real_delay(self, vehicle_seconds: float) -> float:
        return 3600.0


def north_of(origin: tuple[float, float], metres: float) -> tuple[float, float]:
    return origin[0] + metres / (math.pi * 6_371_000.0 / 180.0), origin[1]


def fill(state: VehicleState, where: tuple[float, float], *, speed: float = 36.0, heading: float = 181.6,
         altitude: float = 71.3, timestamp: float = FIX_TIME) -> None:
    """One GNSS fix and the speed, as the feeds write them (several paths in one go)."""
    for path, value in ((paths.LATITUDE, where[0]), (paths.LONGITUDE, where[1]), (paths.ALTITUDE, altitude),
                        (paths.HEADING, heading)):
        state.update(path, value, "gnss", timestamp)
    state.update(paths.SPEED, speed, "can")


@dataclass
class Geoloc:
    lat: str
    lon: str
    fields: dict[str, str]


def parse(element: ET.Element) -> Geoloc:
    fields = {child.tag.removeprefix(GEO): child.text or "" for child in element}
    return Geoloc(fields.get("lat", ""), fields.get("lon", ""), fields)


def rounded(where: tuple[float, float], precision: int = 4) -> tuple[str, str]:
    return f"{where[0]:.{precision}f}", f"{where[1]:.{precision}f}"


class Inbox:
    """A contact's geoloc notifications from the car, and its chat messages (used as barriers)."""

    def __init__(self, client: slixmpp.ClientXMPP, car: str) -> None:
        self.car = car
        self.locations: list[Geoloc] = []
        self.chats: list[str] = []
        self._changed = asyncio.Event()
        client.add_event_handler("pubsub_publish", self._on_item)
        client.add_event_handler("message", self._on_message)

    def _on_item(self, msg: Any) -> None:
        items = msg["pubsub_event"]["items"]
        if msg["from"].bare != self.car or items["node"] != NODE:
            return
        for item in list(items.iterables):  # not ``for item in items``: slixmpp is iterating it too
            payload = item["payload"] if item.name == "item" else None
            if payload is not None:
                self.locations.append(parse(payload))
        self._changed.set()

    def _on_message(self, msg: Any) -> None:
        if msg["type"] == "chat" and msg["from"].bare == self.car:
            self.chats.append(msg["body"])
            self._changed.set()

    def places(self) -> list[tuple[str, str]]:
        return [(g.lat, g.lon) for g in self.locations]

    async def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(TIMEOUT):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {what}; locations {self.places()}, chats {self.chats}") from None

    async def wait_location(self, where: tuple[str, str]) -> None:
        await self.wait_for(lambda: where in self.places(), f"location {where}")


class Net:
    """Clients on the session's Prosody and the publishers on them, all closed at the end."""

    def __init__(self, server: ServerInfo) -> None:
        self.server = server
        self.clients: list[slixmpp.ClientXMPP] = []
        self.publishers: list[LocationPolicy] = []

    async def connect(self, jid: str, password: str, *, geoloc_interest: bool = False) -> slixmpp.ClientXMPP:
        """A verified STARTTLS client; with ``geoloc_interest`` it announces geoloc+notify in its caps."""
        client = slixmpp.ClientXMPP(f"{jid}/{secrets.token_hex(3)}", password, plugin_config={
            "feature_mechanisms": {"use_mechs": {"SCRAM-SHA-256", "SCRAM-SHA-1"}}})
        client.enable_direct_tls = False
        client.enable_plaintext = False
        client.ca_certs = Path(self.server.ca_file)
        client.roster.auto_authorize = None  # type: ignore[assignment]  # typed bool; None: every approval is explicit
        client.roster.auto_subscribe = False
        client.register_plugin("xep_0060")
        if geoloc_interest:
            client.register_plugin("xep_0080")  # PEP (XEP-0163) interest: geoloc+notify in the caps
        online = asyncio.Event()

        async def on_start(_: Any) -> None:
            await client.get_roster(timeout=10)
            if geoloc_interest:
                await client.plugin["xep_0115"].update_caps(broadcast=False)
            client.send_presence()
            online.set()

        client.add_event_handler("session_start", on_start)
        self.clients.append(client)
        client.connect(self.server.host, self.server.port)
        async with asyncio.timeout(TIMEOUT):
            await online.wait()
        return client

    def publisher(self, car: slixmpp.ClientXMPP, state: VehicleState, clock: Clock,
                  operators: tuple[str, ...] = (), **config: Any) -> LocationPolicy:
        publisher = location(car, state, LocationConfig(**config), operators, clock)
        publisher.start()
        self.publishers.append(publisher)
        return publisher

    async def disconnect(self, client: slixmpp.ClientXMPP) -> None:
        if client.is_connected():
            try:
                async with asyncio.timeout(5):
                    await client.disconnect(wait=1.0)
            except TimeoutError:
                client.abort()

    async def close(self) -> None:
        for publisher in self.publishers:
            await publisher.stop()
        for client in self.clients:
            await self.disconnect(client)


@pytest.fixture
async def net(prosody_server: ServerInfo) -> AsyncIterator[Net]:
    network = Net(prosody_server)
    try:
        yield network
    finally:
        await network.close()


async def eventually(check: Callable[[], Any], what: str) -> None:
    """Poll an async-free condition until true (for server-side state with no event to wait on)."""
    try:
        async with asyncio.timeout(TIMEOUT):
            while not check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"never: {what}") from None


async def subscribe_to_car(car: slixmpp.ClientXMPP, contact: slixmpp.ClientXMPP, *, mutual: bool) -> None:
    """The contact asks for the car's presence and the driver approves; ``mutual``: the car asks back.

    Two-way is what most clients do; it is also what lets the car's server see the contact's
    caps and so deliver PEP notifications without an explicit node subscription.
    """
    car_jid, contact_jid = car.boundjid.bare, contact.boundjid.bare
    asked = asyncio.Event()

    def on_subscribe(presence: Any) -> None:
        if presence["from"].bare == contact_jid:
            asked.set()

    car.add_event_handler("presence_subscribe", on_subscribe)
    contact.send_presence(pto=car_jid, ptype="subscribe")
    async with asyncio.timeout(TIMEOUT):
        await asked.wait()
    car.del_event_handler("presence_subscribe", on_subscribe)
    car.send_presence(pto=contact_jid, ptype="subscribed")
    if mutual:
        def approve_car(presence: Any) -> None:
            if presence["from"].bare == car_jid:
                contact.send_presence(pto=car_jid, ptype="subscribed")

        contact.add_event_handler("presence_subscribe", approve_car)
        car.send_presence(pto=contact_jid, ptype="subscribe")
    want = "both" if mutual else "from"
    await eventually(lambda: contact_jid in car.client_roster
                     and car.client_roster[contact_jid]["subscription"] == want, f"{contact_jid} {want} the car")


async def barrier(car: slixmpp.ClientXMPP, inbox: Inbox, contact: slixmpp.ClientXMPP) -> None:
    """Everything the server sent the contact before now has arrived: a chat from the car comes after it."""
    token = secrets.token_hex(4)
    car.send_message(mto=slixmpp.JID(contact.boundjid.bare), mbody=token, mtype="chat")
    await inbox.wait_for(lambda: token in inbox.chats, "the barrier message")


async def node_config(car: slixmpp.ClientXMPP) -> dict[str, Any]:
    result = await car.plugin["xep_0060"].get_node_config(car.boundjid.bare, NODE, timeout=10)
    return dict(result["pubsub_owner"]["configure"]["form"].get_values())


async def members(car: slixmpp.ClientXMPP) -> dict[str, str]:
    result = await car.plugin["xep_0060"].get_node_affiliations(car.boundjid.bare, NODE, timeout=10)
    return {str(a["jid"]): a["affiliation"] for a in result["pubsub_owner"]["affiliations"]}


async def refused(action: Any) -> str:
    """The error condition of an IQ the server must refuse."""
    with pytest.raises(IqError) as caught:
        await action
    return str(caught.value.condition)


def location(car: slixmpp.ClientXMPP, state: VehicleState, config: LocationConfig, operators: tuple[str, ...],
             clock: Clock) -> LocationPolicy:
    """The location policy and its publisher on the car's client, as the agent makes them."""
    plugin = enable(car, GeolocPlugin, access_model=ACCESS_MODELS[config.access], operators=operators,
                    precision=config.precision)
    return LocationPolicy(state, config, clock, plugin)


async def published(publisher: LocationPolicy, count: int) -> None:
    await eventually(lambda: publisher.published >= count, f"{count} publish(es) confirmed")


# -- who sees it ---------------------------------------------------------------------------------


async def test_the_operator_receives_the_location_and_a_friend_neither_receives_nor_retrieves_it(
        net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    op_jid, op_pw = xmpp_account("op")
    friend_jid, friend_pw = xmpp_account("friend")
    car = await net.connect(car_jid, car_pw)
    operator = await net.connect(op_jid, op_pw, geoloc_interest=True)
    friend = await net.connect(friend_jid, friend_pw, geoloc_interest=True)
    op_inbox, friend_inbox = Inbox(operator, car_jid), Inbox(friend, car_jid)
    await subscribe_to_car(car, operator, mutual=True)
    await subscribe_to_car(car, friend, mutual=True)
    state = VehicleState()
    fill(state, START)

    publisher = net.publisher(car, state, ManualClock(), (op_jid,))  # default: access = "operators"
    await op_inbox.wait_location(rounded(START))

    # The operator can also fetch it, and what is stored is rounded, in m/s, with the fix's time.
    items = await operator.plugin["xep_0060"].get_items(car_jid, NODE, timeout=10)
    stored = parse(list(items["pubsub"]["items"])[0]["payload"])
    assert (stored.lat, stored.lon) == rounded(START)
    assert stored.fields == {"lat": "37.4015", "lon": "127.1088", "alt": "71", "bearing": "182", "speed": "10.0",
                             "timestamp": "2026-04-18T00:12:00Z", "accuracy": "8"}
    # The friend, an approved contact with the same interest, gets nothing and may fetch nothing.
    assert await refused(friend.plugin["xep_0060"].get_items(car_jid, NODE, timeout=10)) == "forbidden"
    assert await refused(friend.plugin["xep_0060"].subscribe(car_jid, NODE, timeout=10)) == "forbidden"
    await barrier(car, friend_inbox, friend)
    assert friend_inbox.locations == []
    # What Prosody keeps: a whitelist node of one item, the operator a member, the friend nothing.
    config = await node_config(car)
    assert (config["pubsub#access_model"], config["pubsub#max_items"]) == ("whitelist", "1")
    assert (await members(car)).get(op_jid) == "member" and friend_jid not in await members(car)
    assert publisher.published == 1


async def test_with_access_contacts_the_friend_sees_it_until_the_profile_says_operators(
        net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    op_jid, op_pw = xmpp_account("op")
    friend_jid, friend_pw = xmpp_account("friend")
    car = await net.connect(car_jid, car_pw)
    operator = await net.connect(op_jid, op_pw, geoloc_interest=True)
    friend = await net.connect(friend_jid, friend_pw, geoloc_interest=True)
    op_inbox, friend_inbox = Inbox(operator, car_jid), Inbox(friend, car_jid)
    await subscribe_to_car(car, operator, mutual=True)
    await subscribe_to_car(car, friend, mutual=True)
    state = VehicleState()
    fill(state, START)

    contacts = net.publisher(car, state, ManualClock(), (op_jid,), access="contacts")
    await friend_inbox.wait_location(rounded(START))
    await op_inbox.wait_location(rounded(START))
    assert (await node_config(car))["pubsub#access_model"] == "presence"
    await contacts.stop()

    # The same car restarted with access = "operators", having moved: the node becomes a whitelist.
    moved = north_of(START, 200)
    fill(state, moved)
    operators = net.publisher(car, state, ManualClock(), (op_jid,))
    await op_inbox.wait_location(rounded(moved))
    await barrier(car, friend_inbox, friend)
    assert rounded(moved) not in friend_inbox.places()
    assert set(friend_inbox.places()) == {rounded(START)}  # the friend's interest was live all along
    assert await refused(friend.plugin["xep_0060"].get_items(car_jid, NODE, timeout=10)) == "forbidden"
    assert (await node_config(car))["pubsub#access_model"] == "whitelist"
    assert operators.published == 1


async def test_a_node_reconfigured_behind_the_cars_back_is_set_back_before_the_next_publish(
        net: Net, xmpp_account: AccountFactory, caplog: pytest.LogCaptureFixture) -> None:
    car_jid, car_pw = xmpp_account("car")
    op_jid, op_pw = xmpp_account("op")
    friend_jid, friend_pw = xmpp_account("friend")
    car = await net.connect(car_jid, car_pw)
    operator = await net.connect(op_jid, op_pw, geoloc_interest=True)
    friend = await net.connect(friend_jid, friend_pw, geoloc_interest=True)
    op_inbox, friend_inbox = Inbox(operator, car_jid), Inbox(friend, car_jid)
    await subscribe_to_car(car, operator, mutual=True)
    await subscribe_to_car(car, friend, mutual=True)
    state, clock = VehicleState(), ManualClock()
    fill(state, START)
    publisher = net.publisher(car, state, clock, (op_jid,))
    await op_inbox.wait_location(rounded(START))

    # Another client of the same account opens the node to all contacts.
    form = car.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#node_config")
    form.add_field(var="pubsub#access_model", value="presence")
    await car.plugin["xep_0060"].set_node_config(car_jid, NODE, form, timeout=10)

    clock.t = 60.0
    moved = north_of(START, 500)
    fill(state, moved)
    await op_inbox.wait_location(rounded(moved))
    await barrier(car, friend_inbox, friend)
    assert friend_inbox.locations == []  # the publish was refused (precondition) until the node was ours again
    assert (await node_config(car))["pubsub#access_model"] == "whitelist"
    assert publisher.published == 2
    assert "the PEP node's access model had changed" in caplog.text


async def test_what_prosodys_pep_accepts(net: Net, xmpp_account: AccountFactory) -> None:
    """Prosody 0.12 mod_pep: access models presence, whitelist, open only; publish-options are preconditions."""
    car_jid, car_pw = xmpp_account("car")
    car = await net.connect(car_jid, car_pw)
    state = VehicleState()
    fill(state, START)
    publisher = net.publisher(car, state, ManualClock())
    await published(publisher, 1)
    await publisher.stop()
    pubsub, forms = car.plugin["xep_0060"], car.plugin["xep_0004"]
    for model in ("roster", "authorize"):  # XEP-0060 models a roster-group whitelist would need
        form = forms.make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#node_config")
        form.add_field(var="pubsub#access_model", value=model)
        assert await refused(pubsub.set_node_config(car_jid, NODE, form, timeout=10)) == "not-acceptable"
    options = forms.make_form(ftype="submit")
    options.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#publish-options")
    options.add_field(var="pubsub#access_model", value="presence")
    with pytest.raises(IqError) as caught:
        await pubsub.publish(car_jid, NODE, id="current", payload=geoloc_element(Position(*START, FIX_TIME), 4),
                             options=options, timeout=10)
    assert caught.value.condition == "conflict"
    assert caught.value.iq["error"].xml.find("{http://jabber.org/protocol/pubsub#errors}precondition-not-met") \
        is not None
    assert (await node_config(car))["pubsub#access_model"] == "whitelist"


async def test_operators_of_a_domain_are_whitelisted_once_approved_in_the_roster(
        net: Net, xmpp_account: AccountFactory, prosody_server: ServerInfo) -> None:
    car_jid, car_pw = xmpp_account("car")
    op_jid, op_pw = xmpp_account("dispatch")
    other_jid, other_pw = xmpp_account("other")  # same domain, never approved
    car = await net.connect(car_jid, car_pw)
    operator = await net.connect(op_jid, op_pw)
    other = await net.connect(other_jid, other_pw)
    state = VehicleState()
    fill(state, START)
    publisher = net.publisher(car, state, ManualClock(), (f"@{prosody_server.domain}",))
    await published(publisher, 1)
    assert op_jid not in await members(car)

    await subscribe_to_car(car, operator, mutual=False)  # the roster push makes the operator a member
    roster_members: dict[str, str] = {}

    async def is_member() -> bool:
        roster_members.update(await members(car))
        return roster_members.get(op_jid) == "member"

    async with asyncio.timeout(TIMEOUT):
        while not await is_member():
            await asyncio.sleep(0.05)
    items = await operator.plugin["xep_0060"].get_items(car_jid, NODE, timeout=10)
    assert (parse(list(items["pubsub"]["items"])[0]["payload"]).lat) == rounded(START)[0]
    assert await refused(other.plugin["xep_0060"].get_items(car_jid, NODE, timeout=10)) == "forbidden"
    assert other_jid not in roster_members


async def test_an_operator_taken_out_of_the_profile_loses_access(net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    op_jid, op_pw = xmpp_account("op")
    car = await net.connect(car_jid, car_pw)
    operator = await net.connect(op_jid, op_pw)
    state = VehicleState()
    fill(state, START)
    before = net.publisher(car, state, ManualClock(), (op_jid,))
    await published(before, 1)
    items = await operator.plugin["xep_0060"].get_items(car_jid, NODE, timeout=10)
    assert len(list(items["pubsub"]["items"])) == 1
    await before.stop()

    after = net.publisher(car, state, ManualClock(), ())  # the next start, with the operator removed
    await published(after, 1)
    assert op_jid not in await members(car)
    assert await refused(operator.plugin["xep_0060"].get_items(car_jid, NODE, timeout=10)) == "forbidden"


# -- how often -----------------------------------------------------------------------------------


async def test_small_moves_wait_for_the_distance_and_the_interval(net: Net, xmpp_account: AccountFactory) -> None:
    """An operator with a one-way subscription (as the contacts policy makes) subscribes to the node."""
    car_jid, car_pw = xmpp_account("car")
    op_jid, op_pw = xmpp_account("op")
    car = await net.connect(car_jid, car_pw)
    operator = await net.connect(op_jid, op_pw)
    inbox = Inbox(operator, car_jid)
    await subscribe_to_car(car, operator, mutual=False)
    state, clock = VehicleState(), ManualClock()
    fill(state, START)
    publisher = net.publisher(car, state, clock, (op_jid,), every=30.0, min_distance=25.0, precision=5)
    await published(publisher, 1)
    await operator.plugin["xep_0060"].subscribe(car_jid, NODE, timeout=10)
    await inbox.wait_location(rounded(START, 5))  # the last item, sent on subscription

    # (vehicle time, metres north of the start, publishes confirmed once the fix is in)
    steps = [(5.0, 10.0, 1),  # 10 m: too close
             (10.0, 20.0, 1),  # 20 m: too close
             (20.0, 40.0, 1),  # 40 m but 20 s after the first: too soon
             (31.0, 45.0, 2),  # 45 m, 31 s: goes
             (40.0, 60.0, 2),  # 15 m from the last: too close
             (65.0, 65.0, 2),  # 20 m from the last: too close
             (70.0, 100.0, 3)]  # 55 m, 39 s after the last: goes
    for t, metres, count in steps:
        clock.t = t
        fill(state, north_of(START, metres))
        await asyncio.sleep(0)  # the decision runs once the whole fix is in
        await published(publisher, count)
    clock.t = 71.0
    state.update(paths.MODE, "driving", "mode")
    state.update(paths.MODE, "parked", "mode")  # stopping publishes at once, whatever the interval
    await published(publisher, 4)
    await barrier(car, inbox, operator)
    assert inbox.places() == [rounded(START, 5), rounded(north_of(START, 45.0), 5),
                              rounded(north_of(START, 100.0), 5), rounded(north_of(START, 100.0), 5)]
    assert [g.fields["speed"] for g in inbox.locations] == ["10.0"] * 4


async def test_a_position_due_later_is_published_without_waiting_for_another_fix(
        net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    car = await net.connect(car_jid, car_pw)
    state = VehicleState()
    fill(state, START)
    publisher = net.publisher(car, state, Clock(speed=100.0), every=30.0)  # 30 vehicle s = 0.3 s
    await published(publisher, 1)
    fill(state, north_of(START, 300))  # far enough, too soon: it goes when due, with no new fix
    await published(publisher, 2)
    assert publisher.acked is not None and publisher.acked.latitude == pytest.approx(north_of(START, 300)[0])


# -- online and offline --------------------------------------------------------------------------


async def test_nothing_is_published_offline_and_the_position_goes_out_once_on_reconnection(
        net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    op_jid, op_pw = xmpp_account("op")
    car = await net.connect(car_jid, car_pw)
    operator = await net.connect(op_jid, op_pw)
    inbox = Inbox(operator, car_jid)
    await subscribe_to_car(car, operator, mutual=False)
    state, clock = VehicleState(), ManualClock()
    fill(state, START)
    publisher = net.publisher(car, state, clock, (op_jid,))
    await published(publisher, 1)
    await operator.plugin["xep_0060"].subscribe(car_jid, NODE, timeout=10)
    await inbox.wait_location(rounded(START))

    await net.disconnect(car)
    for n in range(1, 4):  # a drive through a dead zone
        clock.t = 100.0 * n
        fill(state, north_of(START, 300.0 * n))
        await asyncio.sleep(0)
    assert publisher.published == 1
    back = asyncio.Event()
    car.add_event_handler("session_start", lambda _: back.set())
    car.connect(net.server.host, net.server.port)
    async with asyncio.timeout(TIMEOUT):
        await back.wait()
    await inbox.wait_location(rounded(north_of(START, 900.0)))
    await barrier(car, inbox, operator)
    assert inbox.places() == [rounded(START), rounded(north_of(START, 900.0))]
    assert publisher.published == 2


async def test_a_publisher_started_late_publishes_at_once_and_stop_is_idempotent(
        net: Net, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    car = await net.connect(car_jid, car_pw)
    state = VehicleState()
    fill(state, START)
    publisher = location(car, state, LocationConfig(), (), ManualClock())
    publisher.start()
    await published(publisher, 1)
    await publisher.stop()
    await publisher.stop()
    fill(state, north_of(START, 1000))
    await asyncio.sleep(0.05)
    assert publisher.published == 1  # stopped: the state no longer reaches it
    disabled = location(car, state, LocationConfig(enabled=False), (), ManualClock())
    disabled.start()
    await disabled.stop()
    assert disabled.published == 0


# -- the decision and the payload, without a server ----------------------------------------------


def test_throttle_needs_distance_and_interval() -> None:
    throttle = Throttle(every=30.0, min_distance=25.0)
    first = Position(*START, FIX_TIME)
    assert throttle.wait(first, 0.0) == 0.0  # nothing published yet
    throttle.mark(first, 0.0)
    assert throttle.wait(Position(*north_of(START, 24.0), FIX_TIME), 100.0) is None
    assert throttle.wait(Position(*north_of(START, 26.0), FIX_TIME), 10.0) == pytest.approx(20.0)
    assert throttle.wait(Position(*north_of(START, 26.0), FIX_TIME), 30.0) == 0.0
    assert throttle.distance(Position(*north_of(START, 1000.0), FIX_TIME)) == pytest.approx(1000.0, rel=1e-3)


def test_geoloc_is_rounded_and_never_claims_more_accuracy_than_the_rounding_leaves() -> None:
    fix = Position(37.4012345, 127.1087654, FIX_TIME + 0.25, altitude=-3.6, bearing=359.7, speed=27.777,
                   accuracy=2.5)
    fields = parse(geoloc_element(fix, 2)).fields
    assert fields == {"lat": "37.40", "lon": "127.11", "alt": "-4", "bearing": "0", "speed": "27.8",
                      "timestamp": "2026-04-18T00:12:00.250Z",
                      "accuracy": str(math.ceil(rounding_error_m(37.4, 2)))}
    assert 700 < rounding_error_m(37.4, 2) < 800  # half a step of 0.01° each way
    assert parse(geoloc_element(Position(-0.00001, 0.0, FIX_TIME, accuracy=50.0), 4)).fields == {
        "lat": "0.0000", "lon": "0.0000", "timestamp": "2026-04-18T00:12:00Z", "accuracy": "50"}
    for nonsense in (float("nan"), 1e20):  # a receiver's broken clock: the position goes, without a time
        assert "timestamp" not in parse(geoloc_element(Position(*START, nonsense), 4)).fields


def test_a_stale_or_invalid_position_is_no_position() -> None:
    clock = ManualClock()
    state = VehicleState(clock=clock.now)
    assert current_position(state) is None
    fill(state, START, speed=-7.2)
    position = current_position(state)
    assert position is not None and position.speed == pytest.approx(2.0) and position.timestamp == FIX_TIME
    state.set_stale_after("gnss", 5.0)
    clock.t = 6.0
    state.expire()
    assert current_position(state) is None
    state.update(paths.LATITUDE, float("nan"), "gnss")
    state.update(paths.LONGITUDE, 127.0, "gnss")
    assert current_position(state) is None
    state.update(paths.LATITUDE, 91.0, "gnss")
    assert current_position(state) is None
    state.update(paths.LATITUDE, True, "gnss")
    assert current_position(state) is None
