"""The agent's own commands that need nothing but the facade: status, locate, audit-tail,
restart-agent, reboot-board, call-me. The others (telemetry, message-driver, photo, logs, vehicle
actions) are built next to what they use and added by the agent."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from agent.commands.forms import Field
from agent.commands.registry import Command, CommandContext, ModeIs, Registry, Result, SpeedIsZero
from agent.vehicle import paths
from agent.vehicle.state import VehicleState

UNKNOWN = "unknown"
NO_FIX = frozenset({"NONE", ""})


def builtin_commands() -> list[Command]:
    """The commands every car offers."""
    return [
        Command("status", "Vehicle status", (), status,
                description="Mode, speed, position, fuel, doors, connection, agent version and uptime."),
        Command("locate", "Locate the vehicle", (), locate,
                description="Position, heading, speed and fix, with map links."),
        Command("audit-tail", "Command audit trail", (
            Field("count", "Entries", "int", default=20, min=1, max=200),), audit_tail,
            description="The latest command attempts on this car."),
        Command("restart-agent", "Restart the agent", (), restart_agent,
                confirm="Restart the headunit agent now? The car is offline for a few seconds."),
        Command("reboot-board", "Reboot the board", (), reboot_board,
                confirm="Reboot the car's computer now? It is offline until it has started again.",
                interlocks=(SpeedIsZero(), ModeIs("parked", "off"))),
        Command("call-me", "Call me back", (), call_me,
                description="The car calls you back (not available yet)."),
    ]


def builtin_registry() -> Registry:
    return Registry(builtin_commands())


# -- handlers ------------------------------------------------------------------------------


async def status(ctx: CommandContext) -> Result:
    state = ctx.agent.state
    rows = (
        ("Mode", _text(state, paths.MODE)),
        ("Speed", _unit(state, paths.SPEED, "km/h", 0)),
        ("Position", _position(state)),
        ("Fuel", _unit(state, paths.FUEL_LEVEL, "%", 0)),
        ("Doors", _doors(state)),
        ("Connection", ctx.agent.connection()),
        ("Agent version", ctx.agent.version),
        ("Uptime", _duration(ctx.agent.uptime())),
    )
    return Result("; ".join(f"{label}: {value}" for label, value in rows), rows)


async def locate(ctx: CommandContext) -> Result:
    state = ctx.agent.state
    lat, lon = state.value(paths.LATITUDE), state.value(paths.LONGITUDE)
    fix = str(state.value(paths.GNSS_FIX_TYPE, "") or "")
    if not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)) or fix in NO_FIX:
        last = state.get(paths.LATITUDE)
        since = f" (last known position {_age(last.timestamp)} ago)" if last is not None else ""
        return Result(f"No GNSS fix: the car's position is not known now{since}.",
                      (("Fix", fix or "NONE"),), ok=False)
    geo = f"geo:{lat:.6f},{lon:.6f}"
    osm = f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=16/{lat:.6f}/{lon:.6f}"
    rows = (
        ("Position", f"{lat:.6f}, {lon:.6f}"),
        ("Heading", _unit(state, paths.HEADING, "°", 0)),
        ("Speed", _unit(state, paths.SPEED, "km/h", 0)),
        ("Fix", fix),
        ("Accuracy", _unit(state, paths.HORIZONTAL_ACCURACY, "m", 0)),
        ("Fix time", _text(state, paths.LOCATION_TIMESTAMP)),
        ("Map", osm),
        ("geo URI", geo),
    )
    return Result(f"The car is at {lat:.6f}, {lon:.6f} ({fix}): {osm}", rows)


async def audit_tail(ctx: CommandContext) -> Result:
    log = ctx.agent.audit
    if log is None:
        return Result("The audit trail is not available.", ok=False)
    count = ctx.values.get("count", 20)
    entries = await log.tail(int(count) if isinstance(count, (int, float)) else 20)
    rows = tuple((_clock(e.time), f"{e.requester} {e.command or '(list)'}: {e.result}"
                  + (f" ({e.detail})" if e.detail else "")) for e in entries)
    return Result(f"The latest {len(rows)} command attempts.", rows)


async def restart_agent(ctx: CommandContext) -> Result:
    if ctx.agent.restart is None:
        return Result("Restarting is not available on this car.", ok=False)
    ctx.agent.restart()
    return Result("The agent restarts now; it is back online in a few seconds.")


async def reboot_board(ctx: CommandContext) -> Result:
    if ctx.agent.reboot is None:
        return Result("Rebooting is not available on this car.", ok=False)
    ctx.agent.reboot()
    return Result("The board reboots now.")


async def call_me(ctx: CommandContext) -> Result:
    return Result("Calls are not available on this car yet: nothing was done.", ok=False)


# -- formatting -------------------------------------------------------------------------------


def _text(state: VehicleState, path: str) -> str:
    value = state.value(path)
    return UNKNOWN if value is None else str(value)


def _unit(state: VehicleState, path: str, unit: str, digits: int) -> str:
    value = state.value(path)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return UNKNOWN
    return f"{value:.{digits}f} {unit}"


def _position(state: VehicleState) -> str:
    lat, lon = state.value(paths.LATITUDE), state.value(paths.LONGITUDE)
    if not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)):
        return UNKNOWN
    return f"{lat:.6f}, {lon:.6f}"


def _doors(state: VehicleState) -> str:
    """Every fresh ``Vehicle.Cabin.Door.*.IsOpen`` reading: which are open, or all closed."""
    doors = {path: r.value for path, r in state.snapshot().items()
             if path.startswith("Vehicle.Cabin.Door.") and path.endswith(".IsOpen") and not r.is_stale}
    if not doors:
        return UNKNOWN
    opened = [p.removeprefix("Vehicle.Cabin.Door.").removesuffix(".IsOpen") for p, v in doors.items() if v]
    return "open: " + ", ".join(sorted(opened)) if opened else "all closed"


def _duration(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


def _age(timestamp: float) -> str:
    return _duration(max(0.0, time.time() - timestamp))


def _clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")
