"""The agent's health, and what systemd hears of it: READY, STATUS, WATCHDOG, STOPPING.

Two kinds of problem:

- *fatal*: the event loop is late by more than ``[service] loop_lag_limit``, one of the
  agent's tasks keeps crashing, or a task that must run has ended. A restart cures
  these, so the watchdog goes unfed and systemd restarts the agent after WatchdogSec=.
- *degraded*: a driver the profile asks for does not work (CAN not open, GNSS receiver
  not connected, GPIO missing). A restart does not bring a device back (the drivers
  already reopen it with backoff) and would drop the XMPP session each time, so these
  only show: in ``headunit status`` (exit 1) and in the STATUS= line.

The pinger runs ON the event loop: a blocked loop sends nothing at all. READY=1 goes
out once the XMPP session is online, or after ``[service] ready_timeout`` seconds
offline (a car starting in a tunnel must still come up), whichever is first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.control import Handler
from agent.events import Event
from agent.service.debug import debug_handlers
from agent.service.notify import Notifier, watchdog_interval
from agent.service.probes import CrashCounter, ErrorLog, LoopProbe
from agent.service.status import driver_problems, status_json
from agent.service.view import Watched
from agent.vehicle import paths

log = logging.getLogger(__name__)

CRASH_LIMIT = 5  # crashes of one task within CRASH_WINDOW that make it fatal
CRASH_WINDOW = 300.0  # s
STATUS_COALESCE = 2.0  # s: a burst of changes makes one STATUS= line
STATUS_REFRESH = 30.0  # s: a driver's health has no event of its own; looked at this often under systemd
RECHECK = 1.0  # s between health checks while the watchdog goes unfed
READY_MARGIN = 30.0  # s the start may take beyond ready_timeout before systemd gives up on it
ALWAYS_RUNNING = ("stale-sweep", "telemetry")  # tasks that only end when the agent stops


@dataclass(frozen=True)
class Problem:
    reason: str
    is_fatal: bool  # a restart cures it: the watchdog goes unfed


class Health:
    """Watches one agent and keeps systemd told; ``start()`` after the control socket, ``stop()`` last."""

    def __init__(self, agent: Watched, *, environ: Mapping[str, str] | None = None) -> None:
        self.agent = agent
        self.config = agent.config
        self.notifier = Notifier.from_environment(environ)
        self.watchdog_interval = watchdog_interval(environ)
        self.probe = LoopProbe(window=self.config.loop_lag_limit)
        self.errors = ErrorLog()
        self.crashes = CrashCounter(CRASH_WINDOW)
        self._unsubscribe_crashes = agent.supervisor.crashed.listen(self.crashes.note)
        self.ready_reason: str | None = None
        self.fed = 0
        self.skipped = 0
        self._fed_at: float | None = None
        self._skipping: list[str] = []
        self._status = ""
        self._seen_running: set[str] = set()
        self._is_stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe_online: Callable[[], None] | None = None

    @property
    def is_ready(self) -> bool:
        return self.ready_reason is not None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin watching: loop probe, error log, STATUS= updates, the READY fallback, the watchdog."""
        if self._tasks:
            return
        self.errors.install()
        self.probe.start()
        self._unsubscribe_online = self.agent.link.online.listen(self._on_online)
        self._spawn("health-status", self._update_status)
        self._spawn("health-ready", self._ready_when_offline)
        # a longer ready_timeout than the unit's TimeoutStartSec= must not get the start killed
        self.notifier.extend_timeout(self.config.ready_timeout + READY_MARGIN)
        if self.watchdog_interval is None:
            return
        if self.config.watchdog:
            log.info("feeding the service manager's watchdog every %.1f s while healthy",
                     self.watchdog_interval / 2)
        else:
            log.warning("[service] watchdog = false: feeding the service manager's watchdog every %.1f s "
                        "whatever the health checks say (only a blocked event loop stops it)",
                        self.watchdog_interval / 2)
        self._spawn("health-watchdog", self._feed_watchdog)

    def stopping(self) -> None:
        """The agent begins to stop: STOPPING=1, and no more fatal verdicts on tasks being stopped."""
        self._is_stopping = True
        self.notifier.stopping(status="stopping")

    async def stop(self) -> None:
        """Stop watching and close the notify socket; idempotent."""
        self._is_stopping = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.probe.stop()
        self.errors.uninstall()
        if self._unsubscribe_online is not None:
            self._unsubscribe_online()
            self._unsubscribe_online = None
        self.notifier.close()

    def _spawn(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.create_task(self._logged(name, work), name=name)
        self._tasks.append(task)

    @staticmethod
    async def _logged(name: str, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:  # the watchdog then goes unfed: systemd restarts the agent
            log.exception("%s failed", name)

    # -- the verdict ----------------------------------------------------------------------

    def problems(self) -> list[Problem]:
        """Everything wrong now, fatal first."""
        found = [Problem(reason, True) for reason in self._fatal()]
        return found + [Problem(reason, False) for reason in driver_problems(self.agent)]

    def is_healthy(self) -> tuple[bool, list[str]]:
        """(no problem at all, every reason): ``headunit status`` exits 1 unless healthy."""
        reasons = [p.reason for p in self.problems()]
        return not reasons, reasons

    def is_alive(self) -> tuple[bool, list[str]]:
        """(no fatal problem, the fatal reasons): the watchdog is fed only when alive."""
        reasons = self._fatal()
        return not reasons, reasons

    def _fatal(self) -> list[str]:
        reasons = []
        lag, limit = self.probe.lag(), self.config.loop_lag_limit
        if lag > limit:
            reasons.append(f"the event loop was blocked for {lag:.1f} s (limit {limit:g} s)")
        for name in self.crashes.names():
            recent = self.crashes.recent(name)
            if recent >= CRASH_LIMIT:
                reasons.append(f"task {name} crashed {recent} times in {CRASH_WINDOW / 60:.0f} min")
        if not self._is_stopping:
            reasons += [f"task {name} has ended" for name in self._ended()]
        return reasons

    def _ended(self) -> list[str]:
        """Tasks that must run until the agent stops, were seen running, and no longer do."""
        ended = []
        for name in ALWAYS_RUNNING:
            if self.agent.supervisor.is_running(name):
                self._seen_running.add(name)
            elif name in self._seen_running:
                ended.append(name)
        return ended

    def tasks_json(self) -> dict[str, dict[str, object]]:
        names = [*ALWAYS_RUNNING, "can", "obd", "gnss", *self.crashes.names()]
        return {name: {"running": self.agent.supervisor.is_running(name),
                       "crashes": self.crashes.total.get(name, 0),
                       "recent_crashes": self.crashes.recent(name)} for name in dict.fromkeys(names)}

    # -- READY ----------------------------------------------------------------------------

    def _on_online(self, _: None) -> None:
        self._ready("online")

    async def _ready_when_offline(self) -> None:
        await asyncio.sleep(self.config.ready_timeout)
        self._ready(f"still offline after {self.config.ready_timeout:g} s: carrying on without the server")

    def _ready(self, reason: str) -> None:
        if self.is_ready or self._is_stopping:  # READY after STOPPING would confuse systemd
            return
        self.ready_reason = reason
        self._status = self.status_line()
        if self.notifier.is_enabled:
            log.info("ready (%s): telling the service manager", reason)
        self.notifier.ready(status=self._status)

    # -- STATUS -----------------------------------------------------------------------------

    def status_line(self) -> str:
        """One line for ``systemctl status``: "online · driving · 3 samples queued"."""
        agent = self.agent
        parts = [self._connection_text()]
        mode = agent.state.value(paths.MODE)
        if mode is not None:
            parts.append("ignition off" if mode == "off" else str(mode))
        if agent.telemetry_pending is not None:
            parts.append(f"{agent.telemetry_pending()} samples queued")
        parts += [p.reason for p in self.problems()][:1]
        return " · ".join(parts)

    def _connection_text(self) -> str:
        status = self.agent.link.connection()
        if status.state == "offline" and status.last_error:
            return f"offline ({_short_error(status.last_error)}) · retrying"
        return status.state

    async def _update_status(self) -> None:
        """STATUS= for ``systemctl status``: redone when what it shows changes (the link, the mode, the
        queue, a crash), at most every STATUS_COALESCE s; not at all without a service manager."""
        if not self.notifier.is_enabled:
            return
        agent = self.agent
        dirty = asyncio.Event()
        events: list[Event[Any]] = [agent.link.online, agent.link.offline, agent.supervisor.crashed]
        if agent.telemetry_changed is not None:
            events.append(agent.telemetry_changed)
        undo = [event.listen(lambda _: dirty.set()) for event in events]
        undo.append(agent.state.listen(lambda _: dirty.set(), [paths.MODE]))
        try:
            while True:
                line = self.status_line()
                if line != self._status:
                    self._status = line
                    self.notifier.status(line)
                dirty.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STATUS_REFRESH):
                        await dirty.wait()
                await asyncio.sleep(STATUS_COALESCE)
        finally:
            for unsubscribe in undo:
                unsubscribe()

    # -- WATCHDOG ------------------------------------------------------------------------------

    async def _feed_watchdog(self) -> None:
        """WATCHDOG=1 every half interval while alive; while not, look again every second."""
        assert self.watchdog_interval is not None
        period = self.watchdog_interval / 2
        while True:
            is_alive, reasons = self.is_alive() if self.config.watchdog else (True, [])
            if is_alive:
                self._feed()
                await asyncio.sleep(period)
            else:
                self._skip(reasons)
                await asyncio.sleep(min(period, RECHECK))

    def _feed(self) -> None:
        if self._skipping:
            log.warning("watchdog fed again after %d skipped checks", self.skipped)
            self._skipping = []
        if self.notifier.watchdog():
            self.fed += 1
            self._fed_at = time.monotonic()

    def _skip(self, reasons: list[str]) -> None:
        self.skipped += 1
        if reasons != self._skipping:  # once per change, not every second
            log.error("watchdog not fed (systemd restarts the agent if this lasts %.0f s): %s",
                      self.watchdog_interval or 0, "; ".join(reasons))
        self._skipping = reasons

    def watchdog_json(self) -> dict[str, object]:
        """Whether systemd was told READY, and how the watchdog is being fed."""
        if self.watchdog_interval is None:
            state = "off"
        elif not self.config.watchdog:
            state = "fed without health checks"
        else:
            state = "skipping" if self._skipping else "fed"
        ago = None if self._fed_at is None else round(time.monotonic() - self._fed_at, 1)
        return {"state": state, "notify_socket": self.notifier.is_enabled, "ready": self.is_ready,
                "ready_reason": self.ready_reason, "interval": self.watchdog_interval, "fed": self.fed,
                "last_fed_ago": ago, "skipped": self.skipped, "skipping": list(self._skipping),
                "pid": os.getpid()}


def _short_error(error: str) -> str:
    """The gist of a connect error for one line: "connection refused", or its first 60 characters."""
    lowered = error.lower()
    for gist in ("connection refused", "refused the credentials", "not trusted", "timed out",
                 "name or service not known", "network is unreachable", "no answer"):
        if gist in lowered:
            return gist
    if "errno 111" in lowered or "connect call failed" in lowered:
        return "connection refused"
    return error.removeprefix("connection failed: ")[:60]


def status_handlers(health: Health) -> dict[str, Handler]:
    """``status`` for the control socket (``headunit status``); with HEADUNIT_TEST_HOOKS=1 also ``debug.*``."""

    async def status(_: Mapping[str, object]) -> object:
        return await status_json(health.agent, health)

    return {"status": status, **debug_handlers(lambda: health.notifier)}
