"""Bytes on the wire per telemetry sample (TLS and stream management included), batched and single."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.profile.model import AccountConfig
from agent.telemetry.codec import encode
from agent.xmpp.client import XmppSession
from agent.xmpp.plugins.base import enable
from agent.xmpp.plugins.telemetry import TelemetryPlugin
from devserver.fleet import FleetReceiver
from devserver.prosody import Prosody
from tests.harness.tcpproxy import TcpProxy
from tests.test_telemetry_codec import realistic_batch

NODE = "headunit/telemetry/bench"
PUBLISHES = 20


@dataclass
class WireFigure:
    samples_per_publish: int
    bytes_per_sample: float  # median over the publishes
    bytes_per_publish: float


async def measure(publishes: int = PUBLISHES, sizes: tuple[int, ...] = (64, 1)) -> list[WireFigure]:
    with tempfile.TemporaryDirectory(prefix="headunit-bench-wire-") as folder, Prosody(Path(folder)) as server:
        info = server.server_info()
        car = server.register("bench-car", "pw-car")
        fleet = server.register("fleet", "pw-fleet")
        receiver = FleetReceiver(fleet, "pw-fleet", info, server.pubsub_host, NODE)
        await receiver.connect()
        await receiver.provision(car)
        await receiver.stop()
        async with TcpProxy(info.host, info.port) as proxy:
            session = XmppSession(AccountConfig(jid=car, password="pw-car", host=info.host, port=proxy.port,
                                                ca_file=info.ca_file))
            session.start()
            try:
                await session.wait_online(20)
                publisher = enable(session.client, TelemetryPlugin, service=server.pubsub_host, node=NODE)
                await asyncio.sleep(1.0)  # let the session's start-up traffic settle
                return [await _figure(proxy, publisher, size, publishes) for size in sizes]
            finally:
                await session.stop()


async def _figure(proxy: TcpProxy, publisher: TelemetryPlugin, size: int, publishes: int) -> WireFigure:
    per_publish = []
    for i in range(publishes):
        samples = realistic_batch(max(size, 4), seed=i)[:size]
        batch_id = f"bench-{size}-{i:04d}"
        before = proxy.bytes_up + proxy.bytes_down
        await publisher.publish(batch_id, encode(batch_id, samples), 20)
        await asyncio.sleep(0.2)  # the stream-management ack that follows belongs to this publish
        per_publish.append(proxy.bytes_up + proxy.bytes_down - before)
    median = statistics.median(per_publish)
    return WireFigure(size, median / size, median)
