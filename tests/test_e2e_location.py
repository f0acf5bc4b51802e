"""End to end: the demo car's location reaches an operator's ordinary client by PEP push, not a friend's."""

from __future__ import annotations

import asyncio
import secrets
import sys

import pytest
import slixmpp

from tests.harness.agentproc import DEMO_PROFILE, AgentProcess
from devserver.clients import close_client, log_in, verified_client
from devserver.prosody import Prosody, ServerInfo

GEOLOC = "http://jabber.org/protocol/geoloc"


class LocationWatcher:
    """A stock-like client: caps with geoloc+notify, approves the car's presence request."""

    def __init__(self, jid: str, password: str, server: ServerInfo, car: str) -> None:
        self.client = verified_client(jid, password, server, resource="phone",
                                      plugins=("xep_0030", "xep_0115", "xep_0163", "xep_0080"))
        self.client.plugin["xep_0163"].add_interest(GEOLOC)
        self.client.roster.auto_authorize = True  # approves the car asking for our presence
        self.server, self.car = server, car
        self.fixes: list[tuple[float, float]] = []
        self.client.add_event_handler("user_location_publish", self._on_location)
        self.saw_car = False
        self.client.add_event_handler("presence_available", self._on_presence)

    def _on_presence(self, presence: slixmpp.Presence) -> None:
        self.saw_car = self.saw_car or presence["from"].bare == self.car

    def _on_location(self, message: slixmpp.Message) -> None:
        if message["from"].bare != self.car:
            return
        for item in message["pubsub_event"]["items"].iterables:
            geoloc = item.xml.find(f"{{{GEOLOC}}}geoloc")
            lat, lon = geoloc.find(f"{{{GEOLOC}}}lat"), geoloc.find(f"{{{GEOLOC}}}lon")
            if lat is not None and lon is not None:
                self.fixes.append((float(lat.text), float(lon.text)))

    async def start(self) -> None:
        await log_in(self.client, self.server)
        self.client.send_presence_subscription(pto=self.car, ptype="subscribe")

    async def stop(self) -> None:
        await close_client(self.client)


@pytest.mark.slow
async def test_the_operator_gets_location_pushes_during_the_drive_and_a_friend_does_not(prosody: Prosody) -> None:
    car_password = secrets.token_urlsafe(12)
    car = prosody.register(f"car-{secrets.token_hex(3)}", car_password)
    operator_password = secrets.token_urlsafe(12)
    operator = prosody.register("operator", operator_password)  # the demo profile's operator
    friend_password = secrets.token_urlsafe(12)
    friend = prosody.register(f"friend-{secrets.token_hex(3)}", friend_password)
    server = prosody.server_info()
    watchers = [LocationWatcher(operator, operator_password, server, car),
                LocationWatcher(friend, friend_password, server, car)]
    for watcher in watchers:
        await watcher.start()
    agent = AgentProcess(server, car, car_password, speed=10.0)
    agent.start()
    try:
        await agent.wait_for_line("online as", timeout=30)
        # the driver approves the friend from the command line (no dashboard yet)
        approve = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "contacts", str(DEMO_PROFILE), "approve", friend,
            env=agent.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await approve.communicate()
        assert approve.returncode == 0, output.decode()
        async with asyncio.timeout(60):
            while len(watchers[0].fixes) < 3 or not watchers[1].saw_car:
                await asyncio.sleep(0.1)
        with pytest.raises(slixmpp.exceptions.IqError) as refused:
            await watchers[1].client.plugin["xep_0060"].get_items(car, GEOLOC, timeout=10)
        assert refused.value.condition == "forbidden"
    finally:
        agent.stop()
        for watcher in watchers:
            await watcher.stop()
    for lat, lon in watchers[0].fixes:  # the demo drive is around Pangyo
        assert 37.2 < lat < 37.5 and 127.0 < lon < 127.2, (lat, lon)
        assert round(lat, 4) == lat and round(lon, 4) == lon, "published at the profile's precision"
    assert watchers[1].fixes == [], "a contact the driver approved, not an operator, never gets the location"
