"""Telemetry through a real Prosody's PubSub: delivered with original timestamps, once, in order, late or not.

Prosody's PubSub component lets only its admins create nodes, so these tests
run a ``FleetProsody`` whose admin ``fleet`` provisions each car's node with the
car as publisher (how a fleet runs it), plus an admin car, ``bigcar``, to show
the path where the service lets the car create and own its node.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import slixmpp

from agent.clock import Clock
from agent.profile.model import TelemetryConfig, TelemetryRule
from agent.telemetry import Telemetry
from agent.telemetry.codec import encode
from agent.telemetry.queue import Sample, TelemetryQueue
from agent.telemetry.sender import TelemetrySender
from agent.vehicle import paths
from agent.vehicle.state import VehicleState
from agent.telemetry.publisher import NodeSetupError, PublishError, node_name
from agent.xmpp.plugins.base import enable
from agent.xmpp.plugins.telemetry import TelemetryPlugin
from drivers.backoff import Backoff
from devserver.clients import close_client
from devserver.fleet import FleetProsody, FleetReceiver
from devserver.pki import Pki
from devserver.prosody import ServerInfo
from tests.harness.tcpproxy import TcpProxy
from tests.test_telemetry_codec import realistic_batch, to_ms

WAIT = 20.0  # generous: only there so a broken server cannot hang the suite
FLEET = "fleet"
BIG_CAR = "bigcar"
PASSWORD = "fleet-" + secrets.token_hex(8)
NODE = "headunit/telemetry/{jid}"


@pytest.fixture(scope="module")
def fleet_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[FleetProsody]:
    """A private Prosody whose PubSub admins are ``fleet`` and ``bigcar``."""
    with FleetProsody(tmp_path_factory.mktemp("fleet-prosody"), admins=(FLEET, BIG_CAR), pki=pki) as server:
        server.register(FLEET, PASSWORD)
        server.register(BIG_CAR, PASSWORD)
        yield server


@pytest.fixture
def server(fleet_server: FleetProsody) -> ServerInfo:
    return fleet_server.server_info()


def account(server: FleetProsody, prefix: str) -> tuple[str, str]:
    password = secrets.token_urlsafe(12)
    return server.register(f"{prefix}-{secrets.token_hex(4)}", password), password


@contextlib.asynccontextmanager
async def online(server: ServerInfo, jid: str, password: str) -> AsyncIterator[slixmpp.ClientXMPP]:
    """A logged-in slixmpp client (verified STARTTLS), disconnected afterwards."""
    client = slixmpp.ClientXMPP(f"{jid}/car", password)
    client.enable_direct_tls = False
    client.enable_plaintext = False
    client.ca_certs = Path(server.ca_file)
    started = asyncio.Event()
    client.add_event_handler("session_start", lambda _: started.set())
    client.connect(server.host, server.port)
    try:
        async with asyncio.timeout(WAIT):
            await started.wait()
        yield client
    finally:
        await close_client(client)


@contextlib.asynccontextmanager
async def receiver(server: ServerInfo, node: str, *, subscribe: bool = True,
                   jid: str | None = None, password: str = PASSWORD) -> AsyncIterator[FleetReceiver]:
    fleet = FleetReceiver(jid or f"{FLEET}@{server.domain}", password, server, f"pubsub.{server.domain}", node)
    await fleet.connect()
    try:
        if subscribe:
            await fleet.subscribe()
        yield fleet
    finally:
        await fleet.stop()


async def provisioned(fleet_server: FleetProsody, car_jid: str) -> str:
    """The fleet creates the car's node with the car as publisher; returns the node's name."""
    node = node_name(NODE, car_jid)
    async with receiver(fleet_server.server_info(), node, subscribe=False) as admin:
        await admin.provision(car_jid)
    return node


async def fill(queue: TelemetryQueue, count: int, start: int = 0) -> list[Sample]:
    recorded = [Sample(paths.SPEED, float(i), 1776471120.0 + i * 0.25 + 0.0004) for i in range(start, start + count)]
    await queue.record(recorded)
    return recorded


def publisher_for(client: slixmpp.ClientXMPP, car: str, config: TelemetryConfig | None = None) -> TelemetryPlugin:
    """The car's telemetry publisher, as the agent makes it: the node named after the car, on the config's service."""
    config = config or TelemetryConfig(service="pubsub.localhost")
    assert config.service is not None
    return enable(client, TelemetryPlugin, service=config.service, node=node_name(config.node, car))


async def until(predicate: Any, timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


# -- publishing and receiving ------------------------------------------------------------


async def test_published_batches_reach_the_subscriber_with_their_original_timestamps(
        fleet_server: FleetProsody, server: ServerInfo, tmp_path: Path) -> None:
    car, password = account(fleet_server, "car")
    node = await provisioned(fleet_server, car)
    queue = TelemetryQueue(tmp_path / "t.db")
    recorded = await fill(queue, 10)
    async with receiver(server, node) as fleet, online(server, car, password) as client:
        publisher = enable(client, TelemetryPlugin, service=f"pubsub.{server.domain}", node=node)
        await publisher.ensure_node()
        while (batch := await queue.next_batch(4)) is not None:
            await publisher.publish(batch.id, encode(batch.id, batch.samples), WAIT)
            await queue.ack(batch.id)
        assert await fleet.wait_for_samples(10) == to_ms(recorded)
        assert {b.via for b in fleet.batches.values()} == {"notification"} and len(fleet.batches) == 3
    queue.close()


async def test_republishing_a_batch_id_does_not_duplicate_samples_at_the_receiver(
        fleet_server: FleetProsody, server: ServerInfo, tmp_path: Path) -> None:
    car, password = account(fleet_server, "car")
    node = await provisioned(fleet_server, car)
    queue = TelemetryQueue(tmp_path / "t.db")
    recorded = await fill(queue, 6)
    async with receiver(server, node) as fleet, online(server, car, password) as client:
        publisher = enable(client, TelemetryPlugin, service=f"pubsub.{server.domain}", node=node)
        first = await queue.next_batch(3)
        assert first is not None
        await publisher.publish(first.id, encode(first.id, first.samples), WAIT)
        await publisher.publish(first.id, encode(first.id, first.samples), WAIT)  # the ack was "lost"
        await queue.ack(first.id)
        second = await queue.next_batch(3)
        assert second is not None
        await publisher.publish(second.id, encode(second.id, second.samples), WAIT)
        await fleet.wait_for_samples(6)
        await until(lambda: fleet.duplicates)
        assert await fleet.catch_up() == 0
        assert fleet.samples == to_ms(recorded) and fleet.duplicates.count(first.id) >= 1
        items = await fleet._pubsub.get_items(f"pubsub.{server.domain}", node, timeout=WAIT)
        assert sorted(i["id"] for i in items["pubsub"]["items"]) == sorted([first.id, second.id])
    queue.close()


async def test_an_offline_receiver_catches_up_by_retrieving_the_items(
        fleet_server: FleetProsody, server: ServerInfo, tmp_path: Path) -> None:
    car, password = account(fleet_server, "car")
    node = await provisioned(fleet_server, car)
    queue = TelemetryQueue(tmp_path / "t.db")
    recorded = await fill(queue, 20)
    async with online(server, car, password) as client:
        publisher = enable(client, TelemetryPlugin, service=f"pubsub.{server.domain}", node=node)
        while (batch := await queue.next_batch(6)) is not None:
            await publisher.publish(batch.id, encode(batch.id, batch.samples), WAIT)
            await queue.ack(batch.id)
    async with receiver(server, node, subscribe=False) as fleet:
        assert await fleet.catch_up() == 4
        assert fleet.samples == to_ms(recorded), "every sample once, in the car's order, original timestamps"
        assert {b.via for b in fleet.batches.values()} == {"retrieval"}
    queue.close()


# -- the sender ------------------------------------------------------------------------------


async def test_samples_taken_offline_are_all_delivered_in_order_once_online_and_after_a_restart(
        fleet_server: FleetProsody, server: ServerInfo, tmp_path: Path) -> None:
    """The whole pipeline: state → policy → queue → sender → PubSub → receiver."""
    car, password = account(fleet_server, "car")
    node = await provisioned(fleet_server, car)
    config = TelemetryConfig(service=f"pubsub.{server.domain}", node=NODE, batch_max=8, batch_delay=0.2,
                             rules=(TelemetryRule(paths.SPEED, change=0.0, min_interval=0.0),))
    clock, state = Clock(), VehicleState()
    is_online = asyncio.Event()
    expected = []
    async with receiver(server, node) as fleet, online(server, car, password) as client:
        telemetry = Telemetry(state, config, publisher_for(client, car, config), tmp_path, clock, is_online.wait)
        telemetry.start()
        run = asyncio.create_task(telemetry.run())
        for i in range(30):  # the car drives through a dead zone
            state.update(paths.SPEED, float(i), "can", timestamp=1776471120.0 + i / 3)
            expected.append(Sample(paths.SPEED, float(i), round((1776471120.0 + i / 3) * 1000) / 1000))
        await until(lambda: telemetry.queue.pending() == 30)
        await asyncio.sleep(0.5)
        assert fleet.samples == [] and telemetry.pending == 30, "nothing leaves while offline"

        is_online.set()
        assert await fleet.wait_for_samples(30) == expected
        assert all(len(b.samples) <= 8 for b in fleet.batches.values())
        await until(lambda: telemetry.pending == 0)
        state.update(paths.SPEED, 99.0, "can", timestamp=1776471200.0)  # recorded, not yet sent: a stop now
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        await telemetry.stop()
        await telemetry.stop()

        state = VehicleState()  # the agent restarts
        telemetry = Telemetry(state, config, publisher_for(client, car, config), tmp_path, clock, is_online.wait)
        assert telemetry.pending == 1
        telemetry.start()
        run = asyncio.create_task(telemetry.run())
        state.update(paths.SPEED, 100.0, "can", timestamp=1776471201.0)
        assert await telemetry.flush(WAIT), "flush: everything recorded is acknowledged"
        expected += [Sample(paths.SPEED, 99.0, 1776471200.0), Sample(paths.SPEED, 100.0, 1776471201.0)]
        assert await fleet.wait_for_samples(32) == expected
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        await telemetry.stop()
    assert fleet.duplicates == []


async def test_a_failing_publish_is_retried_and_nothing_is_acked_wrongly(
        fleet_server: FleetProsody, server: ServerInfo, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    car, password = account(fleet_server, "car")
    node = await provisioned(fleet_server, car)
    queue = TelemetryQueue(tmp_path / "t.db")
    async with online(server, car, password) as client:
        publisher = enable(client, TelemetryPlugin, service=f"pubsub.{server.domain}", node=node)
        sender = TelemetrySender(queue, publisher, batch_max=5, batch_delay=0.0, wait_online=_online_now,
                                 backoff=Backoff(initial=0.05, cap=0.2))
        run = asyncio.create_task(sender.run())
        await fill(queue, 5)
        await until(lambda: queue.pending() == 0)

        async with receiver(server, node, subscribe=False) as admin:
            await admin.delete_node()  # the fleet lost the node
        recorded = await fill(queue, 12, start=5)
        await until(lambda: sender.failures >= 3)
        assert queue.pending() == 12 and queue.stats.acked_seq == 5, "a refused publish acknowledges nothing"
        in_flight = await queue.next_batch(5)
        assert in_flight is not None and in_flight.seqs == (6, 7, 8, 9, 10), "the same batch waits for its retry"

        async with receiver(server, node, subscribe=False) as fleet:
            await fleet.provision(car)  # the fleet puts the node back
            await until(lambda: queue.pending() == 0)
            await fleet.catch_up()
            assert fleet.samples == to_ms(recorded) and fleet.item_ids[0] == in_flight.id
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
    assert "not published" in caplog.text and "the fleet must create it" in caplog.text
    queue.close()


async def test_a_service_that_does_not_exist_keeps_the_samples_queued(
        fleet_server: FleetProsody, server: ServerInfo, tmp_path: Path) -> None:
    car, password = account(fleet_server, "car")
    queue = TelemetryQueue(tmp_path / "t.db")
    await fill(queue, 3)
    async with online(server, car, password) as client:
        publisher = enable(client, TelemetryPlugin, service=f"pubsub.nowhere.{server.domain}", node=node_name(NODE, car))
        with pytest.raises(PublishError) as refused:
            await publisher.publish("x-000001", encode("x-000001", realistic_batch(4)), WAIT)
        assert refused.value.condition != ""
        sender = TelemetrySender(queue, publisher, batch_max=5, batch_delay=0.0, wait_online=_online_now,
                                 backoff=Backoff(initial=0.05, cap=0.2))
        run = asyncio.create_task(sender.run())
        await until(lambda: sender.failures >= 2)
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
    assert queue.pending() == 3 and sender.published == 0
    queue.close()


async def _online_now() -> None:
    return None


# -- the node ------------------------------------------------------------------------------


async def test_a_car_allowed_to_create_owns_its_node_and_only_operators_may_read_it(
        fleet_server: FleetProsody, server: ServerInfo, tmp_path: Path) -> None:
    car = f"{BIG_CAR}@{server.domain}"
    operator, operator_password = account(fleet_server, "operator")
    stranger, stranger_password = account(fleet_server, "stranger")
    node = node_name(f"{NODE}/{secrets.token_hex(3)}", car)
    queue = TelemetryQueue(tmp_path / "t.db")
    recorded = await fill(queue, 3)
    async with online(server, car, PASSWORD) as client:
        publisher = enable(client, TelemetryPlugin, service=f"pubsub.{server.domain}", node=node,
                                       members=(operator, "@fleet.example", "not a jid@@"))
        await publisher.ensure_node()
        await publisher.ensure_node()  # exists: fine, members set again
        async with receiver(server, node, jid=operator, password=operator_password) as fleet:
            batch = await queue.next_batch(10)
            assert batch is not None
            await publisher.publish(batch.id, encode(batch.id, batch.samples), WAIT)
            assert await fleet.wait_for_samples(3) == to_ms(recorded)
        async with receiver(server, node, subscribe=False, jid=stranger, password=stranger_password) as other:
            with pytest.raises(slixmpp.exceptions.IqError) as refused:
                await other.subscribe()
            assert refused.value.condition == "forbidden"
            with pytest.raises(slixmpp.exceptions.IqError):
                await other.catch_up()
    queue.close()


async def test_a_missing_node_the_car_may_not_create_is_a_clear_setup_error(
        fleet_server: FleetProsody, server: ServerInfo) -> None:
    car, password = account(fleet_server, "car")
    async with online(server, car, password) as client:
        publisher = enable(client, TelemetryPlugin, service=f"pubsub.{server.domain}", node=node_name(NODE, car))
        with pytest.raises(NodeSetupError, match="the fleet must create it with .* as publisher"):
            await publisher.ensure_node()


# -- bytes -------------------------------------------------------------------------------------


async def test_bytes_per_sample_of_a_published_batch(fleet_server: FleetProsody, server: ServerInfo) -> None:
    """Printed for the report: the publish IQ and the service's result, as stanzas and on the wire (TLS)."""
    car, password = account(fleet_server, "car")
    node = await provisioned(fleet_server, car)
    sizes: dict[str, int] = {}
    per_sample: dict[int, float] = {}
    async with TcpProxy(server.host, server.port) as proxy, \
            online(dataclasses.replace(server, port=proxy.port), car, password) as client:
        client.add_filter("out", lambda s: _measure(sizes, "set", s))
        client.add_filter("in", lambda s: _measure(sizes, "result", s))
        publisher = enable(client, TelemetryPlugin, service=f"pubsub.{server.domain}", node=node)
        for count in (64, 1):
            sizes.clear()
            batch_id = f"7f3a9c-{count:06d}"
            before = proxy.bytes_up + proxy.bytes_down
            await publisher.publish(batch_id, encode(batch_id, realistic_batch(max(count, 4))[:count]), WAIT)
            wire = proxy.bytes_up + proxy.bytes_down - before
            per_sample[count] = wire / count
            print(f"\n{count} sample(s): publish IQ {sizes['set']} B + result {sizes['result']} B as stanzas,"
                  f" {wire} B on the wire (TLS): {wire / count:.1f} B/sample")
    assert per_sample[64] < 45 < per_sample[1], "batching is what brings a sample under Codec 8's 45 B"


def _measure(sizes: dict[str, int], kind: str, stanza: Any) -> Any:
    if isinstance(stanza, slixmpp.Iq) and stanza["type"] == kind:
        sizes[kind] = len(str(stanza).encode())
    return stanza
