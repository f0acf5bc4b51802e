"""What ``headunit status`` shows: the link, the queues, each driver's health, the last errors.

Values are read from the running agent when asked; a driver's ``problem`` (None when
fine) is what makes the agent count as degraded (``headunit status`` exits 1). A driver
is judged only while its task runs: before the inputs start (the demo waits until it
is online) and after a replay has ended there is nothing to judge.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from agent import __version__
from agent.headless import connection_state
from agent.vehicle import paths

if TYPE_CHECKING:
    from agent.app import Agent
    from agent.service.health import Health

DriverJson = dict[str, object]


def driver_problems(agent: Agent) -> list[str]:
    """Why a driver the profile asks for is not working now; empty when all work (or none is running)."""
    return [str(d["problem"]) for d in drivers_json(agent, None).values() if d.get("problem")]


def drivers_json(agent: Agent, can_rate: float | None) -> dict[str, DriverJson]:
    """CAN, OBD-II, GNSS and GPIO as configured, each with ``problem`` (None when fine)."""
    drivers: dict[str, DriverJson] = {}
    if agent.can is not None:
        drivers["can"] = _can(agent, can_rate)
        if agent.can.obd is not None:
            stats = agent.can.obd.stats
            drivers["obd"] = {"running": agent.supervisor.is_running("obd"), "requests": stats.requests,
                              "answers": stats.answers, "no_answer": stats.no_answer,
                              "send_errors": stats.send_errors, "problem": None}
    if agent.gnss is not None:
        drivers["gnss"] = _gnss(agent)
    if agent.profile.vehicle.gpio is not None:
        drivers["gpio"] = _gpio(agent)
    return drivers


def _can(agent: Agent, rate: float | None) -> DriverJson:
    assert agent.can is not None
    port, running = agent.can.port, agent.supervisor.is_running("can")
    stats = port.stats
    problem = None
    if running and not port.is_connected:
        problem = f"CAN {port.channel} ({port.interface}) is not open: {stats.last_error or 'opening'}"
    return {"interface": port.interface, "channel": port.channel, "running": running,
            "open": port.is_connected, "frames": stats.frames,
            "frames_per_s": None if rate is None else round(rate, 1), "error_frames": stats.error_frames,
            "bus_off": stats.bus_off, "reopened": stats.reopened, "last_error": stats.last_error,
            "problem": problem}


def _gnss(agent: Agent) -> DriverJson:
    assert agent.gnss is not None
    source, running = agent.gnss.source, agent.supervisor.is_running("gnss")
    fix = agent.state.value(paths.GNSS_FIX_TYPE)  # None while unknown or stale
    problem = f"GNSS {source.name} is not connected" if running and not source.is_connected else None
    return {"source": source.name, "running": running, "connected": source.is_connected,
            "fix": fix, "fixes": source.stats.fixes,
            "sentences": source.stats.sentences, "skipped": source.stats.skipped(), "problem": problem}


def _gpio(agent: Agent) -> DriverJson:
    config = agent.profile.vehicle.gpio
    assert config is not None
    is_up = agent.gpio is not None
    problem = None if is_up or agent.started_at is None else "GPIO is unavailable (see the last errors)"
    return {"pin_factory": config.pin_factory or "default", "up": is_up, "problem": problem}


def connection_json(agent: Agent) -> dict[str, object]:
    """The XMPP link: state, whether the stream can be resumed, how often it was, the last connect error."""
    xmpp = agent.xmpp
    return {"state": connection_state(agent), "detail": agent._connection(), "online": xmpp.is_online,
            "resumable": xmpp.is_resumable, "resumed": xmpp.resumptions, "sessions": xmpp.fresh_sessions,
            "last_error": xmpp.last_error}


async def status_json(agent: Agent, health: Health) -> dict[str, object]:
    """Everything ``headunit status`` shows; ``healthy`` false when any problem is listed."""
    healthy, problems = health.is_healthy()
    uptime = None if agent.started_at is None else round(time.monotonic() - agent.started_at, 1)
    telemetry = agent.telemetry
    return {
        "healthy": healthy, "problems": problems,
        "agent": {"version": __version__, "profile": agent.profile.name, "file": str(agent.profile.file),
                  "pid": os.getpid(), "uptime": uptime},
        "connection": connection_json(agent),
        "telemetry": None if telemetry is None else {"queued": telemetry.pending},
        "chat": {"outbox": len(await agent.messages.unacked())},
        "drivers": drivers_json(agent, health.can_rate.rate()),
        "tasks": health.tasks_json(),
        "loop": {"lag": round(health.probe.lag(), 3), "limit": health.config.loop_lag_limit},
        "watchdog": health.watchdog_json(),
        "errors": health.errors.as_json(),
    }
