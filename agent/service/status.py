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
from agent.service.view import Watched
from agent.vehicle import paths

if TYPE_CHECKING:
    from agent.service.health import Health

DriverJson = dict[str, object]


def driver_problems(agent: Watched) -> list[str]:
    """Why a driver the profile asks for is not working now; empty when all work (or none is running)."""
    return [str(d["problem"]) for d in drivers_json(agent, None).values() if d.get("problem")]


def drivers_json(agent: Watched, can_rate: float | None) -> dict[str, DriverJson]:
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
    if agent.gpio is not None:
        drivers["gpio"] = _gpio(agent)
    return drivers


def _can(agent: Watched, rate: float | None) -> DriverJson:
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


def _gnss(agent: Watched) -> DriverJson:
    assert agent.gnss is not None
    source, running = agent.gnss.source, agent.supervisor.is_running("gnss")
    fix = agent.state.value(paths.GNSS_FIX_TYPE)  # None while unknown or stale
    problem = f"GNSS {source.name} is not connected" if running and not source.is_connected else None
    return {"source": source.name, "running": running, "connected": source.is_connected,
            "fix": fix, "fixes": source.stats.fixes,
            "sentences": source.stats.sentences, "skipped": source.stats.skipped(), "problem": problem}


def _gpio(agent: Watched) -> DriverJson:
    config = agent.gpio
    assert config is not None
    is_up = agent.gpio_up()
    problem = None if is_up or agent.started_at() is None else "GPIO is unavailable (see the last errors)"
    return {"pin_factory": config.pin_factory or "default", "up": is_up, "problem": problem}


async def status_json(agent: Watched, health: Health) -> dict[str, object]:
    """Everything ``headunit status`` shows; ``healthy`` false when any problem is listed."""
    healthy, problems = health.is_healthy()
    started = agent.started_at()
    uptime = None if started is None else round(time.monotonic() - started, 1)
    pending = agent.telemetry_pending
    return {
        "healthy": healthy, "problems": problems,
        "agent": {"version": __version__, "profile": agent.name, "file": str(agent.file),
                  "pid": os.getpid(), "uptime": uptime},
        "connection": agent.link.connection().as_json(),
        "telemetry": None if pending is None else {"queued": pending()},
        "chat": {"outbox": await agent.outbox()},
        "drivers": drivers_json(agent, None if agent.can is None else agent.can.frames_per_second()),
        "tasks": health.tasks_json(),
        "loop": {"lag": round(health.probe.lag(), 3), "limit": health.config.loop_lag_limit},
        "watchdog": health.watchdog_json(),
        "errors": health.errors.as_json(),
    }
