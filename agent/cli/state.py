"""``headunit state``: what the dashboard's drive screen shows, for headless cars.

Asks the running agent on its control socket (the handlers of :mod:`agent.control.handlers`),
like ``headunit chat``, ``presence`` and ``offers`` do.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from agent.cli.common import FOOTER, Commands, ForPeople, Request, age, ask_and_print, json_flag
from agent.cli.presence import presence_text
from agent.vehicle import paths

EPILOG = """\
examples:
  headunit state car.toml          mode, speed, gear, fuel, doors, position, connection, presence
  headunit state car.toml --json   every vehicle value {path: {value, stale, at}} and the rest, for scripts
""" + FOOTER


def add_parser(commands: Commands, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``state`` to the ``headunit`` sub-command parsers."""
    state = commands.add_parser(
        "state", help="the vehicle, connection and presence now (asks the running agent)",
        description="Show what the dashboard's drive screen shows.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter, parents=parents)
    state.add_argument("profile", help="the profile TOML file the agent runs on")
    json_flag(state)
    state.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``headunit state``; returns the exit status."""
    return ask_and_print("state", args, request, FOR_PEOPLE)


def request(args: argparse.Namespace) -> Request:
    return "state", {}


# -- for people ---------------------------------------------------------------------------------


def _power(power: Any) -> str:
    """The ignition-off sequence: "board stays on (power off disabled)", "power off in 87 s", ..."""
    left, phase = power.get("poweroff_in"), str(power.get("phase") or "idle")
    if isinstance(left, int):
        return f"power off in {left} s (ignition off)"
    if not power.get("enabled"):
        return "board stays on at ignition off ([power] enabled = false)"
    return phase


def state_text(state: Any, _: argparse.Namespace | None = None) -> str:
    """The agent's ``state`` result as a short summary for people."""
    values = state.get("vehicle") or {}
    mode = state.get("mode") or "unknown"
    rows = [
        ("mode", mode + (" (moving)" if state.get("moving") and mode != "driving" else "")),
        ("speed", _number(values, paths.SPEED, "km/h", 0)),
        ("engine", _number(values, paths.ENGINE_SPEED, "rpm", 0)),
        ("gear", _gear(values)),
        ("fuel", _number(values, paths.FUEL_LEVEL, "%", 1)),
        ("coolant", _number(values, paths.ENGINE_COOLANT, "°C", 0)),
        ("doors", _doors(values)),
        ("position", _position(values)),
        ("connection", _connection(state.get("connection") or {})),
        ("presence", presence_text(state.get("presence") or {})),
        ("power", _power(state.get("power") or {})),
    ]
    title = f"{state.get('name', '?')} · {state.get('car', '?')}"
    return "\n".join([title, *(f"{label:<11} {text}" for label, text in rows)])


def _reading(values: Any, path: str) -> tuple[object, str]:
    """A value and " (stale, 12 s old)" when its source went quiet; (None, "") when unknown."""
    found = values.get(path)
    if not isinstance(found, dict) or found.get("value") is None:
        return None, ""
    note = f" (stale, {age(found.get('at'))} old)" if found.get("stale") else ""
    return found["value"], note


def _number(values: Any, path: str, unit: str, decimals: int) -> str:
    value, note = _reading(values, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "unknown" if value is None else f"{value}{note}"
    return f"{value:.{decimals}f} {unit}{note}"


def _gear(values: Any) -> str:
    value, note = _reading(values, paths.CURRENT_GEAR)
    names: dict[object, str] = {paths.GEAR_PARK: "P (park)", -1: "R (reverse)", 0: "N (neutral)"}
    return "unknown" if value is None else f"{names.get(value, value)}{note}"


def _doors(values: Any) -> str:
    doors = {path: r for path, r in values.items()
             if path.startswith("Vehicle.Cabin.Door.") and path.endswith(".IsOpen") and isinstance(r, dict)}
    fresh = {p: r.get("value") for p, r in doors.items() if not r.get("stale")}
    if not fresh:
        return "unknown"
    opened = sorted(p.removeprefix("Vehicle.Cabin.Door.").removesuffix(".IsOpen") for p, v in fresh.items() if v)
    return "OPEN: " + ", ".join(opened) if opened else "all closed"


def _position(values: Any) -> str:
    lat, note = _reading(values, paths.LATITUDE)
    lon, _ = _reading(values, paths.LONGITUDE)
    fix, _ = _reading(values, paths.GNSS_FIX_TYPE)
    if not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)):
        return "no fix"
    extra = [f"fix {fix}"] if fix else []
    heading, _ = _reading(values, paths.HEADING)
    if isinstance(heading, (int, float)) and not isinstance(heading, bool):
        extra.append(f"heading {heading:.0f}°")
    return f"{lat:.6f}, {lon:.6f}{note}" + (f" ({', '.join(extra)})" if extra else "")


def _connection(connection: Any) -> str:
    parts = [str(connection.get("detail") or connection.get("state") or "unknown")]
    if connection.get("queued") is not None:
        parts.append(f"telemetry queued {connection['queued']}")
    parts.append(f"chat outbox {connection.get('outbox', '?')}")
    return " · ".join(parts)


FOR_PEOPLE: dict[str, ForPeople] = {"state": state_text}
