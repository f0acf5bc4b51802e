"""Profile: vehicle actions (``[[vehicle.actions]]``), CAN frames an operator may have the car send."""

from __future__ import annotations

import re

from agent.profile.model import CanAction, CanFrame
from agent.profile.table import Table, field_names, present
from agent.vehicle.mode import VehicleMode

# candump notation: 3 hex digits = standard (11-bit) id, 8 = extended (29-bit); up to 8 data bytes.
_FRAME = re.compile(r"(?P<id>[0-9A-Fa-f]{3}|[0-9A-Fa-f]{8})#(?P<data>(?:[0-9A-Fa-f]{2}){0,8})")
_FRAME_WHAT = 'a frame in candump notation like "321#0100000000000000" (3 or 8 hex digits, # , 0-8 bytes)'
_NAME = re.compile(r"[a-z][a-z0-9-]{0,47}")
_MODES = tuple(mode.value for mode in VehicleMode)
# The agent's own commands: an action cannot take their names.
RESERVED_NAMES = frozenset({"status", "locate", "telemetry", "audit-tail", "restart-agent", "reboot-board",
                            "call-me", "photo", "logs", "message-driver"})
MAX_FRAMES = 16
MAX_GAP = 10.0  # s between two frames of one action
MAX_DRIVER_TIMEOUT = 300.0  # s the driver may take to answer


def parse_frame(text: str) -> CanFrame | None:
    """A :class:`CanFrame` from candump notation, or None if ``text`` is not one."""
    match = _FRAME.fullmatch(text.strip())
    if match is None:
        return None
    ident = int(match["id"], 16)
    extended = len(match["id"]) == 8
    if ident > (0x1FFFFFFF if extended else 0x7FF):
        return None
    return CanFrame(ident, bytes.fromhex(match["data"]), extended)


def actions(t: Table) -> tuple[CanAction, ...]:
    """Every ``[[vehicle.actions]]`` entry, names unique and not the agent's own commands'."""
    found = tuple(_action(item) for item in t.tables("actions"))
    seen: set[str] = set()
    for i, action in enumerate(found):
        if action.name in seen:
            t.fail(f"actions[{i}].name", "a name no other action has", action.name)
        seen.add(action.name)
    return found


def _action(t: Table) -> CanAction:
    t.only(field_names(CanAction))
    name = t.text("name", required=True, what="a command name: lower-case letters, digits and '-'",
                  pattern=_NAME) or ""
    if name in RESERVED_NAMES:
        t.fail("name", f"a name not used by the agent's own commands ({', '.join(sorted(RESERVED_NAMES))})",
               name)
    modes = t.strings("modes", what="a vehicle mode: " + ", ".join(_MODES), pattern=re.compile("|".join(_MODES)))
    gap = t.number("gap", ">= 0")
    if gap is not None and gap > MAX_GAP:
        t.fail("gap", f"a number of seconds 0..{MAX_GAP:g} (the sender is held for the whole gap)", gap)
    driver_timeout = t.number("driver_timeout")
    if driver_timeout is not None and driver_timeout > MAX_DRIVER_TIMEOUT:
        t.fail("driver_timeout", f"a number of seconds up to {MAX_DRIVER_TIMEOUT:g}", driver_timeout)
    return CanAction(**present(
        name=name,
        title=t.text("title") or name,
        frames=_frames(t),
        gap=gap,
        confirm=t.text("confirm", what="a yes/no question for the operator"),
        speed_zero=t.flag("speed_zero"),
        modes=modes,
        driver_confirms=t.flag("driver_confirms"),
        driver_timeout=driver_timeout,
    ))


def _frames(t: Table) -> tuple[CanFrame, ...]:
    items = t.array("frames", required=True) or []
    if not items:
        t.fail("frames", f"1..{MAX_FRAMES} frames ({_FRAME_WHAT})", items)
    if len(items) > MAX_FRAMES:
        t.fail("frames", f"at most {MAX_FRAMES} frames", len(items))
    frames = []
    for i, item in enumerate(items):
        frame = parse_frame(item) if isinstance(item, str) else None
        if frame is None:
            t.fail(f"frames[{i}]", _FRAME_WHAT, item)
        frames.append(frame)
    return tuple(frames)
