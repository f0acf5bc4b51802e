"""``headunit status``: the running agent's health, asked on its control socket.

Connection (online, resumed, resumable, last connect error), what waits to go out
(telemetry samples, chat messages), each driver's health, the event loop's lag, the
watchdog and the last warnings and errors. Exit 0 healthy, 1 running but unhealthy
(each reason is printed), 2 bad arguments or profile, 3 no agent running: usable as
a monitoring check.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agent.cli.common import EXIT_FAILED, Commands, ask_agent, print_answer

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
LABEL = 12  # width of the label column

EPILOG = """\
examples:
  headunit status /etc/headunit/profile.toml          health, connection, drivers, last errors
  headunit status /etc/headunit/profile.toml --json   the same for scripts and monitoring

Talks to the agent running on PROFILE through its control socket; run it as the
agent's user (sudo -u headunit headunit status ...). Exit status: 0 healthy,
1 running but unhealthy (the reasons are printed), 2 bad arguments or profile,
3 no agent running."""


def add_parser(commands: Commands, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``status`` to the ``headunit`` sub-command parsers."""
    status = commands.add_parser(
        "status", help="the running agent's health: connection, queues, drivers, errors, watchdog",
        description="Show the running agent's health; exit 0 healthy, 1 unhealthy, 3 not running.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, parents=parents)
    status.add_argument("profile", help="the profile TOML file the agent runs on")
    status.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")
    status.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``headunit status``; returns the exit status."""
    code, status = ask_agent(args.profile, lambda client: client.call("status"))
    if code != 0:
        return code
    if not isinstance(status, dict):
        print(f"headunit: unexpected answer to status: {status!r}", file=sys.stderr)
        return EXIT_FAILED
    print_answer(status, args.json, lambda: status_text(status))
    return EXIT_HEALTHY if status.get("healthy") else EXIT_UNHEALTHY


# -- for people ---------------------------------------------------------------------------


def status_text(status: dict[str, Any]) -> str:
    """The agent's ``status`` result as labelled lines, then the last errors."""
    rows = [("health", _health(status)), ("connection", _connection(status.get("connection") or {})),
            ("telemetry", _telemetry(status.get("telemetry"))),
            ("chat outbox", f"{(status.get('chat') or {}).get('outbox', '?')} messages")]
    drivers = status.get("drivers") or {}
    for name, text in (("can", _can), ("obd", _obd), ("gnss", _gnss), ("gpio", _gpio)):
        if name in drivers:
            rows.append((name.upper() if name != "gnss" else "GNSS", text(drivers[name])))
    loop = status.get("loop") or {}
    rows.append(("event loop", f"lag {loop.get('lag', 0):.2f} s (limit {loop.get('limit', 0):g} s)"))
    rows.append(("watchdog", _watchdog(status.get("watchdog") or {})))
    lines = [_title(status.get("agent") or {}), *(f"{label:<{LABEL}} {text}" for label, text in rows)]
    return "\n".join(lines + _problems(status) + _errors(status.get("errors") or []))


def _title(agent: dict[str, Any]) -> str:
    uptime = agent.get("uptime")
    up = f" · up {_duration(uptime)}" if isinstance(uptime, (int, float)) else ""
    return f"headunit {agent.get('version', '?')} · {agent.get('profile', '?')}{up} · pid {agent.get('pid', '?')}"


def _health(status: dict[str, Any]) -> str:
    if status.get("healthy"):
        return "healthy"
    count = len(status.get("problems") or [])
    return f"UNHEALTHY ({count} problem{'s' if count != 1 else ''}, below)"


def _problems(status: dict[str, Any]) -> list[str]:
    problems = status.get("problems") or []
    return ["problems", *(f"  - {reason}" for reason in problems)] if problems else []


def _connection(connection: dict[str, Any]) -> str:
    parts = [str(connection.get("detail") or connection.get("state") or "unknown")]
    if connection.get("resumed"):
        parts.append(f"resumed {connection['resumed']} times")
    error = connection.get("last_error")
    if error and not connection.get("online") and str(error) not in parts[0]:
        parts.append(f"last error: {error}")
    return " · ".join(parts)


def _telemetry(telemetry: dict[str, Any] | None) -> str:
    return "off" if telemetry is None else f"{telemetry.get('queued', '?')} samples queued"


def _can(can: dict[str, Any]) -> str:
    rate = can.get("frames_per_s")
    state = "open" if can.get("open") else "not open" if can.get("running") else "not started"
    parts = [f"{can.get('channel')} ({can.get('interface')}): {state}",
             f"{rate:g} frames/s" if isinstance(rate, (int, float)) else f"{can.get('frames', 0)} frames",
             f"{can.get('error_frames', 0)} error frames", f"bus-off {can.get('bus_off', 0)} times"]
    if can.get("last_error"):
        parts.append(f"last error: {can['last_error']}")
    return " · ".join(parts)


def _obd(obd: dict[str, Any]) -> str:
    state = "polling" if obd.get("running") else "not started"
    return f"{state} · {obd.get('answers', 0)}/{obd.get('requests', 0)} requests answered"


def _gnss(gnss: dict[str, Any]) -> str:
    state = "connected" if gnss.get("connected") else "not connected" if gnss.get("running") else "not running"
    fix = gnss.get("fix") or "none"
    return f"{gnss.get('source')}: {state} · fix {fix} · {gnss.get('fixes', 0)} fixes"


def _gpio(gpio: dict[str, Any]) -> str:
    return f"{'up' if gpio.get('up') else 'DOWN'} (pin factory {gpio.get('pin_factory')})"


def _watchdog(watchdog: dict[str, Any]) -> str:
    if not watchdog.get("notify_socket"):
        return "off (not under systemd: no NOTIFY_SOCKET)"
    ready = "READY not sent yet"
    if watchdog.get("ready"):
        ready = f"READY sent ({watchdog.get('ready_reason')})"
    state = watchdog.get("state")
    if state == "off":
        return f"no WatchdogSec= · {ready}"
    interval, ago = watchdog.get("interval") or 0, watchdog.get("last_fed_ago")
    last = f"last {ago:g} s ago" if isinstance(ago, (int, float)) else "not yet"
    verb = {"skipping": "SKIPPING", "fed without health checks": "fed (health checks off)"}.get(str(state), "fed")
    return f"{verb} every {interval / 2:g} s, {last} ({watchdog.get('fed', 0)} pings) · {ready}"


def _errors(errors: list[dict[str, Any]]) -> list[str]:
    if not errors:
        return ["last errors  none"]
    lines = ["last errors"]
    for error in errors[-10:]:
        lines.append(f"  {_clock(error.get('at'))} {error.get('level', '?'):<7} {error.get('logger', '?')}: "
                     f"{error.get('message', '')}")
    return lines


def _clock(at: object) -> str:
    if not isinstance(at, (int, float)):
        return "--:--:--"
    return datetime.fromtimestamp(at).strftime("%H:%M:%S")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
