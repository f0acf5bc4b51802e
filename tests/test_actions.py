"""Vehicle actions as XEP-0050 commands on the real Prosody: an operator runs them, the interlocks
decide (writing enabled, speed zero, mode, the driver), the frames are read back from a second
python-can virtual bus on the same channel, and the audit keeps every decision."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can
import pytest
import slixmpp
from slixmpp.plugins.xep_0004 import Form

from agent.commands.actions import DRIVER_CONFIRMS, NO_DASHBOARD, WRITING_OFF, CanWritingEnabled, action_commands, sender_for
from agent.commands.audit import AuditEntry, AuditLog
from agent.commands.registry import NOT_ASKED, AgentFacade, AskingInterlock, Command, RateLimiter, Registry
from agent.profile.model import CanAction, CanConfig, CanFrame
from agent.vehicle import paths
from agent.vehicle.state import VehicleState
from agent.xmpp.plugins.base import enable
from agent.xmpp.plugins.commands import CommandsPlugin
from drivers.can.port import CanPort
from drivers.can.sender import BusLink, CanSender, PortLink
from devserver.clients import WAIT, close_client, log_in, verified_client

LOCK = CanAction("lock", "Lock the doors", (CanFrame(0x2F0, bytes([1, 0, 0, 0, 0, 0, 0, 0])),),
                 modes=("parked", "off"))
UNLOCK = CanAction("unlock", "Unlock the doors", (CanFrame(0x2F0, bytes([2, 0, 0, 0, 0, 0, 0, 0])),),
                   confirm="Unlock the doors?", modes=("parked", "off"), driver_confirms=True, driver_timeout=5)
FLASH = CanAction("flash-lights", "Flash the lights",
                  (CanFrame(0x2F0, bytes([3, 0, 0, 0, 0, 0, 0, 0])), CanFrame(0x18FF2F00, b"\x00", True)),
                  gap=0.01, modes=("parked", "off"))


class Driver:
    """The driver's answer, decided by the test: an AskingInterlock like the dashboard's."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str]] = []

    @property
    def name(self) -> str:
        return DRIVER_CONFIRMS

    async def ask(self, requester: str, command: Command) -> str | None:
        self.asked.append((requester, command.name))
        return self.answer


@dataclass
class Rig:
    car: slixmpp.ClientXMPP
    operator: slixmpp.ClientXMPP
    audit: AuditLog
    state: VehicleState
    bus: can.BusABC  # a second bus on the channel the actions are sent on

    async def run(self, node: str, **kwargs: Any) -> Any:
        async with asyncio.timeout(WAIT):
            return await self.operator.plugin["xep_0050"].send_command(self.car.boundjid.full, node, **kwargs)

    async def last(self) -> AuditEntry:
        return (await self.audit.tail(1))[0]

    def parked(self) -> None:
        self.state.update(paths.SPEED, 0.0, "can")
        self.state.update(paths.MODE, "parked", "mode")

    def driving(self) -> None:
        self.state.update(paths.SPEED, 50.0, "can")
        self.state.update(paths.MODE, "driving", "mode")

    def frames(self) -> list[tuple[int, bytes, bool]]:
        """Every frame the second bus has seen so far (the virtual bus delivers as it sends)."""
        got = []
        while (msg := self.bus.recv(0.0)) is not None:
            got.append((msg.arbitration_id, bytes(msg.data), msg.is_extended_id))
        return got


MakeRig = Callable[..., Awaitable[Rig]]


def note(reply: Any) -> tuple[str, str]:
    kind, text = reply["command"]["notes"][0]
    return str(kind), str(text)


def submit(**values: str) -> Form:
    form = Form()
    form["type"] = "submit"
    for var, value in values.items():
        form.add_field(var=var, value=value)
    return form


def decisions(entry: AuditEntry) -> list[tuple[str, bool, str | None]]:
    return [(d.name, d.ok, d.reason) for d in entry.interlocks]


@contextlib.contextmanager
def listener(name: str, *, rx_queue_size: int = 0) -> Iterator[can.BusABC]:
    bus = can.Bus(interface="virtual", channel=name, rx_queue_size=rx_queue_size)
    try:
        yield bus
    finally:
        bus.shutdown()


@pytest.fixture
async def make_rig(prosody_server: Any, xmpp_account: Any, tmp_path: Path) -> AsyncIterator[MakeRig]:
    """Builds a car offering the given actions (sent on a fresh virtual channel) and an operator."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(actions: tuple[CanAction, ...] = (LOCK, UNLOCK, FLASH), *, write: bool = True,
                       driver: Callable[[CanAction], AskingInterlock] | None = None,
                       rx_queue_size: int = 0) -> Rig:
            channel = f"test-actions-{secrets.token_hex(4)}"
            config = CanConfig("virtual", "test-read", write=write, write_channel=channel)
            sender = CanSender.on_bus("virtual", channel, timeout=0.05)
            await sender.start()
            stack.push_async_callback(sender.stop)
            bus = stack.enter_context(listener(channel, rx_queue_size=rx_queue_size))
            (car_jid, car_pw), (op_jid, op_pw) = xmpp_account("car"), xmpp_account("operator")
            car = verified_client(car_jid, car_pw, prosody_server, resource="car")
            operator = verified_client(op_jid, op_pw, prosody_server,
                                       plugins=["xep_0030", "xep_0004", "xep_0050"])
            audit = AuditLog(tmp_path / f"audit-{channel}.db")
            stack.callback(audit.close)
            state = VehicleState()
            registry = Registry(action_commands(config, actions, sender, driver))
            for client in (car, operator):
                stack.push_async_callback(close_client, client)
                await log_in(client, prosody_server)
            service = enable(car, CommandsPlugin, registry=registry, operators=[op_jid], audit=audit,
                             agent=AgentFacade(state, audit=audit), limiter=RateLimiter(per_minute=60, burst=30))
            stack.push_async_callback(service.stop)
            return Rig(car, operator, audit, state, bus)

        yield make


async def test_lock_refused_while_moving_then_sent_when_parked(make_rig: MakeRig) -> None:
    """Tried: "lock" at 50 km/h while driving, then standing and parked. Kept: the refusal names
    "speed is zero" and sends nothing; the second run sends the lock frame; the audit has both."""
    rig = await make_rig()
    rig.driving()
    refused = await rig.run("lock")
    kind, text = note(refused)
    assert refused["command"]["status"] == "completed" and kind == "error"
    assert "interlock 'speed is zero' refused: the vehicle is moving (50.0 km/h)" in text
    assert "interlock 'mode is parked or off' refused: the vehicle is driving" in text
    assert rig.frames() == []
    entry = await rig.last()
    assert (entry.command, entry.result) == ("lock", "interlock")
    assert decisions(entry) == [("CAN writing enabled", True, None),
                                ("speed is zero", False, "the vehicle is moving (50.0 km/h)"),
                                ("mode is parked or off", False, "the vehicle is driving, not parked or off")]

    rig.parked()
    done = await rig.run("lock")
    assert note(done) == ("info", "Lock the doors: 1 frame(s) sent on the car's CAN bus.")
    assert rig.frames() == [(0x2F0, bytes([1, 0, 0, 0, 0, 0, 0, 0]), False)]
    entry = await rig.last()
    assert entry.result == "ok" and all(d.ok for d in entry.interlocks) and len(entry.interlocks) == 3


async def test_flash_sends_both_frames_in_order(make_rig: MakeRig) -> None:
    """Tried: the two-frame action while parked. Kept: both frames, in order, extended flag kept."""
    rig = await make_rig()
    rig.parked()
    done = await rig.run("flash-lights")
    assert "2 frame(s) sent" in note(done)[1]
    assert rig.frames() == [(0x2F0, bytes([3, 0, 0, 0, 0, 0, 0, 0]), False), (0x18FF2F00, b"\x00", True)]


async def test_writing_off_refuses_every_action(make_rig: MakeRig) -> None:
    """Tried: "lock" while parked with write = false (a sender exists all the same). Kept: refused
    by "CAN writing enabled", nothing on the bus."""
    rig = await make_rig(write=False)
    rig.parked()
    refused = await rig.run("lock")
    assert note(refused) == ("error", f"Not done: interlock 'CAN writing enabled' refused: {WRITING_OFF}.")
    assert rig.frames() == []
    assert decisions(await rig.last())[0] == ("CAN writing enabled", False, WRITING_OFF)


async def test_driver_is_asked_last_and_decides(make_rig: MakeRig) -> None:
    """Tried: "unlock" (operator confirmation, then the driver) while moving, then parked with the
    driver saying no, then yes. Kept: the driver is not asked while moving; a no sends nothing;
    a yes sends the frame; each decision is audited."""
    driver = Driver("the driver said no")
    rig = await make_rig(driver=lambda action: driver)

    async def unlock() -> Any:
        first = await rig.run("unlock")
        assert first["command"]["status"] == "executing"
        assert first["command"]["form"]["instructions"] == "Unlock the doors?"
        return await rig.run("unlock", action="complete", sessionid=first["command"]["sessionid"],
                             payload=submit(confirm="true"))

    rig.driving()
    await unlock()
    assert driver.asked == [] and rig.frames() == []
    assert decisions(await rig.last())[-1] == (DRIVER_CONFIRMS, False, NOT_ASKED)

    rig.parked()
    said_no = await unlock()
    assert note(said_no) == ("error", f"Not done: interlock '{DRIVER_CONFIRMS}' refused: the driver said no.")
    assert rig.frames() == []
    assert driver.asked == [(str(rig.operator.boundjid.full), "unlock")]

    driver.answer = None
    await unlock()
    assert rig.frames() == [(0x2F0, bytes([2, 0, 0, 0, 0, 0, 0, 0]), False)]
    entry = await rig.last()
    assert entry.result == "ok"
    assert [d.name for d in entry.interlocks] == ["CAN writing enabled", "speed is zero", "mode is parked or off",
                                                  DRIVER_CONFIRMS]


async def test_no_dashboard_refuses_actions_that_need_the_driver(make_rig: MakeRig) -> None:
    """Tried: "unlock" confirmed by the operator, parked, with no driver interlock to ask. Kept:
    refused with "no dashboard to ask the driver"; "lock" (no driver needed) still works."""
    rig = await make_rig()
    rig.parked()
    first = await rig.run("unlock")
    refused = await rig.run("unlock", action="complete", sessionid=first["command"]["sessionid"],
                            payload=submit(confirm="true"))
    assert note(refused) == ("error", f"Not done: interlock '{DRIVER_CONFIRMS}' refused: {NO_DASHBOARD}.")
    assert rig.frames() == []
    await rig.run("lock")
    assert len(rig.frames()) == 1


async def test_a_frame_refused_mid_way_is_reported(make_rig: MakeRig) -> None:
    """Tried: "flash-lights" while a recipient on the bus holds only one frame, so the bus refuses the
    second. Kept: the answer says frame 2 failed and frame 1 was sent; audited as failed."""
    rig = await make_rig(rx_queue_size=1)
    rig.parked()
    failed = await rig.run("flash-lights")
    kind, text = note(failed)
    assert kind == "error"
    assert "frame 2 of 2 (18FF2F00#00) was not sent" in text and "the 1 frame(s) before it were sent" in text
    assert rig.frames() == [(0x2F0, bytes([3, 0, 0, 0, 0, 0, 0, 0]), False)]
    entry = await rig.last()
    assert entry.result == "failed" and "frame 2 of 2" in entry.detail


def test_commands_describe_their_frames_and_interlocks() -> None:
    """Tried: the three actions. Kept: names, titles, the confirm question, and a description that
    lists the frames and the interlocks in the order they are checked."""
    lock, unlock, flash = action_commands(CanConfig("virtual", write=True), (LOCK, UNLOCK, FLASH), None, None)
    assert (lock.name, lock.title, lock.confirm, unlock.confirm) == ("lock", "Lock the doors", None,
                                                                     "Unlock the doors?")
    assert flash.description == ("Sends 2F0#0300000000000000, then 18FF2F00#00 0.01 s later on the car's CAN "
                                 "bus. Only when: CAN writing enabled, speed is zero, mode is parked or off.")
    assert unlock.description.endswith("Only when: CAN writing enabled, speed is zero, mode is parked or off, "
                                       "driver confirms on the dashboard.")


def test_no_speed_no_mode_interlocks_when_the_profile_says_so() -> None:
    """Tried: an action with speed_zero = false and no modes. Kept: only "CAN writing enabled"."""
    horn = CanAction("horn", "Horn", (CanFrame(0x123, b"\x01"),), speed_zero=False)
    (command,) = action_commands(CanConfig("virtual", write=True), (horn,), None, None)
    assert [i.name for i in command.interlocks] == ["CAN writing enabled"]


def test_a_writing_profile_without_a_sender_is_refused_by_the_first_interlock() -> None:
    """Tried: write = true but no sender. Kept: "CAN writing enabled" refuses and says why."""
    (command,) = action_commands(CanConfig("virtual", write=True), (LOCK,), None, None)
    writing = command.interlocks[0]
    assert isinstance(writing, CanWritingEnabled)
    assert writing.check(VehicleState()) == "the agent has no CAN bus to send on"


def test_sender_for_follows_the_write_keys() -> None:
    """Tried: each combination of write keys. Kept: None when off; the port's bus by default; an own
    bus for write_interface or another write_channel."""
    port = CanPort("socketcan", "can0", lambda batch: None)
    assert sender_for(None, port) is None
    assert sender_for(CanConfig("socketcan"), port) is None
    on_port = sender_for(CanConfig("socketcan", write=True), port)
    assert on_port is not None and isinstance(on_port.link, PortLink) and on_port.link.port is port
    demo = sender_for(CanConfig("replay", "demo0", write=True, write_interface="virtual",
                                write_channel="demo-actions"), None)
    assert demo is not None and isinstance(demo.link, BusLink)
    assert (demo.link.interface, demo.link.channel, demo.link.options) == ("virtual", "demo-actions", {})
    other = sender_for(CanConfig("pcan", "PCAN_USBBUS1", bitrate=500000, write=True,
                                 write_channel="PCAN_USBBUS2"), port)
    assert other is not None and isinstance(other.link, BusLink)
    assert (other.link.interface, other.link.channel, other.link.options) == (
        "pcan", "PCAN_USBBUS2", {"bitrate": 500000})
