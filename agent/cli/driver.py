"""``headunit driver``: the driver's side of operators' messages and questions, until the dashboard exists.

Asks the running agent on its control socket (``driver.*`` handlers of
:mod:`agent.control.handlers`), like ``headunit contacts`` does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from agent.cli.common import (Commands, ForPeople, Request, UsageError, ask_and_print, cut, local_time, seconds_left,
                               table)

ACTIONS = ("ack", "accept", "decline")

EPILOG = """\
examples:
  headunit driver car.toml               questions and messages waiting for the driver
  headunit driver car.toml --recent      the latest messages, answered or not
  headunit driver car.toml ack 12        acknowledge message 12 (its sender is told)
  headunit driver car.toml accept 3fa9c2 accept question 3fa9c2 (the command goes ahead)
  headunit driver car.toml decline 3fa9c2

A question waits only a short time (the profile's driver_timeout, 30 s by default);
no answer counts as a refusal. Talks to the agent running on PROFILE through its
control socket; run it as the agent's user. Exit status: 0 done, 1 the agent
refused, 2 bad arguments or profile, 3 no agent running."""


def add_parser(commands: Commands, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``driver`` to the ``headunit`` sub-command parsers."""
    driver = commands.add_parser(
        "driver", help="answer operators' messages and questions for the driver (asks the running agent)",
        description="List what waits for the driver, or acknowledge a message, accept or decline a question.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, parents=parents)
    driver.add_argument("profile", help="the profile TOML file the agent runs on")
    driver.add_argument("action", nargs="?", choices=ACTIONS, metavar="ACTION",
                        help="ack (a message), accept or decline (a question) ID")
    driver.add_argument("id", nargs="?", metavar="ID", help="the message number or question id, as listed")
    driver.add_argument("--recent", action="store_true", help="list the latest messages, answered or not")
    driver.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    driver.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``headunit driver``; returns the exit status."""
    return ask_and_print("driver", args, request, FOR_PEOPLE)


def request(args: argparse.Namespace) -> Request:
    """What to ask the agent; UsageError for a command line that cannot be right."""
    if args.action and not args.id:
        raise UsageError(f"{args.action} needs an ID (from `headunit driver PROFILE`)")
    if args.action and args.recent:
        raise UsageError(f"--recent lists messages; it does not go with {args.action}")
    if args.action == "ack":
        return "driver.ack", {"id": args.id}
    if args.action in ("accept", "decline"):
        return "driver.answer", {"id": args.id, "accept": args.action == "accept"}
    return ("driver.notices", {"limit": 20}) if args.recent else ("driver.pending", {})


def acknowledged_text(result: Any, _: argparse.Namespace) -> str:
    if not result.get("ack_required", True):
        return f"dismissed message {result['id']} from {result['sender']} (it asked for no acknowledgement)"
    return f"acknowledged message {result['id']} from {result['sender']}: they are told"


def answered_text(result: Any, _: argparse.Namespace) -> str:
    verb = "accepted" if result.get("accepted") else "declined"
    return f"{verb} question {result['id']} from {result['requester']}: {result['question']}"


def pending_tables(pending: Any) -> str:
    """The agent's ``driver.pending`` result for people: open questions, then messages to acknowledge."""
    questions, notices = pending.get("questions") or [], pending.get("notices") or []
    if not questions and not notices:
        return "nothing waits for the driver"
    parts = []
    if questions:
        rows = [[q["id"], seconds_left(q.get("expires")), q["requester"], cut(q["question"])]
                for q in questions]
        parts.append("Questions (accept ID or decline ID):\n" + table(["ID", "LEFT", "FROM", "QUESTION"], rows))
    if notices:
        rows = [[str(n["id"]), local_time(n.get("created")), n["sender"], cut(n["text"])] for n in notices]
        parts.append("Messages to acknowledge (ack ID):\n" + table(["ID", "SINCE", "FROM", "MESSAGE"], rows))
    return "\n\n".join(parts)


def notices_table(notices: Any) -> str:
    """The agent's ``driver.notices`` result for people."""
    if not notices:
        return "no messages for the driver"
    rows = [[str(n["id"]), local_time(n.get("created")), n["sender"], _ack_state(n), cut(n["text"])]
            for n in notices]
    return table(["ID", "SENT", "FROM", "ACKNOWLEDGED", "MESSAGE"], rows)


def _ack_state(notice: Any) -> str:
    if not notice.get("ack_required"):
        return "-"
    at = notice.get("acknowledged_at")
    return local_time(at) if at is not None else "waiting"


FOR_PEOPLE: dict[str, ForPeople] = {
    "driver.ack": acknowledged_text, "driver.answer": answered_text,
    "driver.notices": lambda result, _: notices_table(result),
    "driver.pending": lambda result, _: pending_tables(result),
}
