"""What a validated profile holds. ``agent.profile.loader`` builds these from TOML.

Each section declares its defaults here, next to the code that reads it.
Paths are absolute once loaded (relative ones are taken from the profile's folder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The vehicle inputs' sections are declared next to the feeds that read them; the profile holds them.
from agent.vehicle.config import CanConfig as CanConfig, GnssConfig as GnssConfig, ObdConfig as ObdConfig
from agent.vehicle.config import ObdPid as ObdPid, SignalMapping as SignalMapping
from agent.vehicle.mode import ModeSettings


@dataclass(frozen=True)
class AccountConfig:
    jid: str
    password: str = field(repr=False)
    host: str | None = None
    port: int | None = None
    ca_file: Path | None = None  # None: the system's trusted CAs
    resource: str = "headunit"
    tls: str = "starttls"  # "starttls" (XMPP port) or "direct" (XEP-0368 Direct TLS port)
    pin_sha256: tuple[str, ...] = ()  # base64 SHA-256 of the server key's SPKI; any one must match
    allow_plain: bool = False  # SASL PLAIN (inside TLS only) when the server offers no SCRAM


@dataclass(frozen=True)
class CanFrame:
    """One frame an action sends, from candump notation ``123#0102`` (3 hex digits: standard id, 8: extended)."""

    arbitration_id: int
    data: bytes
    extended: bool = False


@dataclass(frozen=True)
class CanAction:
    """A vehicle action an operator may run as a command: frames to send, and what must hold first."""

    name: str  # the command's node, e.g. "lock"
    title: str
    frames: tuple[CanFrame, ...]
    gap: float = 0.05  # s between frames
    confirm: str | None = None  # a yes/no question the operator answers before anything is sent
    # Interlocks, checked in this order just before sending:
    speed_zero: bool = True  # Vehicle.Speed is known, fresh and 0
    modes: tuple[str, ...] = ()  # the vehicle mode is one of these (empty: any)
    driver_confirms: bool = False  # the driver accepts it on the dashboard
    driver_timeout: float = 30.0  # s the driver has to answer; no answer is a refusal


@dataclass(frozen=True)
class GpioConfig:
    pin_factory: str | None = None  # None: gpiozero's default; "mock" for MockFactory
    ignition_pin: int | str | None = None
    ignition_active_high: bool = True
    ignition_bounce: float = 0.05
    led_pin: int | str | None = None
    button_pin: int | str | None = None


@dataclass(frozen=True)
class VehicleConfig:
    can: CanConfig | None = None
    obd: ObdConfig | None = None
    gnss: GnssConfig | None = None
    gpio: GpioConfig | None = None
    actions: tuple[CanAction, ...] = ()


@dataclass(frozen=True)
class PresenceRule:
    """How one vehicle mode shows: XMPP show (None = available, "unavailable" = appear offline),
    status template, priority."""

    show: str | None
    status: str  # what the fleet's operators see (directed presence)
    priority: int = 0
    public_status: str | None = None  # what everyone else sees; None: ``status`` without place/speed/direction


def _default_presence() -> dict[str, PresenceRule]:
    return {
        "off": PresenceRule("xa", "Ignition off"),
        "parked": PresenceRule(None, "Parked · {road}"),
        "idling": PresenceRule("away", "Engine running · stationary"),
        "driving": PresenceRule("dnd", "Driving · {speed:.0f} km/h · {road} {direction}"),
    }


@dataclass(frozen=True)
class PresencePolicyConfig:
    rules: dict[str, PresenceRule] = field(default_factory=_default_presence)
    min_text_interval: float = 30.0  # s between updates that change only the status text
    places: Path | None = None  # CSV of lat,lon,name: fills {road} ("Parked · Main St")
    place_distance: float = 300.0  # m: farther than this from every place, {road} is unknown


@dataclass(frozen=True)
class PoliciesConfig:
    mode: ModeSettings = field(default_factory=ModeSettings)
    presence: PresencePolicyConfig = field(default_factory=PresencePolicyConfig)


@dataclass(frozen=True)
class FleetConfig:
    operators: tuple[str, ...] = ()  # bare JIDs, or "@domain" for a whole domain


@dataclass(frozen=True)
class SessionConfig:
    """Keeping the XMPP session alive on a mobile link."""

    ping_interval: float = 60.0  # s of silence before an XEP-0199 ping
    ping_timeout: float = 20.0  # s without an answer before the link counts as dead
    reconnect_initial: float = 1.0  # s before the first reconnection attempt
    reconnect_cap: float = 300.0  # s: the longest wait between attempts (jittered)
    resume: bool = True  # XEP-0198 stream resumption


@dataclass(frozen=True)
class StorageConfig:
    data_dir: Path | None = None  # None: $STATE_DIRECTORY, else ~/.local/state/headunit


@dataclass(frozen=True)
class TelemetryRule:
    """When a VSS path is sampled: every ``every`` s, and/or on a change of at least ``change``."""

    path: str
    every: float | None = None
    change: float | None = None  # numbers: absolute change; other values: any change
    min_interval: float = 1.0  # s: never more often than this


@dataclass(frozen=True)
class TelemetryConfig:
    service: str | None = None  # PubSub service JID, e.g. "pubsub.fleet.example"; None: off
    node: str = "headunit/telemetry/{jid}"  # {jid}: the car's bare JID
    rules: tuple[TelemetryRule, ...] = ()
    batch_max: int = 64  # samples per publish
    batch_delay: float = 5.0  # s a sample may wait for others to share its publish
    retention: float = 86400.0  # s acknowledged samples stay in the local store


@dataclass(frozen=True)
class LocationConfig:
    """XEP-0080 user location through PEP."""

    enabled: bool = True
    every: float = 30.0  # s between publishes while moving
    min_distance: float = 25.0  # m moved before a publish is worth it
    precision: int = 4  # decimals of latitude/longitude (4 ≈ 11 m)
    access: str = "operators"  # "operators" (whitelist) or "contacts" (presence subscribers)


@dataclass(frozen=True)
class ContactsConfig:
    unknown: str = "pending"  # subscription from a non-operator: "pending" (driver decides) or "refuse"
    operator_group: str = "Fleet"  # roster group the operators are put in


@dataclass(frozen=True)
class ControlConfig:
    socket: Path | None = None  # the local control socket; None: <data_dir>/control.sock


@dataclass(frozen=True)
class CameraConfig:
    """The cabin or road camera: ``photo`` takes stills with it (calls will reuse it)."""

    backend: str  # "file" (JPEG files: tests, the demo) or "v4l2" (a real camera, through ffmpeg)
    path: Path | None = None  # file: one JPEG or a folder of them (taken in turn)
    device: str = "/dev/video0"  # v4l2
    width: int = 1280  # v4l2: the size asked of the device
    height: int = 720
    timeout: float = 10.0  # s for one still


DEFAULT_QUICK_REPLIES = ("Driving, will answer later", "On my way", "Call me")


@dataclass(frozen=True)
class DashboardConfig:
    """The touchscreen's web UI, served by the agent to a kiosk browser on the same board."""

    enabled: bool = True
    host: str = "127.0.0.1"  # a non-loopback address needs allow_remote = true
    port: int = 8470  # 0: any free port (tests)
    allow_remote: bool = False
    theme: str = "auto"  # "auto" (day 07:00-19:00 local time), "day" or "night"
    quick_replies: tuple[str, ...] = DEFAULT_QUICK_REPLIES  # what the driver may send while moving


@dataclass(frozen=True)
class ServiceConfig:
    """Running under systemd: when the agent says it is ready, and when it stops feeding the watchdog."""

    ready_timeout: float = 30.0  # s: READY=1 at the latest this long after start, online or not
    watchdog: bool = True  # WATCHDOG=1 only while healthy; false: whenever the event loop runs
    loop_lag_limit: float = 5.0  # s the event loop may be late before the watchdog goes unfed


@dataclass(frozen=True)
class PowerConfig:
    """Powering the board off after the ignition goes off (agent/power.py).

    Off unless the profile says so: an agent on a desk, or replaying a drive that ends
    with the ignition off, must never power its machine off. A car's profile sets
    ``enabled = true``.
    """

    enabled: bool = False
    shutdown_delay: float = 120.0  # s on the hold-up supply between ignition off and power off
    poweroff_command: tuple[str, ...] = ("systemctl", "poweroff")  # run without a shell


@dataclass(frozen=True)
class SimulationConfig:
    speed: float = 1.0  # vehicle clock and replays run this many times faster than real time
    # Start the replays only once XMPP is online (or after this many seconds offline),
    # so a watcher sees the whole drive; 0 starts them at once.
    wait_for_online: float = 0.0


@dataclass(frozen=True)
class Profile:
    file: Path
    name: str
    account: AccountConfig
    vehicle: VehicleConfig
    policies: PoliciesConfig = field(default_factory=PoliciesConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    location: LocationConfig = field(default_factory=LocationConfig)
    contacts: ContactsConfig = field(default_factory=ContactsConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    camera: CameraConfig | None = None
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    power: PowerConfig = field(default_factory=PowerConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
