"""``headunit dashboard``: the address of the running agent's dashboard, with this start's token.

For the kiosk unit (``chromium --kiosk "$(headunit dashboard car.toml --wait 60)"``) and
for people. Reads ``<data_dir>/dashboard.url``, which the agent rewrites at each start,
and checks that the dashboard answers there.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urldefrag

from agent.cli.common import EXIT_NO_AGENT, EXIT_USAGE, Commands
from agent.errors import ProfileError

PROBE_TIMEOUT = 2.0  # s for /healthz to answer
RETRY = 0.5  # s between looks with --wait

EPILOG = """\
examples:
  headunit dashboard car.toml            print http://127.0.0.1:8470/#token=...
  headunit dashboard car.toml --wait 60  the same, once the agent's dashboard answers (kiosk units)

The token changes at each start of the agent; the address is read from
<data_dir>/dashboard.url (only the agent's user may read it). Exit status: 0 printed,
2 bad arguments or profile, 3 no agent (or no dashboard) running."""


class NoDashboard(Exception):
    """Nothing to print: no address published, or nothing answers at it."""


def add_parser(commands: Commands, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``dashboard`` to the ``headunit`` sub-command parsers."""
    dashboard = commands.add_parser(
        "dashboard", help="print the dashboard's address with its token (asks the running agent)",
        description="Print the address of the running agent's dashboard, with this start's token.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, parents=parents)
    dashboard.add_argument("profile", help="the profile TOML file the agent runs on")
    dashboard.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                           help="wait up to this long for the agent's dashboard to answer")
    dashboard.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``headunit dashboard``; returns the exit status."""
    if not 0 <= args.wait <= 3600:
        print("headunit dashboard: --wait takes 0 to 3600 seconds", file=sys.stderr)
        return EXIT_USAGE
    try:
        folder = _data_dir_of(args.profile)
    except ProfileError as exc:
        print(f"headunit: profile refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if folder is None:
        print(f"headunit: the dashboard is disabled in {args.profile} ([dashboard] enabled = false)",
              file=sys.stderr)
        return EXIT_USAGE
    deadline = time.monotonic() + args.wait
    while True:
        try:
            print(live_url(folder))
            return 0
        except NoDashboard as exc:
            if time.monotonic() >= deadline:
                print(f"headunit: {exc}", file=sys.stderr)
                return EXIT_NO_AGENT
        time.sleep(RETRY)


def live_url(folder: Path) -> str:
    """The published address, once its dashboard answers; NoDashboard otherwise."""
    # imported here: the agent package's server (agent/dashboard/web.py) stays out of every `headunit` start
    from agent.dashboard.token import DashboardNotRunning, read_url

    try:
        url = read_url(folder)
    except DashboardNotRunning as exc:
        raise NoDashboard(str(exc)) from exc
    address = urldefrag(url).url
    if not _answers(address + "healthz"):
        raise NoDashboard(f"nothing answers at {address}: the agent is not running "
                          "(the address is from its last start)")
    return url


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    try:
        with opener.open(url, timeout=PROBE_TIMEOUT) as response:
            return bool(response.status == 200 and response.read(16).strip() == b"ok")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _data_dir_of(profile_file: str) -> Path | None:
    """The agent's data folder (None: its dashboard is off); the password and CA are not needed."""
    from agent.profile import load_profile
    from agent.storage import data_dir

    profile = load_profile(profile_file, local_only=True)
    return data_dir(profile.storage) if profile.dashboard.enabled else None
