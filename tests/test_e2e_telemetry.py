"""End to end: the agent is killed with SIGKILL mid-drive and restarted; the fleet ends up with exactly
the samples the car recorded, in order, with their original timestamps."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from pathlib import Path

import pytest

from agent.telemetry.queue import Sample, _sample
from agent.profile.model import TelemetryConfig
from agent.telemetry.publisher import node_name
from tests.harness.agentproc import AgentProcess
from devserver.fleet import FleetReceiver
from devserver.prosody import Prosody

SPEED = 10.0


def recorded(data_dir: str) -> tuple[list[Sample], int]:
    """Every sample the car's queue holds (acknowledged or not), in order, and how many are unacknowledged."""
    with sqlite3.connect(Path(data_dir) / "telemetry.db") as db:
        rows = db.execute("SELECT path, kind, value, timestamp FROM samples ORDER BY seq").fetchall()
        pending = db.execute(
            "SELECT count(*) FROM samples LEFT JOIN batches ON batch = counter WHERE acked_at IS NULL"
        ).fetchone()[0]
    return [_sample(*row) for row in rows], pending


@pytest.mark.slow
async def test_sigkill_mid_drive_loses_and_duplicates_nothing(prosody: Prosody) -> None:
    car_password = secrets.token_urlsafe(12)
    car = prosody.register(f"car-{secrets.token_hex(3)}", car_password)
    fleet_password = secrets.token_urlsafe(12)
    fleet = prosody.register("fleet", fleet_password)  # a server admin: owns the PubSub nodes
    server = prosody.server_info()
    receiver = FleetReceiver(fleet, fleet_password, server, prosody.pubsub_host,
                             node_name(TelemetryConfig().node, car))
    await receiver.connect()
    await receiver.provision(car)
    await receiver.subscribe()

    first = AgentProcess(server, car, car_password, speed=SPEED)
    first.start()
    try:
        await first.wait_for_line("vehicle mode: idling → driving", timeout=60)
        await receiver.wait_for_samples(10, timeout=60)
        await asyncio.sleep(1.5)  # mid-drive, samples in flight
    finally:
        assert first.process is not None
        first.process.kill()  # the power is cut: no flush, no goodbye
        first.process.wait(10)
    killed_with, _ = recorded(first.data_dir)

    second = AgentProcess(server, car, car_password, speed=SPEED, data_dir=first.data_dir)
    second.start()
    try:
        await second.wait_for_line("vehicle mode: driving → parked", timeout=90)
    finally:
        assert second.stop() == 0, second.tail()  # a clean stop flushes what is left

    samples, pending = recorded(first.data_dir)
    await receiver.catch_up()  # whatever the live notifications missed
    await receiver.stop()
    assert pending == 0, "everything recorded was acknowledged by the fleet's service"
    assert samples[:len(killed_with)] == killed_with, "nothing recorded before the kill was lost or changed"
    assert len(samples) > len(killed_with) > 10
    assert receiver.samples == [to_ms(s) for s in samples], (
        "the fleet has exactly what the car recorded, in order, with the original timestamps (to the ms)")


def to_ms(sample: Sample) -> Sample:
    """The payload carries timestamps to the millisecond, as the codec documents: round(t * 1000) / 1000."""
    return Sample(sample.path, sample.value, round(sample.timestamp * 1000) / 1000)


@pytest.mark.slow
async def test_samples_recorded_while_the_server_restarts_are_all_delivered(tmp_path: Path) -> None:
    with Prosody(tmp_path / "server") as server:
        info = server.server_info()
        car = server.register("car", "pw-car")
        fleet = server.register("fleet", "pw-fleet")
        receiver = FleetReceiver(fleet, "pw-fleet", info, server.pubsub_host, node_name(TelemetryConfig().node, car))
        await receiver.connect()
        await receiver.provision(car)
        agent = AgentProcess(info, car, "pw-car", speed=SPEED)
        agent.start()
        try:
            await agent.wait_for_line("vehicle mode: idling → driving", timeout=60)
            await receiver.stop()
            server.stop()  # the fleet's server goes down mid-drive; the car keeps recording
            before, _ = recorded(agent.data_dir)
            await asyncio.sleep(4)
            during, pending = recorded(agent.data_dir)
            assert len(during) > len(before) and pending > 0, "recording goes on, queued"
            server.start()
            await agent.wait_for_line("vehicle mode: driving → parked", timeout=90)
        finally:
            assert agent.stop() == 0, agent.tail()
        sessions = sum("online as" in line for line in agent.lines)
        assert sessions == 2, f"a fresh session after the restart ({sessions} sessions)\n{agent.tail()}"
        samples, pending = recorded(agent.data_dir)
        receiver = FleetReceiver(fleet, "pw-fleet", info, server.pubsub_host, node_name(TelemetryConfig().node, car))
        await receiver.connect()
        await receiver.catch_up()
        await receiver.stop()
    assert pending == 0
    assert receiver.samples == [to_ms(s) for s in samples], "every sample, once, in order"
