"""``headunit run`` and ``headunit check``: run the agent on a profile, or check a profile without starting.

The only ``headunit`` command that starts the agent: :class:`agent.app.Agent` is imported
when ``run`` starts it, so the other commands stay light.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.cli.common import EXIT_FAILED, EXIT_USAGE, Commands
from agent.errors import HeadunitError, ProfileError

if TYPE_CHECKING:
    from agent.profile.model import Profile

log = logging.getLogger("headunit")

# A signal repeated within this many seconds (a terminal and a supervisor both
# passing on one Ctrl-C) counts as one.
REPEAT_GRACE = 1.0


def add_parser(commands: Commands, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``run`` and ``check`` to the ``headunit`` sub-command parsers."""
    run_parser = commands.add_parser("run", help="run the agent on a profile",
                                     description="Run the agent until SIGINT or SIGTERM.", parents=parents)
    run_parser.add_argument("profile", help="the profile TOML file")
    run_parser.add_argument("--speed", type=float, default=None,
                            help="run the vehicle clock and replays this many times faster (simulation only)")
    run_parser.set_defaults(func=run)

    check_parser = commands.add_parser("check", help="validate a profile without starting anything",
                                       description="Load and validate a profile; exit 0 if it is usable.",
                                       parents=parents)
    check_parser.add_argument("profile", help="the profile TOML file")
    check_parser.set_defaults(func=check)


def _load(args: argparse.Namespace) -> Profile | None:
    """The profile of the command line, or None once the refusal is printed."""
    from agent.profile import load_profile

    try:
        return load_profile(args.profile)
    except ProfileError as exc:
        print(f"headunit: profile refused: {exc}", file=sys.stderr)
        return None


def check(args: argparse.Namespace) -> int:
    """Run ``headunit check``: load and validate the profile; returns the exit status."""
    profile = _load(args)
    if profile is None:
        return EXIT_USAGE
    print(f"{args.profile}: OK ({profile.name}, account {profile.account.jid})")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``headunit run``: the agent until SIGINT or SIGTERM; returns the exit status."""
    profile = _load(args)
    if profile is None:
        return EXIT_USAGE
    if args.speed is not None and args.speed <= 0:
        print("headunit: --speed must be positive", file=sys.stderr)
        return EXIT_USAGE
    try:
        from agent.service.probes import timing_event_loop

        with asyncio.Runner(loop_factory=timing_event_loop) as runner:  # the health check times its iterations
            return runner.run(_run(profile, args.speed))
    except HeadunitError as exc:
        print(f"headunit: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _run(profile: Profile, speed: float | None) -> int:
    from agent.app import Agent

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    first_signal: float | None = None

    def on_signal(signum: int) -> None:
        nonlocal first_signal
        name = signal.Signals(signum).name
        now = time.monotonic()
        if first_signal is None:
            first_signal = now
            log.info("%s received, stopping (again to exit at once)", name)
            stop.set()
        elif now - first_signal > REPEAT_GRACE:  # a repeat within the grace is the same Ctrl-C
            log.warning("second %s: exiting without a clean stop", name)
            os._exit(130)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    agent = Agent(profile, speed=speed)
    await agent.run(stop)
    return agent.exit_code
