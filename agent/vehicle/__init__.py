"""One vehicle state keyed by COVESA VSS paths, and what is derived from it."""

from agent.vehicle.mode import ModeInputs, ModeMachine, ModeSettings, VehicleMode
from agent.vehicle.state import Reading, StateEvent, Value, VehicleState

__all__ = [
    "ModeInputs",
    "ModeMachine",
    "ModeSettings",
    "Reading",
    "StateEvent",
    "Value",
    "VehicleMode",
    "VehicleState",
]
