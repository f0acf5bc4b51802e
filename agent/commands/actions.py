"""Vehicle actions as commands: the profile's ``[[vehicle.actions]]``, each a few CAN frames to send.

Each action becomes one :class:`Command` whose interlocks run in this order: CAN
writing is enabled in the profile, the car stands still (``speed_zero``), its mode is
one of ``modes``, and the driver accepts it on the dashboard (``driver_confirms``).
The Dispatcher asks them and names the one that refused; the handler only sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import can

from agent.commands.registry import (AskingInterlock, Command, CommandContext, Handler, Interlock, ModeIs,
                                     Result, SpeedIsZero)
from agent.profile.model import CanAction, CanConfig, CanFrame
from agent.vehicle.state import VehicleState
from drivers.can.port import CanPort
from drivers.can.sender import CanSender, FrameNotSent, candump

log = logging.getLogger(__name__)

DriverInterlockFactory = Callable[[CanAction], AskingInterlock]
WRITING_OFF = "CAN writing is off in this car's profile"
NO_SENDER = "the agent has no CAN bus to send on"
NO_DASHBOARD = "no dashboard to ask the driver"
DRIVER_CONFIRMS = "driver confirms on the dashboard"  # the name agent/commands/driver.py's DriverConfirms has


class CanWritingEnabled:
    """The profile's ``[vehicle.can] write`` is true and the agent has a sender for it."""

    def __init__(self, can_config: CanConfig | None, sender: CanSender | None) -> None:
        self.enabled = can_config is not None and can_config.write
        self.sender = sender

    @property
    def name(self) -> str:
        return "CAN writing enabled"

    def check(self, state: VehicleState) -> str | None:
        if not self.enabled:
            return WRITING_OFF
        if self.sender is None:
            return NO_SENDER
        return None


class NoDriverToAsk:
    """Stands in for the driver's confirmation where there is no dashboard: always refuses."""

    @property
    def name(self) -> str:
        return DRIVER_CONFIRMS

    def check(self, state: VehicleState) -> str | None:
        return NO_DASHBOARD


def action_commands(can_config: CanConfig | None, actions: Sequence[CanAction], sender: CanSender | None,
                    driver_interlock: DriverInterlockFactory | None) -> list[Command]:
    """One command per profile action, guarded by its interlocks, sending through ``sender``."""
    writing = CanWritingEnabled(can_config, sender)
    return [_command(action, writing, sender, driver_interlock) for action in actions]


def sender_for(can_config: CanConfig | None, port: CanPort | None) -> CanSender | None:
    """The sender the profile asks for: None unless ``write`` is true; the port's bus unless
    ``write_interface`` or another ``write_channel`` names a bus of its own (the demo's virtual one)."""
    if can_config is None or not can_config.write:
        return None
    interface = can_config.write_interface or can_config.interface
    channel = can_config.write_channel or can_config.channel
    if port is not None and can_config.write_interface is None and channel == can_config.channel:
        return CanSender.on_port(port)
    return CanSender.on_bus(interface, channel, **_bus_options(can_config, interface))


def interlocks(action: CanAction, writing: Interlock,
               driver_interlock: DriverInterlockFactory | None) -> tuple[Interlock | AskingInterlock, ...]:
    """The action's interlocks, in the order they are checked."""
    found: list[Interlock | AskingInterlock] = [writing]
    if action.speed_zero:
        found.append(SpeedIsZero())
    if action.modes:
        found.append(ModeIs(*action.modes))
    if action.driver_confirms:
        found.append(NoDriverToAsk() if driver_interlock is None else driver_interlock(action))
    return tuple(found)


def message(frame: CanFrame) -> can.Message:
    """The python-can message for one profile frame."""
    return can.Message(arbitration_id=frame.arbitration_id, data=frame.data, is_extended_id=frame.extended)


def _command(action: CanAction, writing: Interlock, sender: CanSender | None,
             driver_interlock: DriverInterlockFactory | None) -> Command:
    guards = interlocks(action, writing, driver_interlock)
    return Command(action.name, action.title, (), _handler(action, sender), confirm=action.confirm,
                   interlocks=guards, description=_describe(action, guards))


def _describe(action: CanAction, guards: Sequence[Interlock | AskingInterlock]) -> str:
    frames = [candump(message(f)) for f in action.frames]
    sends = frames[0] + "".join(f", then {f} {action.gap:g} s later" for f in frames[1:])
    return f"Sends {sends} on the car's CAN bus. Only when: {', '.join(g.name for g in guards)}."


def _handler(action: CanAction, sender: CanSender | None) -> Handler:
    async def send_action(ctx: CommandContext) -> Result:
        if sender is None:
            return Result(f"Nothing was sent: {NO_SENDER}.", ok=False)
        return await _send(action, sender, ctx.requester)

    return send_action


async def _send(action: CanAction, sender: CanSender, requester: str) -> Result:
    frames = [message(f) for f in action.frames]
    log.info("action %s for %s: sending %s on %s", action.name, requester,
             " ".join(candump(f) for f in frames), sender.description)
    try:
        sent = await sender.send(frames, action.gap)
    except FrameNotSent as exc:
        log.warning("action %s for %s: %s", action.name, requester, exc)
        rows = (("Frames sent", f"{exc.sent} of {exc.total}"), ("Failed frame", candump(exc.frame)),
                ("Reason", str(exc.cause)))
        return Result(f"{action.title}: {exc}.", rows, ok=False)
    log.info("action %s for %s: %d frame(s) sent", action.name, requester, sent)
    return Result(f"{action.title}: {sent} frame(s) sent on the car's CAN bus.",
                  (("Frames sent", f"{sent} of {sent}"),))


def _bus_options(can_config: CanConfig, interface: str) -> dict[str, Any]:
    """The bus settings of ``[vehicle.can]`` for an own bus (the virtual bus takes none)."""
    if interface == "virtual":
        return {}
    options: dict[str, Any] = {}
    if can_config.bitrate is not None:
        options["bitrate"] = can_config.bitrate
    if can_config.fd:
        options["fd"] = True
        if can_config.data_bitrate is not None:
            options["data_bitrate"] = can_config.data_bitrate
    return options
