"""Runs the ModeMachine on the live state and publishes the mode at ``Headunit.VehicleMode``."""

from __future__ import annotations

import asyncio
import logging

from agent.clock import Clock
from agent.vehicle import paths
from agent.vehicle.mode import ModeInputs, ModeMachine, ModeSettings, VehicleMode
from agent.vehicle.state import StateEvent, VehicleState

log = logging.getLogger(__name__)

SOURCE = "agent"
INPUTS = (paths.LOW_VOLTAGE_STATE, paths.SPEED, paths.ENGINE_SPEED, paths.CURRENT_GEAR,
          paths.PARKING_BRAKE)


class ModeTracker:
    """Re-evaluates the mode when an input changes and when a hysteresis timer is due."""

    def __init__(self, state: VehicleState, settings: ModeSettings, clock: Clock) -> None:
        self._state = state
        self._clock = clock
        self.machine = ModeMachine(settings)
        self._timer: asyncio.TimerHandle | None = None
        self._unsubscribe: list[object] = []

    @property
    def mode(self) -> VehicleMode:
        return self.machine.mode

    def start(self) -> None:
        self._unsubscribe = [self._state.listen(self._on_input, INPUTS)]
        self._state.update(paths.MODE, self.machine.mode.value, SOURCE)
        self.evaluate()

    def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()  # type: ignore[operator]
        self._unsubscribe = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def inputs(self) -> ModeInputs:
        value = self._state.value
        ignition = value(paths.LOW_VOLTAGE_STATE)
        gear = value(paths.CURRENT_GEAR)
        brake = value(paths.PARKING_BRAKE)
        parking = None if gear is None and brake is None else (gear == paths.GEAR_PARK or brake is True)
        return ModeInputs(
            ignition=None if ignition is None else ignition in paths.IGNITION_ON_STATES,
            speed=_number(value(paths.SPEED)),
            engine_rpm=_number(value(paths.ENGINE_SPEED)),
            parking_signal=parking,
        )

    def evaluate(self) -> None:
        before = self.machine.mode
        mode, due = self.machine.step(self.inputs(), self._clock.now())
        if mode is not before:
            log.info("vehicle mode: %s → %s", before.value, mode.value)
            self._state.update(paths.MODE, mode.value, SOURCE)
        self._schedule(due)

    def _on_input(self, event: StateEvent) -> None:
        self.evaluate()

    def _schedule(self, due: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if due is not None:
            delay = self._clock.real_delay(due - self._clock.now()) + 0.001
            self._timer = asyncio.get_running_loop().call_later(delay, self.evaluate)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
