"""The session on the road: a cut link is resumed with nothing lost or doubled, a half-open link is
detected within the ping timeout, and a server restart gives a fresh session. Through a TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

from slixmpp import JID

from agent.policies.presence import PresenceUpdate
from agent.profile.model import AccountConfig, SessionConfig
from agent.xmpp.client import XmppSession
from drivers.backoff import Backoff
from devserver.clients import close_client, log_in, verified_client
from devserver.prosody import AccountFactory, Prosody, ServerInfo
from tests.harness.tcpproxy import TcpProxy

FAST = SessionConfig(ping_interval=2.0, ping_timeout=2.0, reconnect_initial=0.3, reconnect_cap=1.0)


class Peer:
    """A contact's plain slixmpp client, connected directly (not through the proxy)."""

    def __init__(self, jid: str, password: str, server: ServerInfo) -> None:
        self.client = verified_client(jid, password, server, resource="peer")
        self.server = server
        self.received: list[str] = []
        self.client.add_event_handler("message", lambda m: self.received.append(m["body"]))

    async def start(self) -> None:
        await log_in(self.client, self.server)

    async def stop(self) -> None:
        await close_client(self.client)


def car_session(server: ServerInfo, port: int, jid: str, password: str) -> XmppSession:
    account = AccountConfig(jid=jid, password=password, host=server.host, port=port, ca_file=server.ca_file)
    return XmppSession(account, session=FAST, backoff=Backoff(FAST.reconnect_initial, FAST.reconnect_cap, jitter=1.0))


@contextlib.asynccontextmanager
async def proxied(server: ServerInfo) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(server.host, server.port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def until(predicate: object, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_a_cut_link_is_resumed_and_no_message_is_lost_or_doubled_either_way(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    peer_jid, peer_pw = xmpp_account("peer")
    peer = Peer(peer_jid, peer_pw, prosody_server)
    await peer.start()
    async with proxied(prosody_server) as proxy:
        session = car_session(prosody_server, proxy.port, car_jid, car_pw)
        at_car: list[str] = []
        session.client.add_event_handler("message", lambda m: at_car.append(m["body"]))
        session.start()
        try:
            await session.wait_online(20)
            await until(lambda: session.is_resumable, 10)
            for i in range(60):  # traffic both ways, and the link is cut in the middle of it
                session.client.send_message(mto=JID(peer_jid), mbody=f"up {i}", mtype="chat")
                peer.client.send_message(mto=JID(car_jid), mbody=f"down {i}", mtype="chat")
                if i == 30:
                    await proxy.cut(reset=True)
                await asyncio.sleep(0.01)
            await until(lambda: session.resumptions == 1 and session.is_online, 20)
            await until(lambda: len(peer.received) >= 60 and len(at_car) >= 60, 20)
            await asyncio.sleep(0.5)  # a duplicate would arrive by now
        finally:
            await session.stop()
            await peer.stop()
    assert session.fresh_sessions == 1, "resumed, not a new session"
    assert peer.received == [f"up {i}" for i in range(60)], "car → peer: all, once, in order: " + ",".join(m.split()[1] for m in peer.received)
    assert at_car == [f"down {i}" for i in range(60)], "peer → car: all, once, in order"


async def test_a_half_open_link_is_detected_within_the_ping_timeout_and_then_resumed(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    async with proxied(prosody_server) as proxy:
        session = car_session(prosody_server, proxy.port, car_jid, car_pw)
        session.start()
        try:
            await session.wait_online(20)
            await until(lambda: session.is_resumable, 10)  # <enabled/> may come after the session starts
            proxy.stall(True)  # a tunnel: the TCP connection stays open, nothing gets through
            stalled_at = time.monotonic()
            await until(lambda: not session.is_online, FAST.ping_interval + FAST.ping_timeout + 10)
            detected_after = time.monotonic() - stalled_at
            assert session.dead_links == 1 and "no answer from the server" in (session.last_error or "")
            proxy.stall(False)  # out of the tunnel
            await until(lambda: session.is_online, 20)
        finally:
            await session.stop()
    # the probe goes out after ping_interval of silence; dead ping_timeout later (plus monitor ticks)
    assert detected_after <= FAST.ping_interval + FAST.ping_timeout + 1.5, detected_after
    assert session.resumptions == 1 and session.fresh_sessions == 1


async def test_after_a_server_restart_a_fresh_session_starts_and_presence_is_restored(tmp_path: Path) -> None:
    with Prosody(tmp_path / "server") as server:
        info = server.server_info()
        car = server.register("car", "pw-car")
        session = car_session(info, info.port, car, "pw-car")
        starts: list[float] = []
        session.fresh_session.listen(lambda _: starts.append(time.monotonic()))
        session.send_presence_update(PresenceUpdate("dnd", "Driving · 40 km/h", 0))
        session.start()
        try:
            await session.wait_online(20)
            server.restart()  # the server forgets every session: resumption must fail
            session.send_presence_update(PresenceUpdate(None, "Parked", 0))
            await until(lambda: len(starts) == 2 and session.is_online, 30)
            assert session.fresh_sessions == 2 and session.resumptions == 0
            assert session._sent_presence == PresenceUpdate(None, "Parked", 0)
        finally:
            await session.stop()


def test_reconnect_delays_of_a_fleet_are_spread_not_in_lockstep() -> None:
    """100 cars lose the server at once: their first retries spread over the whole window."""
    fleet = [Backoff(initial=1.0, cap=300.0, jitter=1.0, _rng=random.Random(seed)) for seed in range(100)]
    first = sorted(car.next_delay() for car in fleet)
    assert 0 < first[0] < 0.1 and 0.9 < first[-1] <= 1.0
    crowd = max(sum(1 for d in first if w / 10 <= d < (w + 1) / 10) for w in range(10))
    assert crowd <= 25, f"{crowd} of 100 cars retry in the same 100 ms (uniform spread: about 10)"
    later = [car.next_delay() for car in fleet for _ in range(12)][-100:]
    assert max(later) <= 300.0, "capped"


async def test_a_slow_link_is_not_mistaken_for_a_dead_one(prosody_server: ServerInfo,
                                                          xmpp_account: AccountFactory) -> None:
    car_jid, car_pw = xmpp_account("car")
    peer_jid, peer_pw = xmpp_account("peer")
    peer = Peer(peer_jid, peer_pw, prosody_server)
    await peer.start()
    async with proxied(prosody_server) as proxy:
        session = car_session(prosody_server, proxy.port, car_jid, car_pw)
        session.start()
        try:
            await session.wait_online(20)
            proxy.slow(1500, latency=0.6)  # an edge link at the fringe of coverage
            for i in range(20):
                session.client.send_message(mto=JID(peer_jid), mbody=f"slow {i}", mtype="chat")
                await asyncio.sleep(0.3)
            await until(lambda: len(peer.received) == 20, 30)
            await asyncio.sleep(FAST.ping_interval + FAST.ping_timeout)  # quiet: probes on a slow link
        finally:
            await session.stop()
            await peer.stop()
    assert session.dead_links == 0 and session.fresh_sessions == 1 and session.resumptions == 0
    assert peer.received == [f"slow {i}" for i in range(20)]
