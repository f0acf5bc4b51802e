"""What the ``headunit`` sub-commands share: asking the running agent, printing its answer, exit codes, text helpers.

Every command that talks to the running agent goes through :func:`ask_agent`; those that
check arguments first do so with the agent's own rules (:mod:`agent.cabin.fields`) through
:func:`checked`, so a typo is a usage error (exit 2) before anything is asked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

from agent.cabin import fields
from agent.control import AgentNotRunning, ControlClient, ControlError, socket_path
from agent.errors import ProfileError

EXIT_FAILED = 1  # the agent refused or failed the request
EXIT_USAGE = 2  # bad arguments or a refused profile
EXIT_NO_AGENT = 3  # no agent runs for this profile
TEXT_WIDTH = 60  # characters of a message or question shown in a table row

# The ``headunit`` sub-command parsers, as each module's add_parser gets them.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Request = tuple[str, dict[str, object]]  # control command and its arguments
ForPeople = Callable[[Any, argparse.Namespace], str]  # an answer as text, given the command line
T = TypeVar("T")

FOOTER = """
Talks to the agent running on PROFILE through its control socket; run it as the
agent's user. Exit status: 0 done, 1 the agent refused, 2 bad arguments or profile,
3 no agent running."""


class UsageError(ValueError):
    """The command line asks for something malformed; nothing is sent to the agent."""


# -- asking the agent -------------------------------------------------------------------------


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


def ask_and_print(command: str, args: argparse.Namespace, request: Callable[[argparse.Namespace], Request],
                  for_people: Mapping[str, ForPeople]) -> int:
    """Run ``headunit COMMAND``: ``request(args)`` (a UsageError is exit 2), ask the agent, print
    its answer with ``for_people[control command]`` (or JSON with ``--json``); the exit status."""
    try:
        cmd, arguments = request(args)
    except UsageError as exc:
        print(f"headunit {command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    code, result = ask_agent(args.profile, lambda client: client.call(cmd, **arguments))
    if code == 0:
        print_answer(result, args.json, lambda: for_people[cmd](result, args))
    return code


def checked(check: Callable[[str, object], T], name: str, value: object) -> T:
    """The agent's own check of one argument (a :mod:`agent.cabin.fields` function), run here
    first: its refusal is a UsageError "NAME: problem"."""
    try:
        return check(name, value)
    except fields.InputError as exc:
        raise UsageError(str(exc)) from None


# -- parsers --------------------------------------------------------------------------------


def json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")


# -- for people ---------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [headers, *rows]]
    return "\n".join(lines)


def cut(text: str) -> str:
    """``text`` on one line, at most TEXT_WIDTH characters (… when cut)."""
    one_line = " ".join(str(text).split())
    return one_line if len(one_line) <= TEXT_WIDTH else one_line[:TEXT_WIDTH - 1] + "…"


def local_time(epoch: Any, *, seconds: bool = False) -> str:
    """A UNIX time as local "YYYY-MM-DD HH:MM" (":SS" with ``seconds``); "?" if it is not one."""
    try:
        return datetime.fromtimestamp(float(epoch)).astimezone().strftime(
            "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def age(epoch: Any) -> str:
    """How long ago a UNIX time was: "12 s", "5 min", "3 h"; "?" if it is not one."""
    try:
        seconds = max(0.0, time.time() - float(epoch))
    except (TypeError, ValueError):
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.0f} h"


def seconds_left(expires: Any) -> str:
    """The seconds until a UNIX time: "12 s" (never negative); "?" if it is not one."""
    try:
        return f"{max(0.0, float(expires) - time.time()):.0f} s"
    except (TypeError, ValueError):
        return "?"
