"""``headunit contacts``: the driver's side of subscriptions, asked of the running agent on its control socket."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agent.cli.common import Commands, ForPeople, Request, UsageError, ask_and_print, table

ACTIONS = ("approve", "refuse", "remove")
DONE = {"approve": "approved {jid}: they now see the car's presence",
        "refuse": "refused {jid}", "remove": "removed {jid} from the car's contacts"}

EPILOG = """\
examples:
  headunit contacts car.toml                          the car's contacts and their presence
  headunit contacts car.toml --pending                subscription requests waiting for the driver
  headunit contacts car.toml approve ann@example.org  let ann see the car's presence
  headunit contacts car.toml refuse bob@example.org   turn bob's request down
  headunit contacts car.toml remove ann@example.org   take ann off the contacts (both ways)

Talks to the agent running on PROFILE through its control socket ([control] socket,
default <data_dir>/control.sock); run it as the agent's user. Exit status: 0 done,
1 the agent refused, 2 bad arguments or profile, 3 no agent running."""


def add_parser(commands: Commands, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``contacts`` to the ``headunit`` sub-command parsers."""
    contacts = commands.add_parser(
        "contacts", help="list contacts, answer subscription requests (asks the running agent)",
        description="List the car's contacts or pending subscription requests, or answer one.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, parents=parents)
    contacts.add_argument("profile", help="the profile TOML file the agent runs on")
    contacts.add_argument("action", nargs="?", choices=ACTIONS, metavar="ACTION",
                          help="approve, refuse (a pending request) or remove (a contact) JID")
    contacts.add_argument("jid", nargs="?", help="the contact's bare JID, e.g. ann@example.org")
    contacts.add_argument("--pending", action="store_true", help="list pending subscription requests")
    contacts.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    contacts.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``headunit contacts``; returns the exit status."""
    return ask_and_print("contacts", args, request, FOR_PEOPLE)


def request(args: argparse.Namespace) -> Request:
    """What to ask the agent; UsageError for a command line that cannot be right."""
    if args.action and not args.jid:
        raise UsageError(f"{args.action} needs a JID")
    if args.action and args.pending:
        raise UsageError(f"--pending lists requests; it does not go with {args.action}")
    if args.action:
        return f"contacts.{args.action}", {"jid": args.jid}
    return ("contacts.pending" if args.pending else "contacts.list"), {}


def _done(action: str) -> ForPeople:
    return lambda result, args: DONE[action].format(jid=args.jid)


def contacts_table(contacts: Any) -> str:
    """The agent's ``contacts.list`` result as a table for people."""
    if not contacts:
        return "no contacts"
    rows = [[c["jid"], c.get("name") or "", ", ".join(c.get("groups") or ()), _subscription(c),
             _presence(c)] for c in contacts]
    return table(["JID", "NAME", "GROUPS", "SUBSCRIPTION", "PRESENCE"], rows)


def pending_table(requests: Any) -> str:
    """The agent's ``contacts.pending`` result as a table for people."""
    if not requests:
        return "no pending subscription requests"
    rows = [[r["jid"], _since(r.get("since")), r.get("nick") or "", r.get("status") or ""]
            for r in requests]
    return table(["JID", "SINCE", "NICK", "MESSAGE"], rows)


def _subscription(contact: Any) -> str:
    text = {"both": "both ways", "from": "sees the car", "to": "car sees them", "none": "none"}
    out = text.get(contact.get("subscription"), str(contact.get("subscription")))
    return out + (" (car asked)" if contact.get("pending_out") else "")


def _presence(contact: Any) -> str:
    resources = contact.get("presence") or {}
    if not resources:  # without a subscription to them, the car cannot know
        return "offline" if contact.get("subscription") in ("to", "both") else "-"
    shown = []
    for resource, p in sorted(resources.items()):
        status = f' "{p["status"]}"' if p.get("status") else ""
        shown.append(f"{p.get('show') or 'available'}{status} ({resource})")
    return "; ".join(shown)


def _since(since: Any) -> str:
    """A request's ISO 8601 time as local "YYYY-MM-DD HH:MM" (as given if it is not one)."""
    try:
        return datetime.fromisoformat(str(since)).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(since or "")


FOR_PEOPLE: dict[str, ForPeople] = {
    "contacts.list": lambda result, _: contacts_table(result),
    "contacts.pending": lambda result, _: pending_table(result),
    **{f"contacts.{action}": _done(action) for action in ACTIONS},
}
