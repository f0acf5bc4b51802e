"""``headunit offers``: incoming calls and files waiting for the driver; accept or decline one.

Asks the running agent on its control socket, like ``headunit state`` does. The id is
checked here with the agent's own rule first (:mod:`agent.cabin.fields`), so a typo is
a usage error (exit 2) before anything is asked.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from agent.cabin import fields
from agent.cli.common import (FOOTER, Commands, ForPeople, Request, UsageError, age, ask_and_print, checked,
                              json_flag, table)

EPILOG = """\
examples:
  headunit offers car.toml                  incoming calls and files waiting for the driver
  headunit offers car.toml accept 3fa9c2    take the call (or file) 3fa9c2
  headunit offers car.toml decline 3fa9c2
""" + FOOTER


def add_parser(commands: Commands, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``offers`` to the ``headunit`` sub-command parsers."""
    offers = commands.add_parser(
        "offers", help="incoming calls and files waiting for the driver (asks the running agent)",
        description="List the calls and files offered to the driver, or accept or decline one.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter, parents=parents)
    offers.add_argument("profile", help="the profile TOML file the agent runs on")
    offers.add_argument("action", nargs="?", choices=("accept", "decline"), metavar="ACTION",
                        help="accept or decline ID")
    offers.add_argument("id", nargs="?", metavar="ID", help="the offer's id, as listed")
    json_flag(offers)
    offers.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``headunit offers``; returns the exit status."""
    return ask_and_print("offers", args, request, FOR_PEOPLE)


def request(args: argparse.Namespace) -> Request:
    if not args.action:
        if args.id:
            raise UsageError("an ID goes with accept or decline")
        return "offers.pending", {}
    if not args.id:
        raise UsageError(f"{args.action} needs an ID (from `headunit offers PROFILE`)")
    checked(fields.short_id, "ID", args.id)
    return "offers.answer", {"id": args.id, "accept": args.action == "accept"}


# -- for people ---------------------------------------------------------------------------------


def offers_text(offers: Any, _: argparse.Namespace | None = None) -> str:
    """The agent's ``offers.pending`` result as a table (oldest first)."""
    if not offers:
        return "no calls or files wait for the driver"
    rows = [[o["id"], o["kind"], o["peer"], _offered(o), age(o.get("at"))] for o in offers]
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


FOR_PEOPLE: dict[str, ForPeople] = {"offers.pending": offers_text, "offers.answer": answered_text}
