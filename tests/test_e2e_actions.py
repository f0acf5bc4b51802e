"""End to end: an operator runs the demo car's CAN actions while its recorded drive replays.

The agent runs in this process (python-can's virtual bus does not cross processes), on
the demo profile: the drive replays onto a virtual channel and the actions are sent on
another one ("demo-actions"), which the test reads like a tool on the car's bus would.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, cast

import can
import pytest

from agent.app import Agent
from agent.commands.audit import AuditLog
from agent.profile.model import FleetConfig
from agent.vehicle import paths
from tests.harness.agentproc import demo_profile, wait_until
from devserver.clients import close_client, log_in, verified_client
from devserver.prosody import AccountFactory, ServerInfo

SPEED = 30.0  # the 353 s drive in about 12 s
LOCK = (0x2F0, bytes([1, 0, 0, 0, 0, 0, 0, 0]))


async def run(operator: Any, car: str, node: str) -> Any:
    async with asyncio.timeout(20):
        return await operator.plugin["xep_0050"].send_command(car, node)


def frames_on(bus: can.BusABC) -> list[tuple[int, bytes]]:
    seen = []
    while (msg := bus.recv(timeout=0.5)) is not None:
        seen.append((msg.arbitration_id, bytes(msg.data)))
    return seen


@pytest.mark.slow
async def test_lock_is_refused_while_the_replay_drives_and_sent_once_the_car_is_switched_off(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    (car_jid, car_pw), (op_jid, op_pw) = xmpp_account("car"), xmpp_account("operator")
    profile = dataclasses.replace(demo_profile(prosody_server, car_jid, car_pw), fleet=FleetConfig((op_jid,)))
    agent = Agent(profile, speed=SPEED)
    operator = verified_client(op_jid, op_pw, prosody_server, plugins=["xep_0030", "xep_0004", "xep_0050"])
    bus = can.Bus(interface="virtual", channel="demo-actions", receive_own_messages=False)
    car = f"{car_jid}/{profile.account.resource}"
    try:
        await agent.start()
        await agent.xmpp.wait_online(20)
        await log_in(operator, prosody_server)
        await wait_until(lambda: agent.state.value(paths.MODE) == "driving"
                         and cast(float, agent.state.value(paths.SPEED) or 0) > 10, timeout=60)
        refused = await run(operator, car, "lock")
        note = str(refused["command"]["notes"])
        assert refused["command"]["status"] == "completed"
        assert "interlock 'speed is zero' refused: the vehicle is moving" in note, note
        assert "mode is parked or off" in note, "every refusing interlock is named"
        assert await asyncio.to_thread(frames_on, bus) == [], "nothing was sent while driving"

        # The drive ends: parking brake, key out (LOCK); the bus goes quiet and the speed stale.
        await wait_until(lambda: agent.state.value(paths.MODE) == "off", timeout=60)
        assert agent.state.get(paths.SPEED) is not None
        accepted = await run(operator, car, "lock")
        assert accepted["command"]["status"] == "completed"
        assert "Lock the doors: 1 frame(s) sent" in str(accepted["command"]["notes"])
        assert await asyncio.to_thread(frames_on, bus) == [LOCK]
    finally:
        await close_client(operator)
        await asyncio.wait_for(agent.stop(), 15)
        bus.shutdown()
    audit = AuditLog.in_dir(agent.data_dir)  # the agent closed its own: read the file anew
    try:
        entries = await audit.tail(10)
    finally:
        audit.close()
    assert [(e.command, e.result) for e in entries if e.command == "lock"] == [
        ("lock", "interlock"), ("lock", "ok")]
