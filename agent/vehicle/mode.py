"""The derived vehicle mode (off / parked / idling / driving), with hysteresis.

``ModeMachine`` is pure: it takes the inputs and the vehicle time and answers
the mode and when it wants to be asked again, so the hysteresis is tested
without sleeping. A stop at a red light stays "driving" for ``stop_grace``
seconds; only a parking signal (gear P, parking brake) parks it sooner.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class VehicleMode(str, Enum):
    OFF = "off"
    PARKED = "parked"
    IDLING = "idling"
    DRIVING = "driving"


@dataclass(frozen=True)
class ModeSettings:
    moving_speed: float = 3.0  # km/h at or above which the vehicle moves
    engine_running_rpm: float = 300.0
    drive_after: float = 2.0  # s of movement before "driving"
    stop_grace: float = 120.0  # s stationary before "driving" gives way without a parking signal
    park_after: float = 3.0  # s of a parking signal (P, parking brake) before "parked"
    off_after: float = 3.0  # s of ignition off before "off"


@dataclass(frozen=True)
class ModeInputs:
    """Fresh values only; None when unknown or stale."""

    ignition: bool | None = None
    speed: float | None = None  # km/h
    engine_rpm: float | None = None
    parking_signal: bool | None = None  # gear in P or parking brake engaged


class ModeMachine:
    """Turns inputs and vehicle time into a mode; keeps the timers of its hysteresis."""

    def __init__(self, settings: ModeSettings | None = None, initial: VehicleMode = VehicleMode.OFF):
        self.settings = settings or ModeSettings()
        self.mode = initial
        self._moving_since: float | None = None
        self._stationary_since: float | None = None
        self._parking_since: float | None = None
        self._off_since: float | None = None

    def step(self, inputs: ModeInputs, now: float) -> tuple[VehicleMode, float | None]:
        """Return the mode at ``now`` and the vehicle time of the next decision due (or None)."""
        s = self.settings
        powered = inputs.ignition if inputs.ignition is not None else (
            inputs.speed is not None or inputs.engine_rpm is not None)
        moving = inputs.speed is not None and inputs.speed >= s.moving_speed
        running = inputs.engine_rpm is not None and inputs.engine_rpm >= s.engine_running_rpm

        self._off_since = _since(self._off_since, not powered, now)
        self._moving_since = _since(self._moving_since, powered and moving, now)
        self._stationary_since = _since(self._stationary_since, powered and not moving, now)
        self._parking_since = _since(self._parking_since, bool(inputs.parking_signal), now)

        deadlines: list[float] = []

        def held(since: float | None, duration: float) -> bool:
            if since is None:
                return False
            if now - since >= duration:
                return True
            deadlines.append(since + duration)
            return False

        if not powered:
            if self.mode is not VehicleMode.OFF and held(self._off_since, s.off_after):
                self.mode = VehicleMode.OFF
        elif moving:
            if self.mode is VehicleMode.DRIVING or held(self._moving_since, s.drive_after):
                self.mode = VehicleMode.DRIVING
            else:
                self.mode = VehicleMode.IDLING if running else VehicleMode.PARKED
        elif self.mode is VehicleMode.DRIVING:
            # A parking signal (P, parking brake) ends the drive sooner than the stop grace.
            if held(self._parking_since, s.park_after) or held(self._stationary_since, s.stop_grace):
                self.mode = VehicleMode.IDLING if running else VehicleMode.PARKED
        else:
            self.mode = VehicleMode.IDLING if running else VehicleMode.PARKED
        return self.mode, min(deadlines) if deadlines else None


def _since(since: float | None, condition: bool, now: float) -> float | None:
    if not condition:
        return None
    return now if since is None else since
