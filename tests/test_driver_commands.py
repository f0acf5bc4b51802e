"""message-driver and DriverConfirms on the real Prosody: an operator's client asks, the driver answers
through the real control socket (``headunit driver`` as its own process, or ControlClient), and the
acknowledgement comes back to the operator as a chat message."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import slixmpp
from slixmpp.plugins.xep_0004 import Form

from agent.cabin import Confirmation, DriverPrompts, PromptEvent, acknowledgement_sender
from agent.cabin.api import PromptsApi
from agent.control.handlers import driver_handlers
from agent.commands.audit import AuditLog
from agent.commands.driver import DriverConfirms, message_driver_command
from agent.commands.registry import (NOT_ASKED, AgentFacade, Command, CommandContext, RateLimiter, Registry,
                                     Result, SpeedIsZero)
from agent.control import ControlClient, ControlServer
from tests.harness.cli import control_profile, headunit
from agent.messages import MessageStore
from agent.vehicle import paths
from agent.vehicle.state import VehicleState
from agent.xmpp.plugins.base import enable
from agent.xmpp.plugins.chat import ChatPlugin
from agent.xmpp.plugins.commands import CommandsPlugin
from devserver.clients import WAIT, close_client, log_in, verified_client

DRIVER = "driver confirms on the dashboard"


@dataclass
class Rig:
    car: slixmpp.ClientXMPP
    operator: slixmpp.ClientXMPP
    prompts: DriverPrompts
    control: ControlServer
    audit: AuditLog
    state: VehicleState
    profile: Path
    ran: list[str]  # the guarded commands' handlers that ran
    chat_in: asyncio.Queue[str]  # chat bodies the operator received from the car
    asked: asyncio.Queue[Confirmation]  # questions that appeared for the driver

    @property
    def car_jid(self) -> str:
        return str(self.car.boundjid.full)

    @property
    def operator_bare(self) -> str:
        return str(self.operator.boundjid.bare)

    async def run(self, node: str, **kwargs: Any) -> Any:
        async with asyncio.timeout(WAIT):
            return await self.operator.plugin["xep_0050"].send_command(self.car_jid, node, **kwargs)

    async def next_question(self) -> Confirmation:
        async with asyncio.timeout(WAIT):
            return await self.asked.get()


def submit(**values: str) -> Form:
    form = Form()
    form["type"] = "submit"
    for var, value in values.items():
        form.add_field(var=var, value=value)
    return form


def fields(iq: Any) -> dict[str, str]:
    return {str(f["label"]): str(f["value"]) for f in iq["command"]["form"].get_fields().values()}


def note(iq: Any) -> tuple[str, str]:
    kind, text = iq["command"]["notes"][0]
    return str(kind), str(text)


def guarded(name: str, title: str, ran: list[str], *interlocks: Any) -> Command:
    """A test command that notes it ran, behind the given interlocks."""

    async def handler(ctx: CommandContext) -> Result:
        ran.append(name)
        return Result(f"{title}: done.")

    return Command(name, title, (), handler, interlocks=interlocks)


@pytest.fixture
async def rig(prosody_server: Any, xmpp_account: Any) -> AsyncIterator[Rig]:
    folder = Path(tempfile.mkdtemp(prefix="hu-drv-"))  # short: the control socket's path must fit
    (car_jid, car_pw), (op_jid, op_pw) = xmpp_account("car"), xmpp_account("operator")
    car = verified_client(car_jid, car_pw, prosody_server, resource="car")
    operator = verified_client(op_jid, op_pw, prosody_server, plugins=["xep_0030", "xep_0004", "xep_0050"])
    chat_in: asyncio.Queue[str] = asyncio.Queue()
    operator.add_event_handler("message", lambda msg: chat_in.put_nowait(str(msg["body"]))
                               if msg["type"] in ("chat", "normal") and msg["body"] else None)
    store = MessageStore(folder / "messages.db")
    chat = enable(car, ChatPlugin, store=store)
    prompts = DriverPrompts.in_dir(folder, on_acknowledged=acknowledgement_sender(chat))  # as the agent wires it
    asked: asyncio.Queue[Confirmation] = asyncio.Queue()

    def on_prompt(event: PromptEvent) -> None:
        if event.kind == "appeared" and isinstance(event.prompt, Confirmation):
            asked.put_nowait(event.prompt)

    prompts.listen(on_prompt)
    control = ControlServer(folder / "control.sock", driver_handlers(PromptsApi(prompts)))
    audit = AuditLog(folder / "audit.db")
    state = VehicleState()
    ran: list[str] = []
    registry = Registry([
        message_driver_command(prompts),
        guarded("open-boot", "Open the boot", ran, DriverConfirms(prompts, timeout=WAIT)),
        guarded("open-hood", "Open the hood", ran, SpeedIsZero(), DriverConfirms(prompts, timeout=WAIT)),
    ])
    service: CommandsPlugin | None = None
    try:
        for client in (car, operator):
            await log_in(client, prosody_server)
        await chat.wait_for_catch_up(WAIT)
        service = enable(car, CommandsPlugin, registry=registry, operators=[op_jid], audit=audit,
                         agent=AgentFacade(state, audit=audit), limiter=RateLimiter(per_minute=60, burst=30))
        await control.start()
        yield Rig(car, operator, prompts, control, audit, state, control_profile(folder, control.path), ran,
                  chat_in, asked)
    finally:
        await control.stop()
        if service is not None:
            await service.stop()
        await chat.stop()
        for client in (car, operator):
            await close_client(client)
        prompts.close()
        audit.close()
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


async def test_the_driver_acknowledges_a_message_and_the_operator_is_told_by_chat(rig: Rig) -> None:
    first = await rig.run("message-driver")
    assert first["command"]["status"] == "executing"
    assert set(first["command"]["form"].get_fields()) == {"text", "ack"}
    done = await rig.run("message-driver", action="complete", sessionid=first["command"]["sessionid"],
                         payload=submit(text="Please call the depot", ack="true"))
    assert done["command"]["status"] == "completed"
    kind, text = note(done)
    assert kind == "info" and "waiting for their acknowledgement" in text
    number = fields(done)["Message"]
    waiting = rig.prompts.pending().notices
    assert [(str(n.id), n.sender, n.text) for n in waiting] == [(number, rig.operator_bare, "Please call the depot")]

    rc, out, err = await headunit("driver", str(rig.profile))
    assert rc == 0 and "Please call the depot" in out and rig.operator_bare in out, err
    rc, out, err = await headunit("driver", str(rig.profile), "ack", number)
    assert (rc, out.strip()) == (0, f"acknowledged message {number} from {rig.operator_bare}: they are told"), err

    async with asyncio.timeout(WAIT):
        body = await rig.chat_in.get()
    assert body.startswith("The driver acknowledged your message: “Please call the depot” (at ")
    assert body.endswith(" UTC)")
    assert not rig.prompts.pending()
    rc, _, err = await headunit("driver", str(rig.profile), "ack", number)
    assert rc == 1 and f"message {number} was acknowledged already" in err
    entry = (await rig.audit.tail(1))[0]
    assert (entry.command, entry.result, dict(entry.arguments)) == (
        "message-driver", "ok", {"text": "Please call the depot", "ack": True})


async def test_a_message_without_acknowledgement_tells_nobody_and_a_too_long_one_comes_back(
        rig: Rig) -> None:
    first = await rig.run("message-driver")
    again = await rig.run("message-driver", action="complete", sessionid=first["command"]["sessionid"],
                          payload=submit(text="x" * 501))
    assert again["command"]["status"] == "executing"
    assert "longer than 500 characters" in again["command"]["form"]["instructions"]
    done = await rig.run("message-driver", action="complete", sessionid=first["command"]["sessionid"],
                         payload=submit(text="Fuel card renewed"))
    assert note(done) == ("info", f"Shown to the driver as message {fields(done)['Message']}.")
    shown = rig.prompts.pending().notices
    assert [(n.text, n.ack_required) for n in shown] == [("Fuel card renewed", False)], "shown until seen"
    rc, out, err = await headunit("driver", str(rig.profile), "ack", str(shown[0].id))
    assert rc == 0 and "dismissed message" in out, err
    assert not rig.prompts.pending()
    assert [n.text for n in await rig.prompts.recent()] == ["Fuel card renewed"]
    assert [e.result for e in await rig.audit.tail(10)] == ["invalid", "ok"]


async def test_a_guarded_command_runs_only_after_the_driver_accepts(rig: Rig) -> None:
    reply = asyncio.create_task(rig.run("open-boot"))
    question = await rig.next_question()
    assert (question.question, question.requester) == ("Open the boot?", rig.operator_bare)
    assert rig.ran == [] and not reply.done()  # waiting for the driver
    async with ControlClient(rig.control.path) as driver:
        await driver.call("driver.answer", id=question.id, accept=True)
    done = await reply
    assert done["command"]["status"] == "completed" and note(done) == ("info", "Open the boot: done.")
    assert rig.ran == ["open-boot"]
    entry = (await rig.audit.tail(1))[0]
    assert entry.result == "ok"
    assert [(d.name, d.ok, d.reason) for d in entry.interlocks] == [(DRIVER, True, None)]


async def test_a_guarded_command_is_refused_when_the_driver_declines(rig: Rig) -> None:
    reply = asyncio.create_task(rig.run("open-boot"))
    question = await rig.next_question()
    rc, out, err = await headunit("driver", str(rig.profile), "decline", question.id)
    assert rc == 0 and out.startswith(f"declined question {question.id}"), err
    done = await reply
    kind, text = note(done)
    assert kind == "error" and f"interlock '{DRIVER}' refused: the driver declined" in text
    assert rig.ran == []
    entry = (await rig.audit.tail(1))[0]
    assert entry.result == "interlock"
    assert [(d.name, d.ok, d.reason) for d in entry.interlocks] == [(DRIVER, False, "the driver declined")]


async def test_the_driver_is_not_asked_when_another_interlock_refuses(rig: Rig) -> None:
    rig.state.update(paths.SPEED, 40.0, "can")
    done = await rig.run("open-hood")
    kind, text = note(done)
    assert kind == "error" and "speed is zero" in text and DRIVER not in text
    assert rig.asked.empty() and not rig.prompts.pending() and rig.ran == []
    entry = (await rig.audit.tail(1))[0]
    assert [(d.name, d.ok, d.reason) for d in entry.interlocks] == [
        ("speed is zero", False, "the vehicle is moving (40.0 km/h)"), (DRIVER, False, NOT_ASKED)]
