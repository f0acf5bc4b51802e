"""The ``headunit`` command: run the agent on a profile, check one, or ask the running agent.

One module per sub-command (:mod:`agent.cli.run` for ``run`` and ``check``, the others
named after theirs), each with ``add_parser(commands, parents)`` and its ``main(args)``;
what they share is :mod:`agent.cli.common`. ``-v``/``--verbose`` is accepted before the
sub-command and after it, and the two counts add up.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from agent import __version__
from agent.cli import audit, chat, contacts, dashboard, driver, offers, presence, run, state, status

# In the order of `headunit --help`; run registers ``run`` and ``check``.
SUBCOMMANDS = (run, contacts, audit, driver, dashboard, state, chat, presence, offers, status)
VERBOSE_HELP = "more logging (-v: debug for headunit, -vv: also the XMPP library)"

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
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    # Every sub-command takes -v too; its own dest, since a sub-parser's default would
    # otherwise overwrite the count given before the sub-command.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="count", default=0, dest="sub_verbose", help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(commands, [verbose])
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
    setup_logging(args.verbose + args.sub_verbose)
    command: Callable[[argparse.Namespace], int] = args.func
    return command(args)

