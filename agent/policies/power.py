"""Ignition off: end what waits for the driver, flush, show "ignition off", then power the board off.

When ``Vehicle.LowVoltageSystemState`` drops from an on state (ACC, ON, START) to OFF
or LOCK, whether the GPIO ignition sense or CAN said so, :class:`IgnitionShutdown`:

1. withdraws the offers waiting for the driver (and hangs up calls, once they exist),
2. publishes the telemetry queue now (``Telemetry.flush``),
3. waits for the vehicle mode to be "off": the presence policy follows the mode and
   sends the profile's ignition-off presence itself (a driver's override ends here),
   so this sequence never fights it with a presence of its own,
4. after ``[power] shutdown_delay`` seconds on the board's hold-up supply, publishes
   once more (what the delay recorded, the mode "off" sample) and runs
   ``[power] poweroff_command``, ``systemctl poweroff`` by default, without a shell.
   systemd then stops the agent like any unit: SIGTERM, the staged stop, goodbye.

The ignition coming back before the command runs cancels the power off. With
``[power] enabled = false`` (the default) steps 1 to 3 run and the board stays on.

A countdown outlives the process: a marker file in the data folder says one was
running, and an agent that starts with the ignition still off resumes it, so a crash
or a restart during the delay cannot leave the board on to drain the car's battery.
Without the marker, an agent that starts with the ignition off stays on (a board on
a bench reads its ignition sense as off).

Why ``systemctl`` rather than logind over D-Bus: ``systemctl poweroff`` makes that
very call (``org.freedesktop.login1.Manager.PowerOff``, with the same polkit check
when not root), the agent needs no D-Bus library for it, and exec'ing it is a clean
boundary that tests intercept with a script of their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Protocol

from agent.events import Event
from agent.policies.presence import PresencePolicy
from agent.profile.model import PowerConfig
from agent.storage import StorageError, atomic_write
from agent.vehicle import paths
from agent.vehicle.mode import VehicleMode
from agent.vehicle.state import EventKind, StateEvent, VehicleState

log = logging.getLogger(__name__)

MARKER = "poweroff.pending"  # in the data folder while a countdown runs
FLUSH_TIMEOUT = 10.0  # s for the telemetry flush at ignition off
FINAL_FLUSH_TIMEOUT = 5.0  # s for the last flush, just before powering off
MODE_OFF_GRACE = 30.0  # s past the delay to wait for mode "off" before powering off without it
COMMAND_TIMEOUT = 30.0  # s for the power-off command to return
ANNOUNCE_EVERY = 30.0  # s between "power off in N s" log lines


class Offers(Protocol):
    """What waits for the driver (incoming calls and files): withdrawn at ignition off."""

    def pending(self) -> Sequence[object]: ...

    def close(self) -> None: ...


class Telemetry(Protocol):
    """The telemetry queue, flushed at ignition off."""

    @property
    def pending(self) -> int: ...

    async def flush(self, timeout: float) -> bool: ...


class Phase(str, Enum):
    IDLE = "idle"  # ignition on or unknown
    STAYING_ON = "staying on"  # ignition off, power off disabled by the profile
    COUNTING_DOWN = "counting down"
    POWERING_OFF = "powering off"  # the command runs or has returned 0
    FAILED = "failed"  # the command failed: the board stays on


class IgnitionShutdown:
    """Watches the ignition; runs the ignition-off sequence and cancels it when the ignition comes back."""

    def __init__(self, state: VehicleState, config: PowerConfig, presence: PresencePolicy, offers: Offers, *,
                 telemetry: Telemetry | None = None, is_online: Callable[[], bool] = lambda: True,
                 marker: Path | None = None, hang_up: Callable[[], Awaitable[None]] | None = None) -> None:
        self.config = config
        self.phase = Phase.IDLE
        self.changed: Event[Phase] = Event("power phase")  # after each change of phase (sd_notify STATUS)
        self._state = state
        self._presence = presence
        self._offers = offers
        self._telemetry = telemetry
        self._is_online = is_online
        self._marker = marker
        self._hang_up = hang_up  # CALLS HOOK: the call manager's "end every call" goes here once calls exist
        self._is_on: bool | None = None
        self._resume = False
        self._deadline: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe: Callable[[], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Follow the ignition (a countdown interrupted by a restart is resumed if it is still off)."""
        self._resume = self.config.enabled and self._marker is not None and self._marker.exists()
        self._unsubscribe = self._state.listen(self._on_ignition, [paths.LOW_VOLTAGE_STATE])
        reading = self._state.get(paths.LOW_VOLTAGE_STATE)
        if reading is not None and not reading.is_stale:
            self._seen(str(reading.value))

    async def stop(self) -> None:
        """Stop following the ignition; a countdown ends here (its marker stays); idempotent.

        A power-off command already running is left to finish: systemd may be stopping
        the agent precisely because of it.
        """
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        task, self._task = self._task, None
        if task is not None and self.phase is Phase.POWERING_OFF and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), COMMAND_TIMEOUT)
            except TimeoutError:
                log.warning("power-off command still running at stop")
        for pending in list(self._tasks):
            pending.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.phase is Phase.COUNTING_DOWN:
            self._set_phase(Phase.IDLE)

    # -- what is shown ---------------------------------------------------------------------

    def seconds_left(self) -> float | None:
        """Seconds until the power off while counting down, else None."""
        if self.phase is not Phase.COUNTING_DOWN or self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def as_json(self) -> dict[str, object]:
        """For ``headunit state`` and the dashboard: e.g. {"phase": "counting down", "poweroff_in": 87}."""
        left = self.seconds_left()
        return {"enabled": self.config.enabled, "phase": self.phase.value,
                "poweroff_in": None if left is None else round(left)}

    # -- the ignition ----------------------------------------------------------------------

    def _on_ignition(self, event: StateEvent) -> None:
        if event.kind is EventKind.CHANGED:  # a stale reading says nothing about the ignition
            self._seen(str(event.new.value))

    def _seen(self, value: str) -> None:
        is_on = value in paths.IGNITION_ON_STATES
        was_on, self._is_on = self._is_on, is_on
        resume, self._resume = self._resume, False
        if is_on:
            if was_on is not True:
                self._ignition_on(value)
        elif was_on is True:
            self._begin(f"ignition {value}")
        elif was_on is None and resume:
            self._begin(f"ignition still {value} after a restart during a power-off countdown")
        elif was_on is None and self.config.enabled:
            log.info("ignition %s at start: the board stays on (power off follows the ignition going off)", value)

    def _ignition_on(self, value: str) -> None:
        self._clear_marker()
        task = self._task
        if task is None or task.done():
            self._set_phase(Phase.IDLE)
            return
        if self.phase is Phase.POWERING_OFF:
            log.warning("ignition %s again, but the power off was already asked: too late to cancel", value)
            return
        left = self.seconds_left()
        task.cancel()
        self._task = None
        self._set_phase(Phase.IDLE)
        if self.config.enabled:
            log.warning("ignition %s again: power off cancelled%s", value,
                        "" if left is None else f" {left:.0f} s before it was due")
        else:
            log.info("ignition %s again: the ignition-off sequence stops", value)

    def _begin(self, why: str) -> None:
        if self._task is not None and not self._task.done():
            return  # OFF then LOCK: one sequence
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_delay
        if self.config.enabled:
            self._deadline = deadline
            self._set_phase(Phase.COUNTING_DOWN)
            log.warning("%s: powering the board off in %.0f s unless the ignition comes back", why,
                        self.config.shutdown_delay)
            self._write_marker(why)  # here, not in the task: a cancel must find it written to remove it
        else:
            log.info("%s", why)
        task = loop.create_task(self._sequence(deadline), name="ignition-off")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._task = task

    # -- the sequence ----------------------------------------------------------------------

    async def _sequence(self, deadline: float) -> None:
        try:
            await self._run_sequence(deadline)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the ignition-off sequence failed; the board stays on")
            self._set_phase(Phase.FAILED)

    async def _run_sequence(self, deadline: float) -> None:
        """Steps 1 to 4 of the module's docstring; ``deadline`` (loop time) is when the delay ends."""
        await self._end_for_driver()
        await self._flush(FLUSH_TIMEOUT, "at ignition off")
        await self._wait_for_mode_off(deadline + MODE_OFF_GRACE)
        if not self.config.enabled:
            self._set_phase(Phase.STAYING_ON)
            log.info("ignition off: the board stays on ([power] enabled = false)")
            return
        await self._count_down(deadline)
        await self._flush(FINAL_FLUSH_TIMEOUT, "before powering off")
        await self._power_off()

    async def _end_for_driver(self) -> None:
        """Nobody is left to answer: withdraw the offers, end the calls."""
        waiting = len(self._offers.pending())
        self._offers.close()
        if waiting:
            log.info("ignition off: %d offers to the driver withdrawn", waiting)
        if self._hang_up is not None:  # CALLS HOOK: ends any call in progress
            await self._hang_up()

    async def _flush(self, timeout: float, when: str) -> None:
        telemetry = self._telemetry
        if telemetry is None:
            return
        if not self._is_online():
            log.warning("telemetry not flushed %s: offline; %d samples stay queued for later", when,
                        telemetry.pending)
        elif await telemetry.flush(timeout):
            log.info("telemetry flushed %s", when)
        else:
            log.warning("telemetry flush %s incomplete: %d samples stay queued for later", when,
                        telemetry.pending)

    async def _wait_for_mode_off(self, limit: float) -> None:
        """Until the mode is "off" (the presence policy then shows it), at most until ``limit`` (loop time)."""
        changed = asyncio.Event()
        unsubscribe = self._state.listen(lambda _: changed.set(), [paths.MODE])
        try:
            async with asyncio.timeout_at(limit):
                while self._state.value(paths.MODE) != VehicleMode.OFF.value:
                    changed.clear()
                    await changed.wait()
        except TimeoutError:
            log.warning("the vehicle mode is still %s: going on without the ignition-off presence",
                        self._state.value(paths.MODE))
            return
        finally:
            unsubscribe()
        if not self._presence.is_automatic:
            log.info("ignition off: the driver's presence override ends")
            self._presence.automatic()

    async def _count_down(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(left % ANNOUNCE_EVERY or ANNOUNCE_EVERY)
            left = deadline - loop.time()
            if left >= 1:
                log.info("power off in %.0f s", left)

    async def _power_off(self) -> None:
        """Run the power-off command (no shell); its failure is logged and the board stays on."""
        command = self.config.poweroff_command
        self._set_phase(Phase.POWERING_OFF)
        log.warning("powering the board off: %s", shlex.join(command))
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            self._failed(f"cannot run {command[0]}: {exc}")
            return
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                output, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            self._failed(f"{command[0]} did not return within {COMMAND_TIMEOUT:.0f} s")
            return
        if process.returncode != 0:
            text = output.decode(errors="replace").strip()[-500:] or "no output"
            self._failed(f"{command[0]} exited with {process.returncode}: {text}")
            return
        log.warning("power off asked (%s returned 0): systemd stops the agent next", command[0])

    def _failed(self, why: str) -> None:
        self._set_phase(Phase.FAILED)
        log.error("power off failed, the board stays on: %s (as a service user, systemctl poweroff needs "
                  "polkit to allow org.freedesktop.login1.power-off)", why)

    # -- the marker and the phase ---------------------------------------------------------

    def _write_marker(self, why: str) -> None:
        """Durably, on the loop: a few milliseconds once per ignition off."""
        if self._marker is None:
            return
        text = json.dumps({"since": time.time(), "why": why}) + "\n"
        try:
            atomic_write(self._marker, [text.encode()])
        except StorageError as exc:
            log.warning("the countdown is not kept across a restart: %s", exc)

    def _clear_marker(self) -> None:
        if self._marker is None:
            return
        try:
            self._marker.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove %s: %s", self._marker, exc)

    def _set_phase(self, phase: Phase) -> None:
        if phase is self.phase:
            return
        self.phase = phase
        if phase is not Phase.COUNTING_DOWN:
            self._deadline = None
        self.changed.emit(phase)
