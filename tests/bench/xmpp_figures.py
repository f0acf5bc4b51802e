"""XMPP figures: presence latency (state change → watcher) and time to resume after the link is back."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.policies.contacts import SubscriptionPolicy
from agent.policies.presence import PresencePolicy
from agent.profile.model import AccountConfig, ContactsConfig, PresencePolicyConfig, SessionConfig
from agent.vehicle import paths
from agent.vehicle.state import VehicleState
from agent.xmpp.client import XmppSession
from agent.xmpp.plugins.contacts import ContactsPlugin
from devserver.clients import Watcher
from devserver.prosody import Prosody, ServerInfo
from tests.harness.tcpproxy import TcpProxy


@dataclass
class Quantiles:
    p50: float
    p99: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Quantiles:
        ordered = sorted(values)
        return cls(statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
                   len(ordered))


def account(server: ServerInfo, jid: str, password: str, port: int | None = None) -> AccountConfig:
    return AccountConfig(jid=jid, password=password, host=server.host, port=port or server.port,
                         ca_file=server.ca_file)


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


async def presence_latency(server: Prosody, samples: int = 200) -> Quantiles:
    """A mode change in the vehicle state until the operator's client has the presence."""
    info = server.server_info()
    car = server.register("bench-car", "pw-car")
    operator = server.register("bench-operator", "pw-op")
    state = VehicleState()
    session = XmppSession(account(info, car, "pw-car"))
    session.enable(ContactsPlugin, policy=SubscriptionPolicy.from_profile(ContactsConfig(), [operator]))
    policy = PresencePolicy(state, PresencePolicyConfig(), session)
    watcher = Watcher(operator, "pw-op", info, car)
    state.update(paths.MODE, "parked", "agent")
    policy.start()
    session.start()
    latencies: list[float] = []
    try:
        await session.wait_online(20)
        await watcher.start()
        await until(lambda: any(p.status == "Parked" for p in watcher.seen), 10)
        for i in range(samples):
            mode = "driving" if i % 2 == 0 else "parked"
            expected = "dnd" if mode == "driving" else ""
            seen = len(watcher.seen)
            start = time.perf_counter()
            state.update(paths.MODE, mode, "agent")
            await until(lambda: len(watcher.seen) > seen and watcher.seen[-1].show == expected, 10)
            latencies.append(time.perf_counter() - start)
    finally:
        policy.stop()
        await session.stop()
        await watcher.stop()
    return Quantiles.of(latencies)


async def resume_times(server: Prosody, rounds: int = 20, outage: float = 2.0) -> tuple[Quantiles, Quantiles]:
    """After an outage of ``outage`` s: link back → session resumed, and the resumption handshake alone."""
    info = server.server_info()
    car = server.register("bench-road", "pw-road")
    proxy = TcpProxy(info.host, info.port)
    await proxy.start()
    session = XmppSession(account(info, car, "pw-road", proxy.port),
                          session=SessionConfig(reconnect_initial=1.0, reconnect_cap=2.0))
    connecting: list[float] = []
    session.client.add_event_handler("connecting", lambda _: connecting.append(time.perf_counter()))
    restored_to_resumed: list[float] = []
    handshakes: list[float] = []
    session.start()
    try:
        await session.wait_online(20)
        await until(lambda: session.is_resumable, 10)
        for _ in range(rounds):
            resumed = session.resumptions
            proxy.refuse(True)
            await proxy.cut(reset=True)
            await asyncio.sleep(outage)
            connecting.clear()
            restored = time.perf_counter()
            proxy.refuse(False)
            await until(lambda: session.resumptions > resumed and session.is_online, 30)
            done = time.perf_counter()
            restored_to_resumed.append(done - restored)
            handshakes.append(done - max(t for t in connecting if t >= restored) if any(
                t >= restored for t in connecting) else done - restored)
    finally:
        await session.stop()
        await proxy.stop()
    return Quantiles.of(restored_to_resumed), Quantiles.of(handshakes)


async def measure(progress: Callable[[str], None] = print) -> dict[str, Quantiles]:
    with tempfile.TemporaryDirectory(prefix="headunit-bench-xmpp-") as folder, Prosody(Path(folder)) as server:
        latency = await presence_latency(server)
        progress(f"  presence latency p50 {latency.p50 * 1000:.1f} ms, p99 {latency.p99 * 1000:.1f} ms")
        restored, handshake = await resume_times(server)
        progress(f"  link back → resumed p50 {restored.p50:.2f} s; handshake p50 {handshake.p50 * 1000:.0f} ms")
    return {"presence": latency, "restored": restored, "handshake": handshake}
