"""Reads a profile TOML file into ``agent.profile.model``, refusing a bad one with one ProfileError.

Every refusal names the file, the dotted key path and what was expected, so a typo
never passes silently. Loading reads only the files the profile names (password
file, DBC): no devices, no network, no logging. Defaults live in the model.
"""

from __future__ import annotations

import dataclasses
import os
import re
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agent.errors import ProfileError
from agent.profile.model import (
    AccountConfig,
    CanAction,
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
from agent.profile import actions, sections
from agent.profile.table import Table, field_names, is_int, present, read_toml
from agent.vehicle.mode import ModeSettings, VehicleMode

OBD_DEFAULT_PATHS: Mapping[int, str] = MappingProxyType({
    0x04: "Vehicle.OBD.EngineLoad",
    0x05: "Vehicle.Powertrain.CombustionEngine.ECT",
    0x0C: "Vehicle.Powertrain.CombustionEngine.Speed",
    0x0D: "Vehicle.Speed",
    0x0F: "Vehicle.OBD.IntakeTemp",
    0x10: "Vehicle.OBD.MAF",
    0x11: "Vehicle.OBD.ThrottlePosition",
    0x1F: "Vehicle.OBD.RunTime",
    0x2F: "Vehicle.Powertrain.FuelSystem.RelativeLevel",
    0x42: "Vehicle.OBD.ControlModuleVoltage",
    0x46: "Vehicle.Exterior.AirTemperature",
    0x5C: "Vehicle.Powertrain.CombustionEngine.EOT",
})
"""Where an OBD-II mode 01 PID's value goes when the profile names no path."""

_DOMAIN = r"[\w-]+(?:\.[\w-]+)*"
_BARE_JID = re.compile(rf"[^\s@/\"&'<>:]+@{_DOMAIN}")
_OPERATOR = re.compile(rf"(?:[^\s@/\"&'<>:]+)?@{_DOMAIN}")
_VSS_PATH = re.compile(r"Vehicle(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_HEX_PID = re.compile(r"0[xX][0-9a-fA-F]{1,2}")
_PIN_NAME = re.compile(r"(GPIO|BCM|BOARD|WPI|J8:)?(\d+)")

_JID_WHAT = "a bare JID local@domain (no /resource)"
_VSS_WHAT = "a VSS path like Vehicle.Speed"
_PID_WHAT = 'a PID 0x01..0xFF (an integer or a "0x.." string)'
_PIN_WHAT = "a BCM pin number 0..53 or a pin name like 'GPIO22' or 'BOARD15'"

_ROOT_KEYS = ("profile", "account", "vehicle", "policies", "fleet", "simulation", "session", "storage",
              "telemetry", "location", "contacts", "control", "camera", "dashboard", "service",
              "power")
_PASSWORD_KEYS = ("password_file", "password_env", "password")
_ACCOUNT_KEYS = ("jid", *_PASSWORD_KEYS, "host", "port", "ca_file", "resource", "tls", "pin_sha256",
                 "allow_plain")
_PIN = re.compile(r"[A-Za-z0-9+/]{43}=")  # base64 of a SHA-256 digest
_ENVIRONMENT = {  # variable -> [account] key it replaces
    "HEADUNIT_JID": "jid",
    "HEADUNIT_PASSWORD": "password",
    "HEADUNIT_HOST": "host",
    "HEADUNIT_PORT": "port",
    "HEADUNIT_CA_FILE": "ca_file",
}
DASHBOARD_PORT_VARIABLE = "HEADUNIT_DASHBOARD_PORT"
_REPLAY_SUFFIXES = (".log", ".asc", ".blf")
_GNSS_SOURCES = ("serial", "gpsd", "replay")
_GNSS_ONLY_FOR = {"port": "serial", "baudrate": "serial", "host": "gpsd", "gpsd_port": "gpsd",
                  "file": "replay"}
_BAUDRATES = (4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
_PIN_FACTORIES = ("mock", "lgpio", "rpigpio", "pigpio", "native")
_PIN_KEYS = ("ignition_pin", "led_pin", "button_pin")
_DATATYPES = ("boolean", "int", "float", "string")
_MODES = tuple(mode.value for mode in VehicleMode)
_SHOWS = ("available", "chat", "away", "xa", "dnd", "unavailable")
_TEMPLATE_SAMPLE: Mapping[str, object] = MappingProxyType({
    "speed": 87.5, "rpm": 2200.0, "fuel": 64.0, "coolant": 90.0, "mode": "driving",
    "latitude": 48.137, "longitude": 11.575, "road": "Main St", "direction": "northbound",
})


def load_profile(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None,
                 local_only: bool = False) -> Profile:
    """Read and validate one profile; ``environ`` (default os.environ) overrides the account.

    ``local_only``: for tools that only read the agent's local state (``headunit audit``,
    ``headunit contacts``): the account's secrets and CA file are not needed, so they are
    neither read nor required to exist.
    """
    file = os.fspath(path)
    absolute = Path(os.path.abspath(file))
    root = Table(file, absolute.parent, read_toml(file))
    root.only(_ROOT_KEYS)
    meta = root.section("profile", required=True)
    meta.only(("name",))
    env = os.environ if environ is None else environ
    return Profile(absolute, **present(
        name=meta.text("name", required=True),
        account=_account(root.section("account"), env, local_only),
        vehicle=_vehicle(root.section("vehicle")),
        policies=_policies(root.section("policies")),
        fleet=_fleet(root.section("fleet")),
        simulation=_simulation(root.section("simulation")),
        session=sections.session(root.section("session")),
        storage=sections.storage(root.section("storage")),
        telemetry=sections.telemetry(root.section("telemetry")),
        location=sections.location(root.section("location")),
        contacts=sections.contacts(root.section("contacts")),
        control=sections.control(root.section("control")),
        camera=sections.camera(root.section("camera")) if root.has("camera") else None,
        dashboard=sections.dashboard(_dashboard_environment(root.section("dashboard"), env)),
        service=sections.service(root.section("service")),
        power=sections.power(root.section("power")),
    ))


def _account(t: Table, environ: Mapping[str, str], local_only: bool = False) -> AccountConfig:
    t.only(_ACCOUNT_KEYS)  # before the environment, so the file's own typos are caught
    t = _with_environment(t, environ)
    return AccountConfig(**present(
        jid=t.text("jid", required=True, what=_JID_WHAT, pattern=_BARE_JID),
        password="" if local_only else _password(t, environ),
        host=t.text("host"),
        port=t.integer("port", 1, 65535),
        ca_file=None if local_only else t.path("ca_file"),
        resource=t.text("resource"),
        tls=t.choice("tls", ("starttls", "direct")),
        pin_sha256=t.strings("pin_sha256", what="base64 of a SHA-256 digest (44 characters)", pattern=_PIN),
        allow_plain=t.flag("allow_plain"),
    ))


def _with_environment(t: Table, environ: Mapping[str, str]) -> Table:
    """Environment beats the file: HEADUNIT_* variables that are set and non-empty replace keys."""
    data, labels = dict(t.data), {}
    for variable, key in _ENVIRONMENT.items():
        value = environ.get(variable, "")
        if not value.strip():
            continue
        if key == "password":
            for source in _PASSWORD_KEYS:
                data.pop(source, None)
        data[key] = _environment_value(key, value)
        labels[key] = f"{variable} (environment)"
    return Table(t.file, t.base, data, t.prefix, labels)


def _dashboard_environment(t: Table, environ: Mapping[str, str]) -> Table:
    """HEADUNIT_DASHBOARD_PORT replaces [dashboard] port (0: any free port; tests, a second agent)."""
    value = environ.get(DASHBOARD_PORT_VARIABLE, "").strip()
    if not value:
        return t
    return Table(t.file, t.base, {**t.data, "port": int(value) if value.isdecimal() else value}, t.prefix,
                 {"port": f"{DASHBOARD_PORT_VARIABLE} (environment)"})


def _environment_value(key: str, value: str) -> object:
    """A variable's value as the key's type; a password is kept exactly as given."""
    if key == "password":
        return value
    value = value.strip()
    if key == "port" and value.isdecimal():
        return int(value)
    if key == "ca_file":
        return os.path.abspath(value)  # typed in a shell, so relative to the working directory
    return value


def _password(t: Table, environ: Mapping[str, str]) -> str | None:
    given = [key for key in _PASSWORD_KEYS if t.has(key)]
    if len(given) != 1:
        t.fail("", "exactly one of password_file, password_env, password", given or None)
    if given == ["password_file"]:
        return _password_from_file(t)
    if given == ["password_env"]:
        name = t.text("password_env") or ""
        if not environ.get(name):
            t.fail("password_env", "the name of a set, non-empty environment variable", name)
        return environ[name]
    return t.text("password")


def _password_from_file(t: Table) -> str:
    path = t.path("password_file", required=True)
    what = "a readable UTF-8 file whose first line is the password"
    try:
        first = path.read_text(encoding="utf-8").partition("\n")[0].strip() if path else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(t.file, t.key("password_file"), what, f"{path}: {exc}") from exc
    if not first:
        t.fail("password_file", what, f"{path}: empty first line")
    return first


def _vehicle(t: Table) -> VehicleConfig:
    t.only(field_names(VehicleConfig))
    if t.has("obd") and not t.has("can"):
        t.fail("obd", "a [vehicle.can] section as well: OBD-II is polled over CAN")
    return VehicleConfig(
        can=_can(t.section("can")) if t.has("can") else None,
        obd=_obd(t.section("obd")) if t.has("obd") else None,
        gnss=_gnss(t.section("gnss")) if t.has("gnss") else None,
        gpio=_gpio(t.section("gpio")) if t.has("gpio") else None,
        actions=_actions(t),
    )


def _actions(t: Table) -> tuple[CanAction, ...]:
    found = actions.actions(t)
    if found and not t.has("can"):
        t.fail("actions", "a [vehicle.can] section as well: actions are CAN frames to send")
    return found


def _can(t: Table) -> CanConfig:
    t.only(field_names(CanConfig))
    interface = t.choice("interface", _can_interfaces(), required=True)
    fd = t.flag("fd")
    if t.has("data_bitrate") and not fd:
        t.fail("data_bitrate", "fd = true alongside it (it is the CAN FD data phase bit rate)",
               t.data["data_bitrate"])
    is_replay = interface == "replay"
    if t.has("replay_file") and not is_replay:
        t.fail("replay_file", 'interface = "replay" alongside it (no other interface reads it)',
               t.data["replay_file"])
    dbc = t.path("dbc")
    return CanConfig(**present(
        interface=interface,
        channel=t.text("channel"),
        bitrate=t.integer("bitrate", 1),
        fd=fd,
        data_bitrate=t.integer("data_bitrate", 1),
        dbc=dbc,
        signals=_signals(t, _load_dbc(t, dbc) if dbc else None),
        replay_file=t.path("replay_file", required=is_replay, suffixes=_REPLAY_SUFFIXES),
        replay_loop=t.flag("replay_loop"),
        stale_after=t.number("stale_after"),
        **_can_writing(t, interface),
    ))


def _can_writing(t: Table, interface: str) -> dict[str, object]:
    """``write``, and where frames go: a replay cannot be written to, so it needs a write_interface."""
    write = t.flag("write")
    write_interface = t.choice("write_interface", tuple(i for i in _can_interfaces() if i != "replay"))
    if write and interface == "replay" and write_interface is None:
        t.fail("write_interface", 'an interface to send on (e.g. "virtual"): a replay cannot be written to')
    return present(write=write, write_interface=write_interface, write_channel=t.text("write_channel"))


def _can_interfaces() -> tuple[str, ...]:
    from can.interfaces import BACKENDS  # imported here: agent.profile stays cheap to import

    return ("replay", *sorted(BACKENDS))


def _load_dbc(t: Table, path: Path) -> Any:
    """Parse the DBC now, so a broken one is refused at start-up and not on the first frame."""
    import cantools  # slow to import; only profiles with a DBC pay for it

    what = "a CAN database (DBC) that cantools can parse"
    try:
        db = cantools.database.load_file(str(path), strict=False)
    except Exception as exc:  # cantools raises many types on bad input; all mean the same here
        raise ProfileError(t.file, t.key("dbc"), what, f"{path}: {exc}") from exc
    if not isinstance(db, cantools.database.can.Database):
        t.fail("dbc", what, f"{path}: not a CAN database")
    return db


def _signals(t: Table, db: Any) -> tuple[SignalMapping, ...]:
    items = t.tables("signals")
    if items and db is None:
        t.fail("signals", "a dbc key in [vehicle.can] to decode them")
    return tuple(_signal(item, db, t.data.get("dbc")) for item in items)


def _signal(t: Table, db: Any, dbc_name: object) -> SignalMapping:
    t.only(field_names(SignalMapping))
    path = t.text("path", required=True, what=_VSS_WHAT, pattern=_VSS_PATH)
    message = _dbc_message(t, db, dbc_name)
    names = [signal.name for signal in message.signals]
    name = t.text("signal", required=True)
    if name not in names:
        t.fail("signal", f"a signal of message {message.name} ({', '.join(names)})", name)
    return SignalMapping(**present(
        path=path,
        message=t.data["message"],
        signal=name,
        scale=t.number("scale", "any"),
        offset=t.number("offset", "any"),
        unit=t.text("unit"),
        datatype=t.choice("datatype", _DATATYPES),
    ))


def _dbc_message(t: Table, db: Any, dbc_name: object) -> Any:
    what = f"a message name or frame id defined in {dbc_name}"
    ref = t.raw("message", what, required=True)
    try:
        if is_int(ref):
            return db.get_message_by_frame_id(ref)
        if isinstance(ref, str):
            return db.get_message_by_name(ref)
    except KeyError:
        pass
    t.fail("message", what, ref)


def _obd(t: Table) -> ObdConfig:
    t.only(field_names(ObdConfig))
    items = t.array("pids", required=True) or []
    if not items:
        t.fail("pids", "a non-empty array of PIDs", items)
    pids = [_obd_pid(t, f"pids[{i}]", item) for i, item in enumerate(items)]
    seen: set[int] = set()
    for i, entry in enumerate(pids):
        if entry.pid in seen:
            t.fail(f"pids[{i}]", "each PID listed once", f"0x{entry.pid:02X} again")
        seen.add(entry.pid)
    return ObdConfig(tuple(pids), **present(
        interval=t.number("interval"), timeout=t.number("timeout"), stale_after=t.number("stale_after"),
    ))


def _obd_pid(t: Table, name: str, item: object) -> ObdPid:
    """A PID as 0x0C, "0x0C" or { pid = 0x0C, path = "Vehicle..." }."""
    if isinstance(item, dict):
        entry = t.child(name, item)
        entry.only(field_names(ObdPid))
        pid = _pid_number(entry, "pid", entry.raw("pid", _PID_WHAT, required=True))
        path = entry.text("path", what=_VSS_WHAT, pattern=_VSS_PATH) or OBD_DEFAULT_PATHS.get(pid)
        if path is None:
            entry.fail("path", f"{_VSS_WHAT}; PID 0x{pid:02X} has no default path")
        return ObdPid(pid, path)
    pid = _pid_number(t, name, item)
    if pid not in OBD_DEFAULT_PATHS:
        t.fail(name, f"a PID with a default path ({_hex_list(OBD_DEFAULT_PATHS)}) "
               "or a table { pid = ..., path = ... }", f"0x{pid:02X}")
    return ObdPid(pid, OBD_DEFAULT_PATHS[pid])


def _pid_number(t: Table, name: str, value: object) -> int:
    from drivers.can.obd import DECODERS  # refuse here, naming the key, what the driver would refuse

    number = int(value, 16) if isinstance(value, str) and _HEX_PID.fullmatch(value) else value
    if not is_int(number) or not 0x01 <= number <= 0xFF:
        t.fail(name, _PID_WHAT, value)
    if number not in DECODERS:
        t.fail(name, f"a PID the OBD driver decodes ({_hex_list(DECODERS)})", f"0x{number:02X}")
    return number


def _hex_list(pids: Iterable[int]) -> str:
    return ", ".join(f"0x{pid:02X}" for pid in sorted(pids))


def _gnss(t: Table) -> GnssConfig:
    t.only(field_names(GnssConfig))
    source = t.choice("source", _GNSS_SOURCES, required=True)
    for key, owner in _GNSS_ONLY_FOR.items():
        if t.has(key) and owner != source:
            t.fail(key, f'source = "{owner}" (no other source reads it)', t.data[key])
    return GnssConfig(**present(
        source=source,
        port=t.text("port", required=source == "serial", what="a serial device like /dev/serial0"),
        baudrate=t.choice("baudrate", _BAUDRATES),
        host=t.text("host"),
        gpsd_port=t.integer("gpsd_port", 1, 65535),
        file=t.path("file", required=source == "replay"),
        stale_after=t.number("stale_after"),
    ))


def _gpio(t: Table) -> GpioConfig:
    t.only(field_names(GpioConfig))
    pins = {key: _pin(t, key) for key in _PIN_KEYS}
    claimed: dict[tuple[str, int], str] = {}
    for key, pin in pins.items():
        if pin is not None:
            owner = claimed.setdefault(_pin_identity(pin), key)
            if owner != key:
                t.fail(key, f"a pin that {owner} does not use already", pin)
    return GpioConfig(**present(
        pin_factory=t.choice("pin_factory", _PIN_FACTORIES),
        ignition_active_high=t.flag("ignition_active_high"),
        ignition_bounce=t.number("ignition_bounce", ">= 0"),
        **pins,
    ))


def _pin(t: Table, key: str) -> int | str | None:
    value = t.raw(key, _PIN_WHAT)
    if value is None:
        return None
    if is_int(value) and 0 <= value <= 53:
        return int(value)
    if isinstance(value, str) and _PIN_NAME.fullmatch(value):
        return value
    t.fail(key, _PIN_WHAT, value)


def _pin_identity(pin: int | str) -> tuple[str, int]:
    """(numbering, number): GPIO22, BCM22 and 22 are one pin; BOARD15 and J8:15 another numbering."""
    match = _PIN_NAME.fullmatch(str(pin))
    scheme, number = match.groups() if match else (None, "-1")
    return {"BOARD": "board", "J8:": "board", "WPI": "wpi"}.get(scheme or "", "bcm"), int(number)


def _policies(t: Table) -> PoliciesConfig:
    t.only(field_names(PoliciesConfig))
    return PoliciesConfig(**present(
        mode=_mode(t.section("mode")) if t.has("mode") else None,
        presence=_presence(t.section("presence")) if t.has("presence") else None,
    ))


def _mode(t: Table) -> ModeSettings:
    names = field_names(ModeSettings)
    t.only(names)
    return ModeSettings(**present(**{name: t.number(name, ">= 0") for name in names}))


def _presence(t: Table) -> PresencePolicyConfig:
    t.only(("min_text_interval", "places", "place_distance", *_MODES))
    defaults = PresencePolicyConfig().rules
    rules = {mode: _rule(t.section(mode), defaults[mode]) if t.has(mode) else defaults[mode]
             for mode in _MODES}
    places = t.path("places", suffixes=(".csv",))
    if places is not None:
        _check_places(t, places)
    return PresencePolicyConfig(rules, **present(min_text_interval=t.number("min_text_interval", ">= 0"),
                                                 places=places, place_distance=t.number("place_distance")))


def _check_places(t: Table, path: Path) -> None:
    """Read the place names now, so a broken file is refused at start-up."""
    from agent.vehicle.places import Places, PlacesError

    try:
        Places.load(path)
    except PlacesError as exc:
        t.fail("places", "a CSV of lat,lon,name rows", str(exc))


def _rule(t: Table, default: PresenceRule) -> PresenceRule:
    """A mode's presence; the keys it leaves out keep the default rule's values."""
    t.only(field_names(PresenceRule))
    changes = present(status=_template(t, "status"), priority=t.integer("priority", -128, 127),
                      public_status=_template(t, "public_status"))
    if t.has("show"):
        show = t.choice("show", _SHOWS)
        changes["show"] = None if show == "available" else show
    return dataclasses.replace(default, **changes)


def _template(t: Table, name: str) -> str | None:
    """A status template must format with sample numbers and use only known placeholders."""
    known = ", ".join(_TEMPLATE_SAMPLE)
    what = f"a str.format template with placeholders among {known}"
    text = t.raw(name, what)
    if text is None:
        return None
    if not isinstance(text, str):
        t.fail(name, what, text)
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]
        unknown = [field for field in fields if re.split(r"[.\[]", field)[0] not in _TEMPLATE_SAMPLE]
        if not unknown:
            text.format(**_TEMPLATE_SAMPLE)
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
        raise ProfileError(t.file, t.key(name), f"{what} that formats ({exc})", text) from exc
    if unknown:
        t.fail(name, f"placeholders among {known} ({{{unknown[0]}}} is unknown)", text)
    return text


def _fleet(t: Table) -> FleetConfig:
    t.only(field_names(FleetConfig))
    operators = t.strings("operators", what='a bare JID or "@domain"', pattern=_OPERATOR)
    return FleetConfig(**present(operators=operators))


def _simulation(t: Table) -> SimulationConfig:
    t.only(field_names(SimulationConfig))
    return SimulationConfig(**present(speed=t.number("speed"),
                                       wait_for_online=t.number("wait_for_online", ">= 0")))
