"""``headunit state``, ``chat``, ``presence`` and ``offers``: the dashboard's state and actions for headless cars.

Asks the running agent on its control socket (the handlers of :mod:`agent.headless`),
like ``headunit contacts`` and ``headunit driver`` do. Arguments are checked here with
the agent's own rules first, so a typo is a usage error (exit 2) before anything is
asked; the agent checks them again (another client may not have).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from agent import headless
from agent.cli_control import EXIT_USAGE, ask_agent, print_answer, table
from agent.policies.presence import OVERRIDE_SHOWS
from agent.vehicle import paths

COMMANDS = ("state", "chat", "presence", "offers")
TEXT_WIDTH = 60  # characters of a message shown in a table row
Request = tuple[str, dict[str, object]]  # control command and its arguments

FOOTER = """
Talks to the agent running on PROFILE through its control socket; run it as the
agent's user. Exit status: 0 done, 1 the agent refused, 2 bad arguments or profile,
3 no agent running."""

STATE_EPILOG = """\
examples:
  headunit state car.toml          mode, speed, gear, fuel, doors, position, connection, presence
  headunit state car.toml --json   every vehicle value {path: {value, stale, at}} and the rest, for scripts
""" + FOOTER

CHAT_EPILOG = """\
examples:
  headunit chat car.toml                                  conversations, the latest message of each
  headunit chat car.toml show ann@example.org -n 50       the latest 50 messages with ann
  headunit chat car.toml send ann@example.org On my way   send a message (queued while offline)
  headunit chat car.toml send ann@example.org -- -5 °C here, roads icy

While the vehicle moves, only the profile's quick replies ([dashboard] quick_replies,
e.g. "Driving, will answer later", "On my way", "Call me") are sent; anything else is
refused, as on the dashboard.
""" + FOOTER

PRESENCE_EPILOG = """\
examples:
  headunit presence car.toml                          what the car shows, and whether it follows the vehicle
  headunit presence car.toml dnd --status "Lunch"     do not disturb, until `auto`
  headunit presence car.toml away
  headunit presence car.toml auto                     follow the vehicle mode again
""" + FOOTER

OFFERS_EPILOG = """\
examples:
  headunit offers car.toml                  incoming calls and files waiting for the driver
  headunit offers car.toml accept 3fa9c2    take the call (or file) 3fa9c2
  headunit offers car.toml decline 3fa9c2
""" + FOOTER


class UsageError(ValueError):
    """The command line asks for something malformed; nothing is sent to the agent."""


# -- parsers ----------------------------------------------------------------------------------


def add_parsers(commands: Any) -> None:
    """Add ``state``, ``chat``, ``presence`` and ``offers`` to the ``headunit`` sub-command parsers."""
    def parser(name: str, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name, help=help, description=description, epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("profile", help="the profile TOML file the agent runs on")
        return sub

    state = parser("state", "the vehicle, connection and presence now (asks the running agent)",
                   "Show what the dashboard's drive screen shows.", STATE_EPILOG)
    _json_flag(state)

    chat = parser("chat", "chat threads; show one, send a message (asks the running agent)",
                  "List conversations, show one, or send a message as the car.", CHAT_EPILOG)
    chat.add_argument("action", nargs="?", choices=("show", "send"), metavar="ACTION",
                      help="show JID, or send JID TEXT...")
    chat.add_argument("jid", nargs="?", metavar="JID", help="the other side's bare JID, e.g. ann@example.org")
    chat.add_argument("text", nargs="*", metavar="TEXT", help="the message (words are joined with spaces)")
    chat.add_argument("-n", "--limit", type=int, default=20, metavar="N",
                      help="how many conversations (or messages, with show) to list (default 20)")
    _json_flag(chat)

    presence = parser("presence", "show or set the car's presence (asks the running agent)",
                      "Show the car's presence, set it by hand, or let it follow the vehicle again.",
                      PRESENCE_EPILOG)
    presence.add_argument("show", nargs="?", choices=("auto", *OVERRIDE_SHOWS), metavar="SHOW",
                          help="auto (follow the vehicle) or available, away, xa, dnd (until auto)")
    presence.add_argument("--status", metavar="TEXT", help="the status text to show with SHOW")
    _json_flag(presence)

    offers = parser("offers", "incoming calls and files waiting for the driver (asks the running agent)",
                    "List the calls and files offered to the driver, or accept or decline one.", OFFERS_EPILOG)
    offers.add_argument("action", nargs="?", choices=("accept", "decline"), metavar="ACTION",
                        help="accept or decline ID")
    offers.add_argument("id", nargs="?", metavar="ID", help="the offer's id, as listed")
    _json_flag(offers)


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")


# -- running ------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    """Run one of ``state``, ``chat``, ``presence``, ``offers``; returns the exit status."""
    try:
        request = REQUESTS[args.command](args)
    except UsageError as exc:
        print(f"headunit {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    cmd, arguments = request
    code, result = ask_agent(args.profile, lambda client: client.call(cmd, **arguments))
    if code == 0:
        print_answer(result, args.json, lambda: FOR_PEOPLE[cmd](result, args))
    return code


# -- what to ask ------------------------------------------------------------------------------


def _checked(check: Callable[[Mapping[str, Any], str], object], value: object) -> None:
    """The agent's own check of one argument, run here first: its refusal is a usage error."""
    try:
        check({"value": value}, "value")
    except headless.HeadlessError as exc:
        raise UsageError(str(exc).removeprefix("value: ")) from None


def state_request(args: argparse.Namespace) -> Request:
    return "state", {}


def chat_request(args: argparse.Namespace) -> Request:
    if not args.action:
        if args.jid:
            raise UsageError("a JID goes with show or send")
        return "chat.threads", {"limit": _limit(args.limit, headless.THREADS[1])}
    if not args.jid:
        raise UsageError(f"{args.action} needs a JID (e.g. ann@example.org)")
    _checked(headless.jid, args.jid)
    if args.action == "show":
        if args.text:
            raise UsageError("show takes a JID only (send JID TEXT sends a message)")
        return "chat.show", {"peer": args.jid, "limit": _limit(args.limit, headless.MESSAGES[1])}
    body = " ".join(args.text)
    if not body.strip():
        raise UsageError("send needs the message: send JID TEXT...")
    _checked(headless.message_body, body)
    return "chat.send", {"to": args.jid, "body": body}


def _limit(value: int, most: int) -> int:
    if not 1 <= value <= most:
        raise UsageError(f"-n: expected a number from 1 to {most}, found {value}")
    return value


def presence_request(args: argparse.Namespace) -> Request:
    if args.status is not None and args.show in (None, "auto"):
        raise UsageError("--status goes with available, away, xa or dnd")
    if args.show is None:
        return "presence.get", {}
    if args.show == "auto":
        return "presence.auto", {}
    _checked(headless.status, args.status)
    arguments: dict[str, object] = {"show": args.show}
    if args.status is not None:
        arguments["status"] = args.status
    return "presence.set", arguments


def offers_request(args: argparse.Namespace) -> Request:
    if not args.action:
        if args.id:
            raise UsageError("an ID goes with accept or decline")
        return "offers.pending", {}
    if not args.id:
        raise UsageError(f"{args.action} needs an ID (from `headunit offers PROFILE`)")
    _checked(headless.offer_id, args.id)
    return "offers.answer", {"id": args.id, "accept": args.action == "accept"}


REQUESTS: dict[str, Callable[[argparse.Namespace], Request]] = {
    "state": state_request, "chat": chat_request, "presence": presence_request, "offers": offers_request}


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
    note = f" (stale, {_age(found.get('at'))} old)" if found.get("stale") else ""
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


def presence_text(presence: Any, _: argparse.Namespace | None = None) -> str:
    """What the car shows, and whether it follows the vehicle."""
    shown = _shown_presence(presence.get("show"), presence.get("status"))
    if presence.get("auto", True):
        return f"{shown} (automatic)"
    auto = _shown_presence(presence.get("auto_show"), presence.get("auto_status"))
    return f"{shown} (set by the driver; automatic would be {auto})"


def _shown_presence(show: object, status: object) -> str:
    return f'{show or "available"} "{status}"' if status else str(show or "available")


def threads_text(messages: Any, _: argparse.Namespace | None = None) -> str:
    """The agent's ``chat.threads`` result: one row per conversation."""
    if not messages:
        return "no conversations yet"
    rows = [[m["peer"], _local_time(m.get("at")), f'{_arrow(m)} {_cut(m.get("body", ""))}', _state(m)]
            for m in messages]
    return table(["WITH", "WHEN", "LAST MESSAGE (← from them, → from the car)", "STATE"], rows)


def thread_text(messages: Any, args: argparse.Namespace | None = None) -> str:
    """The agent's ``chat.show`` result: the conversation, oldest first, bodies in full."""
    peer = args.jid if args is not None else "?"
    if not messages:
        return f"no messages with {peer}"
    lines = [f"with {peer} (latest {len(messages)}, oldest first; ← from them, → from the car):"]
    for m in messages:
        body = str(m.get("body", "")).replace("\n", "\n" + " " * 24)  # under the first line's text
        state = f"  [{m['state']}]" if m.get("state") else ""
        lines.append(f"{_local_time(m.get('at'), seconds=True)}  {_arrow(m)}  {body}{state}")
    return "\n".join(lines)


def sent_text(message: Any, _: argparse.Namespace | None = None) -> str:
    done = {"queued": "queued: it goes out when the car is online", "sent": "sent",
            "acked": "on the server", "delivered": "delivered", "failed": "failed"}
    return f"message {message['id']} to {message['peer']}: {done.get(message.get('state'), message.get('state'))}"


def offers_text(offers: Any, _: argparse.Namespace | None = None) -> str:
    """The agent's ``offers.pending`` result as a table (oldest first)."""
    if not offers:
        return "no calls or files wait for the driver"
    rows = [[o["id"], o["kind"], o["peer"], _offered(o), _age(o.get("at"))] for o in offers]
    return table(["ID", "KIND", "FROM", "WHAT", "WAITING"], rows) + "\n(accept ID or decline ID)"


def answered_text(offer: Any, _: argparse.Namespace | None = None) -> str:
    return f"{offer.get('outcome')} {offer['kind']} {offer['id']} from {offer['peer']}: {_offered(offer)}"


def _offered(offer: Any) -> str:
    if offer.get("kind") == "call":
        return "+".join(offer.get("media") or ()) + " call"
    return f"{offer.get('name')} ({_size(offer.get('size'))})"


def _size(size: Any) -> str:
    amount = float(size) if isinstance(size, (int, float)) else 0.0
    if amount < 1000:
        return f"{amount:.0f} bytes"
    for unit in ("kB", "MB"):
        amount /= 1000
        if amount < 1000:
            return f"{amount:.1f} {unit}"
    return f"{amount / 1000:.1f} GB"


def _arrow(message: Any) -> str:
    return "→" if message.get("direction") == "out" else "←"


def _state(message: Any) -> str:
    return str(message.get("state") or "") if message.get("direction") == "out" else ""


def _cut(text: str) -> str:
    one_line = " ".join(str(text).split())
    return one_line if len(one_line) <= TEXT_WIDTH else one_line[:TEXT_WIDTH - 1] + "…"


def _age(epoch: Any) -> str:
    try:
        seconds = max(0.0, time.time() - float(epoch))
    except (TypeError, ValueError):
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.0f} h"


def _local_time(epoch: Any, *, seconds: bool = False) -> str:
    try:
        return datetime.fromtimestamp(float(epoch)).astimezone().strftime(
            "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


FOR_PEOPLE: dict[str, Callable[[Any, argparse.Namespace], str]] = {
    "state": state_text, "chat.threads": threads_text, "chat.show": thread_text, "chat.send": sent_text,
    "presence.get": presence_text, "presence.set": presence_text, "presence.auto": presence_text,
    "offers.pending": offers_text, "offers.answer": answered_text}
