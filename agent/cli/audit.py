"""``headunit audit``: the command audit trail of a profile's car, read straight from its database."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime

from agent.cli.common import EXIT_USAGE, Commands
from agent.commands.audit import FILE, AuditEntry, read_file_tail
from agent.errors import ProfileError


def add_parser(commands: Commands, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``audit`` to the ``headunit`` sub-command parsers."""
    audit = commands.add_parser("audit", help="print the remote commands' audit trail",
                                description="Print the latest remote command attempts (works while the agent runs).",
                                parents=parents)
    audit.add_argument("profile", help="the profile TOML file the agent runs on")
    audit.add_argument("-n", type=int, default=50, help="how many entries (default 50)")
    audit.add_argument("--json", action="store_true", help="one JSON object per line, for scripts")
    audit.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``headunit audit``; returns the exit status."""
    from agent.profile import load_profile
    from agent.storage import data_dir

    try:
        profile = load_profile(args.profile, local_only=True)  # no password or CA needed to read the trail
    except ProfileError as exc:
        print(f"headunit: profile refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    path = data_dir(profile.storage) / FILE
    if not path.exists():
        print(f"no audit trail yet ({path})")
        return 0
    for entry in read_file_tail(path, max(0, args.n)):
        print(json.dumps(entry.as_json(), ensure_ascii=False) if args.json else line(entry))
    return 0


def line(entry: AuditEntry) -> str:
    """One entry for people: time, requester, command, result, detail, arguments."""
    when = datetime.fromtimestamp(entry.time).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    args = " ".join(f"{k}={v}" for k, v in entry.arguments.items())
    detail = f" ({entry.detail})" if entry.detail else ""
    return f"{when}  {entry.requester}  {entry.command or '(list)'}  {entry.result}{detail}" + (
        f"  [{args}]" if args else "")
