"""XEP-0050 commands on the real Prosody: an operator runs them, a stranger is refused, all audited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form

from agent.commands.audit import AuditLog
from agent.commands.builtin import builtin_registry
from agent.commands.registry import AgentFacade, RateLimiter
from agent.vehicle import paths
from agent.vehicle.state import VehicleState
from agent.xmpp.plugins.base import enable
from agent.xmpp.plugins.commands import CommandsPlugin
from devserver.clients import WAIT, close_client, log_in, verified_client



@dataclass
class Rig:
    car: slixmpp.ClientXMPP
    operator: slixmpp.ClientXMPP
    stranger: slixmpp.ClientXMPP
    service: CommandsPlugin
    audit: AuditLog
    state: VehicleState
    restarts: list[str]

    @property
    def car_jid(self) -> str:
        return str(self.car.boundjid.full)

    async def run(self, client: slixmpp.ClientXMPP, node: str, **kwargs: Any) -> Any:
        async with asyncio.timeout(WAIT):
            return await client.plugin["xep_0050"].send_command(self.car_jid, node, **kwargs)

    async def results(self) -> list[tuple[str, str, str]]:
        return [(e.requester.split("/")[0], e.command, e.result) for e in await self.audit.tail(100)]


def submit(**values: str) -> Form:
    form = Form()
    form["type"] = "submit"
    for var, value in values.items():
        form.add_field(var=var, value=value)
    return form


def fields(iq: Any) -> dict[str, str]:
    return {var: str(f["value"]) for var, f in iq["command"]["form"].get_fields().items()}


@pytest.fixture
async def rig(prosody_server: Any, xmpp_account: Any, tmp_path: Path) -> AsyncIterator[Rig]:
    (car_jid, car_pw), (op_jid, op_pw), (st_jid, st_pw) = (
        xmpp_account("car"), xmpp_account("operator"), xmpp_account("stranger"))
    car = verified_client(car_jid, car_pw, prosody_server, resource="car")
    operator = verified_client(op_jid, op_pw, prosody_server, plugins=["xep_0030", "xep_0004", "xep_0050"])
    stranger = verified_client(st_jid, st_pw, prosody_server, plugins=["xep_0030", "xep_0004", "xep_0050"])
    audit = AuditLog(tmp_path / "audit.db")
    state = VehicleState()
    restarts: list[str] = []
    facade = AgentFacade(state, audit=audit, restart=lambda: restarts.append("restart"),
                         reboot=lambda: restarts.append("reboot"), connection=lambda: "online")
    service: CommandsPlugin | None = None
    try:
        for client in (car, operator, stranger):
            await log_in(client, prosody_server)
        service = enable(car, CommandsPlugin, registry=builtin_registry(), operators=[op_jid], audit=audit,
                         agent=facade, limiter=RateLimiter(per_minute=60, burst=30), session_timeout=0.5,
                         sweep_every=0.1)
        yield Rig(car, operator, stranger, service, audit, state, restarts)
    finally:
        if service is not None:
            await service.stop()
        for client in (car, operator, stranger):
            await close_client(client)
        audit.close()


async def test_operator_lists_every_command_stranger_none(rig: Rig) -> None:
    async with asyncio.timeout(WAIT):
        listed = await rig.operator.plugin["xep_0050"].get_commands(rig.car_jid)
        hidden = await rig.stranger.plugin["xep_0050"].get_commands(rig.car_jid)
    nodes = {item[1] for item in listed["disco_items"]["items"]}
    assert nodes == {"status", "locate", "audit-tail", "restart-agent", "reboot-board", "call-me"}
    assert list(hidden["disco_items"]["items"]) == []
    assert (str(rig.stranger.boundjid.bare), "", "forbidden") in await rig.results()


async def test_stranger_is_refused_and_audited(rig: Rig) -> None:
    with pytest.raises(IqError) as refused:
        await rig.run(rig.stranger, "status")
    assert refused.value.condition == "forbidden"
    assert (str(rig.stranger.boundjid.bare), "status", "forbidden") in await rig.results()


async def test_status_reports_the_state_and_unknowns(rig: Rig) -> None:
    rig.state.update(paths.MODE, "driving", "test")
    rig.state.update(paths.SPEED, 87.0, "test")
    rig.state.update(paths.DRIVER_DOOR_OPEN, False, "test")
    reply = await rig.run(rig.operator, "status")
    assert reply["command"]["status"] == "completed"
    shown = fields(reply)
    assert "driving" in shown.values() and "87 km/h" in shown.values() and "all closed" in shown.values()
    assert "unknown" in shown.values()  # no position, no fuel
    assert "online" in shown.values()
    assert (str(rig.operator.boundjid.bare), "status", "ok") in await rig.results()


async def test_locate_with_and_without_a_fix(rig: Rig) -> None:
    reply = await rig.run(rig.operator, "locate")
    assert "No GNSS fix" in reply["command"]["notes"][0][1]
    rig.state.update(paths.LATITUDE, 37.3947, "gnss")
    rig.state.update(paths.LONGITUDE, 127.1112, "gnss")
    rig.state.update(paths.GNSS_FIX_TYPE, "THREE_D", "gnss")
    rig.state.update(paths.HEADING, 181.0, "gnss")
    reply = await rig.run(rig.operator, "locate")
    shown = fields(reply)
    assert "geo:37.394700,127.111200" in shown.values()
    assert ("https://www.openstreetmap.org/?mlat=37.394700&mlon=127.111200#map=16/37.394700/127.111200"
            in shown.values())
    assert [r for _, c, r in await rig.results() if c == "locate"] == ["failed", "ok"]


async def test_restart_confirmed_in_two_steps(rig: Rig) -> None:
    first = await rig.run(rig.operator, "restart-agent")
    assert first["command"]["status"] == "executing"
    assert "confirm" in first["command"]["form"].get_fields()
    assert rig.restarts == []
    done = await rig.run(rig.operator, "restart-agent", action="complete",
                         sessionid=first["command"]["sessionid"], payload=submit(confirm="true"))
    assert done["command"]["status"] == "completed"
    assert rig.restarts == ["restart"]
    assert (str(rig.operator.boundjid.bare), "restart-agent", "ok") in await rig.results()


async def test_cancelled_restart_does_nothing(rig: Rig) -> None:
    first = await rig.run(rig.operator, "restart-agent")
    done = await rig.run(rig.operator, "restart-agent", action="cancel", sessionid=first["command"]["sessionid"])
    assert done["command"]["status"] == "canceled"
    assert rig.restarts == []
    assert (str(rig.operator.boundjid.bare), "restart-agent", "cancelled") in await rig.results()


async def test_stranger_cannot_continue_an_operators_session(rig: Rig) -> None:
    first = await rig.run(rig.operator, "restart-agent")
    with pytest.raises(IqError) as refused:
        await rig.run(rig.stranger, "restart-agent", action="complete",
                      sessionid=first["command"]["sessionid"], payload=submit(confirm="true"))
    assert refused.value.condition == "forbidden"
    assert rig.restarts == []


async def test_invalid_field_returns_the_form_with_the_error(rig: Rig) -> None:
    first = await rig.run(rig.operator, "audit-tail")
    assert first["command"]["status"] == "executing"
    again = await rig.run(rig.operator, "audit-tail", action="complete",
                          sessionid=first["command"]["sessionid"], payload=submit(count="lots"))
    assert again["command"]["status"] == "executing"
    assert "not a whole number" in again["command"]["form"]["instructions"]
    assert "not a whole number" in again["command"]["form"].get_fields()["count"]["desc"]
    done = await rig.run(rig.operator, "audit-tail", action="complete",
                         sessionid=first["command"]["sessionid"], payload=submit(count="5"))
    assert done["command"]["status"] == "completed"
    assert any("audit-tail: invalid" in value for value in fields(done).values())


async def test_reboot_refused_by_interlock_while_moving(rig: Rig) -> None:
    rig.state.update(paths.SPEED, 40.0, "can")
    rig.state.update(paths.MODE, "driving", "mode")
    first = await rig.run(rig.operator, "reboot-board")
    done = await rig.run(rig.operator, "reboot-board", action="complete",
                         sessionid=first["command"]["sessionid"], payload=submit(confirm="1"))
    note = done["command"]["notes"][0]
    assert note[0] == "error" and "speed is zero" in note[1] and "moving" in note[1]
    assert rig.restarts == []
    entry = (await rig.audit.tail(1))[0]
    assert entry.result == "interlock" and [d.ok for d in entry.interlocks] == [False, False]


async def test_call_me_says_calls_are_not_available(rig: Rig) -> None:
    reply = await rig.run(rig.operator, "call-me")
    assert "not available" in reply["command"]["notes"][0][1]


async def test_idle_session_times_out(rig: Rig) -> None:
    first = await rig.run(rig.operator, "restart-agent")
    async with asyncio.timeout(WAIT):
        while (str(rig.operator.boundjid.bare), "restart-agent", "timeout") not in await rig.results():
            await asyncio.sleep(0.1)
    with pytest.raises(IqError) as gone:
        await rig.run(rig.operator, "restart-agent", action="complete",
                      sessionid=first["command"]["sessionid"], payload=submit(confirm="true"))
    assert gone.value.condition == "item-not-found"
    assert rig.restarts == []
