"""``headunit presence``: show the car's presence, set it by hand, or let it follow the vehicle again.

Asks the running agent on its control socket, like ``headunit state`` does. The status
text is checked here with the agent's own rule first (:mod:`agent.cabin.fields`), so a
bad one is a usage error (exit 2) before anything is asked.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from agent.cabin import fields
from agent.cli.common import FOOTER, Commands, ForPeople, Request, UsageError, ask_and_print, checked, json_flag
from agent.policies.presence import OVERRIDE_SHOWS

EPILOG = """\
examples:
  headunit presence car.toml                          what the car shows, and whether it follows the vehicle
  headunit presence car.toml dnd --status "Lunch"     do not disturb, until `auto`
  headunit presence car.toml away
  headunit presence car.toml auto                     follow the vehicle mode again
""" + FOOTER


def add_parser(commands: Commands, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``presence`` to the ``headunit`` sub-command parsers."""
    presence = commands.add_parser(
        "presence", help="show or set the car's presence (asks the running agent)",
        description="Show the car's presence, set it by hand, or let it follow the vehicle again.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, parents=parents)
    presence.add_argument("profile", help="the profile TOML file the agent runs on")
    presence.add_argument("show", nargs="?", choices=("auto", *OVERRIDE_SHOWS), metavar="SHOW",
                          help="auto (follow the vehicle) or available, away, xa, dnd (until auto)")
    presence.add_argument("--status", metavar="TEXT", help="the status text to show with SHOW")
    json_flag(presence)
    presence.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``headunit presence``; returns the exit status."""
    return ask_and_print("presence", args, request, FOR_PEOPLE)


def request(args: argparse.Namespace) -> Request:
    if args.status is not None and args.show in (None, "auto"):
        raise UsageError("--status goes with available, away, xa or dnd")
    if args.show is None:
        return "presence.get", {}
    if args.show == "auto":
        return "presence.auto", {}
    checked(fields.status_text, "--status", args.status)
    arguments: dict[str, object] = {"show": args.show}
    if args.status is not None:
        arguments["status"] = args.status
    return "presence.set", arguments


# -- for people ---------------------------------------------------------------------------------


def presence_text(presence: Any, _: argparse.Namespace | None = None) -> str:
    """What the car shows, and whether it follows the vehicle."""
    shown = _shown_presence(presence.get("show"), presence.get("status"))
    if presence.get("auto", True):
        return f"{shown} (automatic)"
    auto = _shown_presence(presence.get("auto_show"), presence.get("auto_status"))
    return f"{shown} (set by the driver; automatic would be {auto})"


def _shown_presence(show: object, status: object) -> str:
    return f'{show or "available"} "{status}"' if status else str(show or "available")


FOR_PEOPLE: dict[str, ForPeople] = {
    "presence.get": presence_text, "presence.set": presence_text, "presence.auto": presence_text}
