"""Local XMPP server for ``make run``: a throw-away PKI, Prosody on loopback, demo accounts.

    python -m devserver setup            # idempotent: PKI, config, accounts
    python -m devserver run              # Prosody in the foreground until Ctrl-C
    python -m devserver run -- CMD ...   # Prosody while CMD runs, then stop it
    python -m devserver stop             # stop a Prosody left behind by a crash
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from devserver.pki import PkiError, make_pki
from devserver.prosody import (
    USERNAME_PATTERN,
    Prosody,
    ProsodyError,
    is_prosody_for,
    read_pidfile,
)

DEFAULT_ACCOUNTS = ("car", "operator")
ENV_PREFIX = "HEADUNIT_DEMO_"

DESCRIPTION = """\
A private Prosody on 127.0.0.1 with a throw-away CA and demo accounts, for `make run`.
It never touches the system Prosody service or /etc/prosody; all state is under FOLDER.

  setup           create or reuse FOLDER/pki (CA), FOLDER/prosody (config, data, log)
                  and the demo accounts; print how to connect; start nothing
  run             setup, then keep Prosody in the foreground until Ctrl-C
  run -- CMD ...  setup, start Prosody, run CMD, stop Prosody when CMD exits
                  (Ctrl-C goes to CMD; our exit status is CMD's)
  stop            stop a Prosody that a killed `run` left behind
"""

EPILOG = f"""\
CMD gets the server in its environment: {ENV_PREFIX}XMPP_HOST, {ENV_PREFIX}XMPP_PORT,
{ENV_PREFIX}XMPP_DOMAIN, {ENV_PREFIX}XMPP_CA_FILE, and per account {ENV_PREFIX}<NAME>_JID and
{ENV_PREFIX}<NAME>_PASSWORD_FILE. The same is written to FOLDER/demo/server.json.
The --agent-account (default car) is also given as the agent's own overrides
HEADUNIT_JID, HEADUNIT_PASSWORD, HEADUNIT_HOST, HEADUNIT_PORT and HEADUNIT_CA_FILE.
Options go after the command name, e.g.
  python -m devserver run --folder run --account car --account operator -- CMD
"""


@dataclass(frozen=True)
class Account:
    """A demo account: its JID and the file holding its password."""

    name: str
    jid: str
    password_file: Path


def parse_account(text: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME=PASSWORD`` from ``--account``; an empty password means generate."""
    name, _, password = text.partition("=")
    if not USERNAME_PATTERN.match(name):
        raise argparse.ArgumentTypeError(f"bad account name {name!r}: use a-z 0-9 . _ -")
    if password in ("", "<generated>"):
        return name, None
    return name, password


def password_for(folder: Path, name: str, explicit: str | None) -> tuple[Path, str]:
    """Read, write or generate ``folder/<name>.password`` (mode 0600); return path and password."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.password"
    if explicit is None and path.is_file():
        existing = path.read_text().strip()
        if existing:
            path.chmod(0o600)
            return path, existing
    password = explicit or secrets.token_urlsafe(18)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(password + "\n")
    tmp.replace(path)
    return path, password


def setup(args: argparse.Namespace) -> tuple[Prosody, list[Account]]:
    """Create or reuse the PKI, Prosody config and demo accounts under ``args.folder``."""
    folder = Path(args.folder).resolve()
    pki = make_pki(folder / "pki", (args.domain,))
    server = Prosody(
        folder / "prosody",
        args.domain,
        c2s_port=args.port,
        http_port=args.http_port,
        direct_tls_port=args.direct_tls_port or args.port + 1,
        https_port=args.port + 3,  # XEP-0363 uploads (photos, log bundles) over HTTPS
        upload=True,
        pki=pki,
    )
    server.write_config()
    accounts = []
    for name, explicit in args.account or [(name, None) for name in DEFAULT_ACCOUNTS]:
        path, password = password_for(folder / "demo", name, explicit)
        # Registering again only resets the password to the one on file.
        accounts.append(Account(name, server.register(name, password), path))
    write_server_json(folder / "demo" / "server.json", server, accounts)
    return server, accounts


def write_server_json(path: Path, server: Prosody, accounts: Sequence[Account]) -> None:
    """Everything a program needs to log in, for tools that prefer a file to env variables."""
    info = server.server_info()
    document = {
        "host": info.host,
        "port": info.port,
        "direct_tls_port": info.direct_tls_port,
        "http_port": info.http_port,
        "domain": info.domain,
        "ca_file": str(info.ca_file),
        "accounts": {
            a.name: {"jid": a.jid, "password_file": str(a.password_file)} for a in accounts
        },
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def child_environment(
    server: Prosody, accounts: Sequence[Account], agent_account: str | None
) -> dict[str, str]:
    """Our environment plus HEADUNIT_DEMO_* for every account, HEADUNIT_* for the agent's."""
    info = server.server_info()
    env = dict(os.environ)
    env[f"{ENV_PREFIX}XMPP_HOST"] = info.host
    env[f"{ENV_PREFIX}XMPP_PORT"] = str(info.port)
    env[f"{ENV_PREFIX}XMPP_DOMAIN"] = info.domain
    env[f"{ENV_PREFIX}XMPP_CA_FILE"] = str(info.ca_file)
    for account in accounts:
        key = account.name.upper().replace("-", "_").replace(".", "_")
        env[f"{ENV_PREFIX}{key}_JID"] = account.jid
        env[f"{ENV_PREFIX}{key}_PASSWORD_FILE"] = str(account.password_file)
        if account.name == agent_account:
            # The agent's own overrides (agent/profile/loader.py), beating the profile.
            env["HEADUNIT_JID"] = account.jid
            env["HEADUNIT_PASSWORD"] = account.password_file.read_text().strip()
            env["HEADUNIT_HOST"] = info.host
            env["HEADUNIT_PORT"] = str(info.port)
            env["HEADUNIT_CA_FILE"] = str(info.ca_file)
    return env


def describe(server: Prosody, accounts: Sequence[Account], running: bool) -> str:
    """Human-readable summary: ports, domain, CA and how to log in as the operator."""
    info = server.server_info()
    state = f"running (pid {server.pid})" if running else "configured (not running)"
    lines = [
        f"Prosody for {info.domain}: {state}",
        f"  c2s STARTTLS  : {info.host}:{info.port}",
        f"  c2s direct TLS: {info.host}:{info.direct_tls_port}",
        f"  http          : {info.host}:{info.http_port} (bound once an HTTP module is enabled)",
        f"  CA to trust   : {info.ca_file}",
        f"  config, log   : {server.config_path}, {server.log_path}",
        "  accounts:",
    ]
    lines += [f"    {a.jid:<28} password in {a.password_file}" for a in accounts]
    lines += _login_hint(info.host, info.port, info.ca_file, accounts)
    return "\n".join(lines)


def _login_hint(host: str, port: int, ca_file: Path, accounts: Sequence[Account]) -> list[str]:
    """How to log in from any XMPP client, preferably as the operator."""
    who = next((a for a in accounts if a.name == "operator"), accounts[0] if accounts else None)
    if who is None:
        return []
    return [
        f"Log in as {who.name} from any XMPP client (Gajim, Dino, Conversations, profanity):",
        f"  JID {who.jid}, password: cat {who.password_file}",
        f"  server {host}, port {port}, STARTTLS (no direct TLS on this port)",
        f"  the client must trust {ca_file} (import it) or accept the certificate when asked;",
        "  the certificate is issued for the domain name, not for your machine's hostname.",
        "The dashboard (the car's touchscreen page), once the agent runs, in a second terminal:",
        "  .venv/bin/headunit dashboard profiles/demo.toml   (prints its address with this start's key)",
    ]


def run(args: argparse.Namespace) -> int:
    """Set up, start Prosody, run the command (or wait for a signal), stop Prosody."""
    server, accounts = setup(args)
    server.start()
    try:
        print(describe(server, accounts, running=True), flush=True)
        provision_telemetry(server, accounts, args.agent_account)
        command = list(args.command)
        if command and command[0] == "--":
            command = command[1:]
        if command:
            env = child_environment(server, accounts, args.agent_account)
            return run_restarting(command, env, restart_on=frozenset(args.restart_on), delay=args.restart_delay)
        wait_for_signal(server)
        return 0
    finally:
        server.stop()
        print("Prosody stopped", flush=True)


def provision_telemetry(server: Prosody, accounts: Sequence[Account], car: str | None) -> None:
    """As the fleet (a server admin), create the car's telemetry node with the car as publisher,
    and the operators as members; in Prosody 0.12 only admins create PubSub nodes."""
    import asyncio

    from agent.profile.model import TelemetryConfig
    from agent.telemetry.publisher import node_name
    from devserver.fleet import FleetReceiver

    by_name = {a.name: a for a in accounts}
    fleet, car_account = by_name.get("fleet"), by_name.get(car or "")
    if fleet is None or car_account is None:
        return
    members = [a.jid for a in accounts if a.name not in ("fleet", car_account.name)]
    node = node_name(TelemetryConfig().node, car_account.jid)  # the profiles' default node name

    async def provision() -> None:
        receiver = FleetReceiver(fleet.jid, fleet.password_file.read_text().strip(), server.server_info(),
                                 server.pubsub_host, node)
        await receiver.connect()
        try:
            await receiver.provision(car_account.jid, members)
        finally:
            await receiver.stop()

    asyncio.run(provision())
    print(f"  telemetry node : {node} on {server.pubsub_host} (owner {fleet.jid}, publisher "
          f"{car_account.jid})", flush=True)


RESTART_LIMIT = (20, 600.0)  # at most 20 restarts in 10 minutes, as systemd/headunit.service allows


def run_restarting(command: Sequence[str], env: dict[str, str], *, restart_on: frozenset[int] = frozenset(),
                   delay: float = 1.0) -> int:
    """Run ``command``; when it exits with one of ``restart_on`` (the agent's 75: "restart me"), start
    it again after ``delay`` seconds, as systemd's RestartForceExitStatus= does on the car."""
    restarts: deque[float] = deque()
    while True:
        code = run_child(command, env)
        if code not in restart_on:
            return code
        now = time.monotonic()
        while restarts and now - restarts[0] > RESTART_LIMIT[1]:
            restarts.popleft()
        if len(restarts) >= RESTART_LIMIT[0]:
            print(f"devserver: {command[0]} asked to be restarted {len(restarts)} times in "
                  f"{RESTART_LIMIT[1] / 60:.0f} min: not again", file=sys.stderr, flush=True)
            return code
        restarts.append(now)
        print(f"devserver: {Path(command[0]).name} exited with {code} (a restart was asked for): "
              f"starting it again in {delay:g} s", flush=True)
        time.sleep(delay)


def run_child(command: Sequence[str], env: dict[str, str]) -> int:
    """Run ``command``, passing SIGTERM/SIGHUP on and SIGINT unless the terminal sent it."""
    try:
        child = subprocess.Popen(command, env=env)
    except OSError as exc:
        print(f"devserver: cannot run {command[0]!r}: {exc}", file=sys.stderr)
        return 127

    def forward(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _terminal_sends_sigint():
            return  # the child is in our foreground process group and got it too
        child.send_signal(signum)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, forward) for sig in signals}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def _terminal_sends_sigint() -> bool:
    """True when we are in the terminal's foreground group, so Ctrl-C reached the child too."""
    try:
        return sys.stdin.isatty() and os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def wait_for_signal(server: Prosody) -> None:
    """Block until SIGINT/SIGTERM, or until Prosody dies on its own."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, request_stop)
    print("Press Ctrl-C to stop.", flush=True)
    while not stop.wait(1.0):
        if not server.is_running:
            raise ProsodyError(f"prosody exited unexpectedly; see {server.log_path}")


def stop_leftover(args: argparse.Namespace) -> int:
    """Stop a Prosody that a crashed ``run`` left behind in ``args.folder``."""
    folder = Path(args.folder).resolve() / "prosody"
    config = folder / "prosody.cfg.lua"
    pid = read_pidfile(folder / "prosody.pid")
    if pid is None or not is_prosody_for(pid, config):
        print(f"no Prosody running from {folder}")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while is_prosody_for(pid, config) and time.monotonic() < deadline:
        time.sleep(0.1)
    if is_prosody_for(pid, config):
        os.kill(pid, signal.SIGKILL)
    print(f"stopped Prosody pid {pid}")
    return 0


def do_setup(args: argparse.Namespace) -> int:
    """The ``setup`` command: prepare everything, print the summary, start nothing."""
    server, accounts = setup(args)
    print(describe(server, accounts, running=False))
    return 0


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks run."""
    raise SystemExit(128 + signum)


def build_parser() -> argparse.ArgumentParser:
    """The command line, with every option documented in ``--help``."""
    common = argparse.ArgumentParser(add_help=False)
    option = common.add_argument
    option("--folder", default="run", help="state: pki/, prosody/, demo/ (default: %(default)s)")
    option("--domain", default="localhost", help="XMPP domain (default: %(default)s)")
    option("--port", type=int, default=15222, help="c2s STARTTLS port (default: %(default)s)")
    option("--direct-tls-port", type=int, help="c2s direct TLS port (default: --port + 1)")
    option("--http-port", type=int, default=15280, help="HTTP port (default: %(default)s)")
    option(
        "--account", action="append", type=parse_account, metavar="NAME[=PASSWORD]",
        help="demo account, repeatable (default: car and operator); without PASSWORD one is "
        "generated once and kept in FOLDER/demo/NAME.password (mode 0600)",
    )  # fmt: skip
    parser = argparse.ArgumentParser(
        prog="python -m devserver", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    commands = parser.add_subparsers(dest="action", required=True, metavar="COMMAND")
    commands.add_parser("setup", parents=[common], help="create or reuse PKI, config, accounts")
    run_parser = commands.add_parser(
        "run", parents=[common], help="start Prosody, run CMD or wait for Ctrl-C, stop Prosody"
    )
    run_parser.add_argument(
        "--agent-account", default="car", metavar="NAME",
        help="account whose JID, password, host, port and CA go to CMD as HEADUNIT_JID, "
        "HEADUNIT_PASSWORD, HEADUNIT_HOST, HEADUNIT_PORT, HEADUNIT_CA_FILE (default: %(default)s)",
    )  # fmt: skip
    run_parser.add_argument(
        "--restart-on", type=int, action="append", default=[], metavar="CODE",
        help="when CMD exits with CODE, start it again, as systemd does on the car (repeatable; "
        "make run passes 75, the agent's exit status for restart-agent)",
    )  # fmt: skip
    run_parser.add_argument(
        "--restart-delay", type=float, default=1.0, metavar="SECONDS",
        help="wait this long before starting CMD again (default: %(default)s)",
    )  # fmt: skip
    run_parser.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="run while Prosody is up"
    )
    commands.add_parser("stop", parents=[common], help="stop a Prosody a crashed run left behind")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (the child's status for ``run -- CMD``)."""
    args = build_parser().parse_args(argv)
    # SIGTERM (make, systemd, kill) unwinds like Ctrl-C so Prosody is always stopped.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    actions = {"setup": do_setup, "run": run, "stop": stop_leftover}
    try:
        return actions[args.action](args)
    except (ProsodyError, PkiError, ValueError) as exc:
        print(f"devserver: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
