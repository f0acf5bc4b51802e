"""``headunit chat``: the car's conversations, one of them, or a message sent as the car.

Asks the running agent on its control socket, like ``headunit state`` does. The JID and
the message are checked here with the agent's own rules first (:mod:`agent.cabin.fields`),
so a typo is a usage error (exit 2) before anything is asked; the agent checks them again
(another client may not have).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from agent.cabin import fields
from agent.cabin.api import MESSAGES, THREADS
from agent.cli.common import (FOOTER, Commands, ForPeople, Request, UsageError, ask_and_print, checked, cut,
                              json_flag, local_time, table)

EPILOG = """\
examples:
  headunit chat car.toml                                  conversations, the latest message of each
  headunit chat car.toml show ann@example.org -n 50       the latest 50 messages with ann
  headunit chat car.toml send ann@example.org On my way   send a message (queued while offline)
  headunit chat car.toml send ann@example.org -- -5 °C here, roads icy

While the vehicle moves, only the profile's quick replies ([dashboard] quick_replies,
e.g. "Driving, will answer later", "On my way", "Call me") are sent; anything else is
refused, as on the dashboard.
""" + FOOTER


def add_parser(commands: Commands, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``chat`` to the ``headunit`` sub-command parsers."""
    chat = commands.add_parser(
        "chat", help="chat threads; show one, send a message (asks the running agent)",
        description="List conversations, show one, or send a message as the car.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter, parents=parents)
    chat.add_argument("profile", help="the profile TOML file the agent runs on")
    chat.add_argument("action", nargs="?", choices=("show", "send"), metavar="ACTION",
                      help="show JID, or send JID TEXT...")
    chat.add_argument("jid", nargs="?", metavar="JID", help="the other side's bare JID, e.g. ann@example.org")
    chat.add_argument("text", nargs="*", metavar="TEXT", help="the message (words are joined with spaces)")
    chat.add_argument("-n", "--limit", type=int, default=THREADS[0], metavar="N",
                      help="how many conversations (or messages, with show) to list (default 20)")
    json_flag(chat)
    chat.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``headunit chat``; returns the exit status."""
    return ask_and_print("chat", args, request, FOR_PEOPLE)


def request(args: argparse.Namespace) -> Request:
    if not args.action:
        if args.jid:
            raise UsageError("a JID goes with show or send")
        return "chat.threads", {"limit": _limit(args.limit, THREADS[1])}
    if not args.jid:
        raise UsageError(f"{args.action} needs a JID (e.g. ann@example.org)")
    checked(fields.person, "JID", args.jid)
    if args.action == "show":
        if args.text:
            raise UsageError("show takes a JID only (send JID TEXT sends a message)")
        return "chat.show", {"peer": args.jid, "limit": _limit(args.limit, MESSAGES[1])}
    body = " ".join(args.text)
    if not body.strip():
        raise UsageError("send needs the message: send JID TEXT...")
    checked(fields.chat_body, "TEXT", body)
    return "chat.send", {"to": args.jid, "body": body}


def _limit(value: int, most: int) -> int:
    if not 1 <= value <= most:
        raise UsageError(f"-n: expected a number from 1 to {most}, found {value}")
    return value


# -- for people ---------------------------------------------------------------------------------


def threads_text(messages: Any, _: argparse.Namespace | None = None) -> str:
    """The agent's ``chat.threads`` result: one row per conversation."""
    if not messages:
        return "no conversations yet"
    rows = [[m["peer"], local_time(m.get("at")), f'{_arrow(m)} {cut(m.get("body", ""))}', _state(m)]
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
        lines.append(f"{local_time(m.get('at'), seconds=True)}  {_arrow(m)}  {body}{state}")
    return "\n".join(lines)


def sent_text(message: Any, _: argparse.Namespace | None = None) -> str:
    done = {"queued": "queued: it goes out when the car is online", "sent": "sent",
            "acked": "on the server", "delivered": "delivered", "failed": "failed"}
    return f"message {message['id']} to {message['peer']}: {done.get(message.get('state'), message.get('state'))}"


def _arrow(message: Any) -> str:
    return "→" if message.get("direction") == "out" else "←"


def _state(message: Any) -> str:
    return str(message.get("state") or "") if message.get("direction") == "out" else ""


FOR_PEOPLE: dict[str, ForPeople] = {"chat.threads": threads_text, "chat.show": thread_text, "chat.send": sent_text}
