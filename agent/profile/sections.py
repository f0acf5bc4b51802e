"""Profile sections for the XMPP session and what rides on it: storage, telemetry, location, contacts."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
from pathlib import Path

from agent.profile.model import (
    CameraConfig,
    DashboardConfig,
    ContactsConfig,
    ControlConfig,
    LocationConfig,
    PowerConfig,
    ServiceConfig,
    SessionConfig,
    StorageConfig,
    TelemetryConfig,
    TelemetryRule,
)
from agent.profile.table import Table, field_names, present

VSS_OR_OWN_PATH = re.compile(r"(Vehicle|Headunit)(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_SERVICE = re.compile(r"[\w-]+(?:\.[\w-]+)*")


def session(t: Table) -> SessionConfig:
    t.only(field_names(SessionConfig))
    config = SessionConfig(**present(
        ping_interval=t.number("ping_interval"),
        ping_timeout=t.number("ping_timeout"),
        reconnect_initial=t.number("reconnect_initial"),
        reconnect_cap=t.number("reconnect_cap"),
        resume=t.flag("resume"),
    ))
    if config.reconnect_cap < config.reconnect_initial:
        t.fail("reconnect_cap", f"a number >= reconnect_initial ({config.reconnect_initial})",
               config.reconnect_cap)
    return config


def directory(t: Table, name: str) -> Path | None:
    """A folder (created when needed); a relative one is taken from the profile's folder."""
    raw = t.text(name, what="a folder path")
    return None if raw is None else Path(os.path.normpath(t.base / raw))


def storage(t: Table) -> StorageConfig:
    t.only(field_names(StorageConfig))
    return StorageConfig(**present(data_dir=directory(t, "data_dir")))


def control(t: Table) -> ControlConfig:
    t.only(field_names(ControlConfig))
    return ControlConfig(**present(socket=directory(t, "socket")))


def telemetry(t: Table) -> TelemetryConfig:
    t.only(field_names(TelemetryConfig))
    rules = tuple(_rule(item) for item in t.tables("rules"))
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        if rule.path in seen:
            t.fail(f"rules[{i}].path", "each path in one rule only", rule.path)
        seen.add(rule.path)
    node = t.text("node")
    if node is not None and set(re.findall(r"{(\w*)}", node)) - {"jid"}:
        t.fail("node", "a node name whose only placeholder is {jid}", node)
    return TelemetryConfig(**present(
        service=t.text("service", what="a PubSub service JID like pubsub.fleet.example", pattern=_SERVICE),
        node=node,
        rules=rules,
        batch_max=t.integer("batch_max", 1, 1000),
        batch_delay=t.number("batch_delay", ">= 0"),
        retention=t.number("retention", ">= 0"),
    ))


def _rule(t: Table) -> TelemetryRule:
    t.only(field_names(TelemetryRule))
    path = t.text("path", required=True, what="a VSS path like Vehicle.Speed", pattern=VSS_OR_OWN_PATH)
    every, change = t.number("every"), t.number("change", ">= 0")
    if every is None and change is None:
        t.fail("", "every (seconds), change (threshold) or both")
    return TelemetryRule(path or "", **present(every=every, change=change,
                                                min_interval=t.number("min_interval", ">= 0")))


def location(t: Table) -> LocationConfig:
    t.only(field_names(LocationConfig))
    return LocationConfig(**present(
        enabled=t.flag("enabled"),
        every=t.number("every"),
        min_distance=t.number("min_distance", ">= 0"),
        precision=t.integer("precision", 0, 7),
        access=t.choice("access", ("operators", "contacts")),
    ))


def contacts(t: Table) -> ContactsConfig:
    t.only(field_names(ContactsConfig))
    return ContactsConfig(**present(
        unknown=t.choice("unknown", ("pending", "refuse")),
        operator_group=t.text("operator_group"),
    ))


def camera(t: Table) -> CameraConfig:
    t.only(field_names(CameraConfig))
    backend = t.choice("backend", ("file", "v4l2"), required=True)
    for key in ("device", "width", "height"):
        if t.has(key) and backend != "v4l2":
            t.fail(key, 'backend = "v4l2" (the file backend does not read it)', t.data[key])
    if t.has("path") and backend != "file":
        t.fail("path", 'backend = "file" (the v4l2 backend reads device)', t.data["path"])
    path = None
    if backend == "file":
        raw = t.text("path", required=True, what="a JPEG file or a folder of them")
        path = Path(os.path.normpath(t.base / (raw or "")))
        if not path.exists():
            t.fail("path", "a JPEG file or a folder of them that exists", str(path))
    return CameraConfig(**present(
        backend=backend,
        path=path,
        device=t.text("device", what="a V4L2 device like /dev/video0"),
        width=t.integer("width", 16, 7680),
        height=t.integer("height", 16, 4320),
        timeout=t.number("timeout"),
    ))


def dashboard(t: Table) -> DashboardConfig:
    t.only(field_names(DashboardConfig))
    host = t.text("host", what="an IP address to listen on, like 127.0.0.1")
    allow_remote = t.flag("allow_remote")
    if host is not None:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            t.fail("host", "an IP address to listen on, like 127.0.0.1 (not a name)", host)
        if not address.is_loopback and not allow_remote:
            t.fail("host", "a loopback address (127.0.0.1 or ::1), or allow_remote = true alongside: "
                   "anyone who can reach it sees the car's state", host)
    replies = t.array("quick_replies")
    if replies is not None:
        if not 1 <= len(replies) <= 8:
            t.fail("quick_replies", "1..8 texts", len(replies))
        for i, reply in enumerate(replies):
            if not isinstance(reply, str) or not reply.strip() or len(reply) > 60:
                t.fail(f"quick_replies[{i}]", "a text of 1..60 characters", reply)
    return DashboardConfig(**present(
        enabled=t.flag("enabled"),
        host=host,
        port=t.integer("port", 0, 65535),
        allow_remote=allow_remote,
        theme=t.choice("theme", ("auto", "day", "night")),
        quick_replies=tuple(r.strip() for r in replies) if replies is not None else None,
    ))


def service(t: Table) -> ServiceConfig:
    t.only(field_names(ServiceConfig))
    return ServiceConfig(**present(
        ready_timeout=t.number("ready_timeout"),
        watchdog=t.flag("watchdog"),
        loop_lag_limit=t.number("loop_lag_limit"),
    ))


def power(t: Table) -> PowerConfig:
    t.only(field_names(PowerConfig))
    enabled = t.flag("enabled")
    return PowerConfig(**present(
        enabled=enabled,
        shutdown_delay=t.number("shutdown_delay", ">= 0"),
        poweroff_command=_command(t, "poweroff_command", must_exist=bool(enabled)),
    ))


def _command(t: Table, name: str, *, must_exist: bool) -> tuple[str, ...] | None:
    """A command as argv, run without a shell: an absolute path or a name found on PATH, then arguments.

    Whether the program exists is checked only when it will be used, so a profile for a
    car still passes ``headunit check`` on a machine without it.
    """
    what = 'a command as an array of strings, like ["systemctl", "poweroff"]'
    argv = t.array(name)
    if argv is None:
        return None
    if not argv or not all(isinstance(arg, str) and arg and "\0" not in arg for arg in argv):
        t.fail(name, what, argv)
    program = argv[0]
    if "/" in program and not os.path.isabs(program):
        t.fail(f"{name}[0]", "an absolute path or a program name found on PATH (no relative path)", program)
    if must_exist and shutil.which(program) is None:
        t.fail(f"{name}[0]", "a program that exists and may be run (an absolute path, or a name on PATH)",
               program)
    return tuple(argv)
