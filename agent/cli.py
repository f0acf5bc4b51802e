"""The ``headunit`` command: run the agent on a profile, or check a profile without starting."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from agent import __version__, cli_audit, cli_control, cli_dashboard, cli_driver, cli_headless, cli_status
from agent.errors import HeadunitError, ProfileError

log = logging.getLogger("headunit")

# A signal repeated within this many seconds (a terminal and a supervisor both
# passing on one Ctrl-C) counts as one.
REPEAT_GRACE = 1.0

DESCRIPTION = """\
headunit: the telematics agent for in-car Linux boards.
Reads the vehicle (CAN, OBD-II, GNSS, GPIO) into one state and keeps an XMPP
session whose presence follows the drive."""

EPILOG = """\
examples:
  headunit check profiles/demo.toml        validate a profile, start nothing
  headunit run profiles/demo.toml          run the agent (Ctrl-C stops it cleanly)
  headunit run profiles/demo.toml --speed 10   replay the demo drive 10x faster

Profiles are TOML files; profiles/README.md lists every key.
Environment: HEADUNIT_JID, HEADUNIT_PASSWORD, HEADUNIT_HOST, HEADUNIT_PORT and
HEADUNIT_CA_FILE override the profile's account settings."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headunit", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"headunit {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-v: debug for headunit, -vv: also the XMPP library)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the agent on a profile",
                              description="Run the agent until SIGINT or SIGTERM.")
    run.add_argument("profile", help="the profile TOML file")
    run.add_argument("--speed", type=float, default=None,
                     help="run the vehicle clock and replays this many times faster (simulation only)")

    check = commands.add_parser("check", help="validate a profile without starting anything",
                                description="Load and validate a profile; exit 0 if it is usable.")
    check.add_argument("profile", help="the profile TOML file")
    cli_control.add_parsers(commands)
    cli_audit.add_parsers(commands)
    cli_driver.add_parsers(commands)
    cli_dashboard.add_parsers(commands)
    cli_headless.add_parsers(commands)
    cli_status.add_parsers(commands)
    return parser


def setup_logging(verbose: int) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("slixmpp").setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)
    logging.getLogger("can").setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.command in cli_control.COMMANDS:
        return cli_control.main(args)
    if args.command in cli_audit.COMMANDS:
        return cli_audit.main(args)
    if args.command in cli_driver.COMMANDS:
        return cli_driver.main(args)
    if args.command in cli_dashboard.COMMANDS:
        return cli_dashboard.main(args)
    if args.command in cli_headless.COMMANDS:
        return cli_headless.main(args)
    if args.command in cli_status.COMMANDS:
        return cli_status.main(args)
    from agent.profile import load_profile

    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        print(f"headunit: profile refused: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(f"{args.profile}: OK ({profile.name}, account {profile.account.jid})")
        return 0
    if args.speed is not None and args.speed <= 0:
        print("headunit: --speed must be positive", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(profile, args.speed))
    except HeadunitError as exc:
        print(f"headunit: {exc}", file=sys.stderr)
        return 1


async def _run(profile: object, speed: float | None) -> int:
    from agent.app import Agent
    from agent.profile.model import Profile

    assert isinstance(profile, Profile)
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


if __name__ == "__main__":
    sys.exit(main())
