"""``headunit contacts``: the driver's side of subscriptions, asked of the running agent on its control socket."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.control import AgentNotRunning, ControlClient, ControlError, socket_path
from agent.errors import ProfileError

COMMANDS = ("contacts",)
EXIT_FAILED = 1  # the agent refused or failed the request
EXIT_USAGE = 2  # bad arguments or a refused profile
EXIT_NO_AGENT = 3  # no agent runs for this profile


def ask_agent(profile_file: str, call: Callable[[ControlClient], Awaitable[object]]) -> tuple[int, object]:
    """Ask the profile's running agent over its control socket: (0, the answer), or an exit
    status after printing why not (a refused profile, no agent running, the agent refused).

    Every ``headunit`` command that talks to the running agent goes through here; the
    profile is loaded only to find the socket (the account's password and CA are not needed).
    """
    from agent.profile import load_profile

    try:
        path = socket_path(load_profile(profile_file, local_only=True))
    except ProfileError as exc:
        print(f"headunit: profile refused: {exc}", file=sys.stderr)
        return EXIT_USAGE, None
    return asyncio.run(_ask(path, call))


async def _ask(path: Path, call: Callable[[ControlClient], Awaitable[object]]) -> tuple[int, object]:
    try:
        async with ControlClient(path) as client:
            return 0, await call(client)
    except AgentNotRunning as exc:
        print(f"headunit: {exc}", file=sys.stderr)
        return EXIT_NO_AGENT, None
    except ControlError as exc:
        print(f"headunit: {exc}", file=sys.stderr)
        return EXIT_FAILED, None


def print_answer(result: object, as_json: bool, for_people: Callable[[], str]) -> None:
    """The agent's answer: JSON for scripts, else ``for_people()``."""
    print(json.dumps(result, indent=2, ensure_ascii=False) if as_json else for_people())

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


def add_parsers(commands: Any) -> None:
    """Add ``contacts`` to the ``headunit`` sub-command parsers."""
    contacts = commands.add_parser(
        "contacts", help="list contacts, answer subscription requests (asks the running agent)",
        description="List the car's contacts or pending subscription requests, or answer one.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    contacts.add_argument("profile", help="the profile TOML file the agent runs on")
    contacts.add_argument("action", nargs="?", choices=ACTIONS, metavar="ACTION",
                          help="approve, refuse (a pending request) or remove (a contact) JID")
    contacts.add_argument("jid", nargs="?", help="the contact's bare JID, e.g. ann@example.org")
    contacts.add_argument("--pending", action="store_true", help="list pending subscription requests")
    contacts.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")


def main(args: argparse.Namespace) -> int:
    """Run a control sub-command; returns the exit status."""
    problem = _usage_problem(args)
    if problem:
        print(f"headunit contacts: {problem}", file=sys.stderr)
        return EXIT_USAGE
    code, result = ask_agent(args.profile, lambda client: _call(client, args))
    if code == 0:
        print_answer(result, args.json, lambda: _for_people(args, result))
    return code


def _usage_problem(args: argparse.Namespace) -> str | None:
    if args.action and not args.jid:
        return f"{args.action} needs a JID"
    if args.action and args.pending:
        return f"--pending lists requests; it does not go with {args.action}"
    return None


async def _call(client: ControlClient, args: argparse.Namespace) -> object:
    if args.action:
        return await client.call(f"contacts.{args.action}", jid=args.jid)
    return await client.call("contacts.pending" if args.pending else "contacts.list")


def _for_people(args: argparse.Namespace, result: Any) -> str:
    if args.action:
        return DONE[args.action].format(jid=args.jid)
    return pending_table(result) if args.pending else contacts_table(result)


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
    rows = [[r["jid"], _local_time(r.get("since")), r.get("nick") or "", r.get("status") or ""]
            for r in requests]
    return table(["JID", "SINCE", "NICK", "MESSAGE"], rows)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [headers, *rows]]
    return "\n".join(lines)


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


def _local_time(since: Any) -> str:
    try:
        return datetime.fromisoformat(str(since)).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(since or "")
