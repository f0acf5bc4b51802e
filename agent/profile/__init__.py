"""Vehicle profiles: the validated TOML file that says what this car has and how it shows."""

from agent.profile.loader import OBD_DEFAULT_PATHS, load_profile
from agent.profile.model import (
    AccountConfig,
    CanConfig,
    FleetConfig,
    GnssConfig,
    GpioConfig,
    ObdConfig,
    ObdPid,
    PoliciesConfig,
    PresencePolicyConfig,
    PresenceRule,
    Profile,
    SignalMapping,
    SimulationConfig,
    VehicleConfig,
)

__all__ = [
    "OBD_DEFAULT_PATHS",
    "AccountConfig",
    "CanConfig",
    "FleetConfig",
    "GnssConfig",
    "GpioConfig",
    "ObdConfig",
    "ObdPid",
    "PoliciesConfig",
    "PresencePolicyConfig",
    "PresenceRule",
    "Profile",
    "SignalMapping",
    "SimulationConfig",
    "VehicleConfig",
    "load_profile",
]
