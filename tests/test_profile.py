"""The profile loader: the bundled examples load, defaults and relative paths come through,
environment overrides win, and each kind of mistake is refused with one ProfileError that
names the file, the exact key path and what was expected. Real files in tmp_path, real
cantools parsing, no mocks."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cantools
import pytest

from agent.errors import ProfileError
from agent.profile import OBD_DEFAULT_PATHS, load_profile
from agent.profile.model import FleetConfig, ObdPid, PoliciesConfig, PresenceRule, SimulationConfig
from agent.vehicle.mode import ModeSettings

PROFILES = Path(__file__).resolve().parent.parent / "profiles"

DBC = """VERSION ""

NS_ :

BS_:

BU_: ECU

BO_ 256 EngineData: 8 ECU
 SG_ EngineSpeed : 0|16@1+ (0.25,0) [0|16383.75] "rpm" Vector__XXX
 SG_ CoolantTemp : 16|8@1+ (1,-40) [-40|215] "degC" Vector__XXX

BO_ 257 VehicleDynamics: 8 ECU
 SG_ VehicleSpeed : 0|16@1+ (0.01,0) [0|655.35] "km/h" Vector__XXX
"""

HEADER = '[profile]\nname = "Test car"\n\n'
ACCOUNT = '[account]\njid = "car@localhost"\npassword = "secret"\n\n'
CAN = '[vehicle.can]\ninterface = "virtual"\ndbc = "car.dbc"\n'
SIGNAL = '[[vehicle.can.signals]]\npath = "Vehicle.Speed"\nmessage = "VehicleDynamics"\nsignal = "VehicleSpeed"\n'


def write(folder: Path, text: str, name: str = "car.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def car(tmp_path: Path) -> Path:
    """A folder with a small DBC and a replay log next to where the profile goes."""
    write(tmp_path, DBC, "car.dbc")
    write(tmp_path, "(0.0) vcan0 100#0000000000000000\n", "drive.log")
    write(tmp_path, "$GPGGA,,,,,,0,,,,,,,,*66\n", "drive.nmea")
    return tmp_path


# --- the bundled examples -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["example-socketcan.toml", "example-obd.toml", "example-j1939-truck.toml"])
def test_bundled_examples_load(name: str) -> None:
    """Tried: each example with HEADUNIT_PASSWORD set. Kept: the account, a CAN bus on can0, a GNSS."""
    profile = load_profile(PROFILES / name, environ={"HEADUNIT_PASSWORD": "pw"})
    assert profile.file == PROFILES / name
    assert profile.account.password == "pw"
    assert profile.account.jid.endswith("@localhost")
    assert profile.vehicle.can is not None and profile.vehicle.can.channel == "can0"
    assert profile.vehicle.gnss is not None and profile.vehicle.gnss.source == "serial"


def test_socketcan_example_maps_the_dbc() -> None:
    """Tried: the MCP2515 example. Kept: its DBC, speed/rpm/doors/fuel/ignition mappings, GPIO pins."""
    profile = load_profile(PROFILES / "example-socketcan.toml", environ={"HEADUNIT_PASSWORD": "pw"})
    can, gnss, gpio = profile.vehicle.can, profile.vehicle.gnss, profile.vehicle.gpio
    assert can is not None and gnss is not None and gpio is not None
    assert (can.interface, can.bitrate, can.dbc) == ("socketcan", 500000, PROFILES / "dbc" / "car.dbc")
    paths = {s.path for s in can.signals}
    assert {"Vehicle.Speed", "Vehicle.Powertrain.CombustionEngine.Speed",
            "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen", "Vehicle.Powertrain.FuelSystem.RelativeLevel",
            "Vehicle.LowVoltageSystemState"} <= paths
    assert (gnss.port, gnss.baudrate) == ("/dev/serial0", 9600)
    assert (gpio.ignition_pin, gpio.led_pin, gpio.button_pin) == (22, 17, 27)


def test_obd_example_polls_pids_with_default_paths() -> None:
    """Tried: the OBD example. Kept: no DBC, PIDs with default paths, USB GNSS at 115200."""
    profile = load_profile(PROFILES / "example-obd.toml", environ={"HEADUNIT_PASSWORD": "pw"})
    can, obd, gnss = profile.vehicle.can, profile.vehicle.obd, profile.vehicle.gnss
    assert can is not None and obd is not None and gnss is not None
    assert can.dbc is None and can.signals == ()
    assert ObdPid(0x0D, "Vehicle.Speed") in obd.pids
    assert ObdPid(0x42, OBD_DEFAULT_PATHS[0x42]) in obd.pids  # written as the string "0x42"
    assert (gnss.port, gnss.baudrate) == ("/dev/ttyACM0", 115200)


def test_truck_example_uses_a_j1939_dbc() -> None:
    """Tried: the truck example. Kept: 250 kbit/s, and every mapped message is J1939 per cantools."""
    profile = load_profile(PROFILES / "example-j1939-truck.toml", environ={"HEADUNIT_PASSWORD": "pw"})
    can = profile.vehicle.can
    assert can is not None and can.bitrate == 250000 and can.dbc is not None
    db = cantools.database.load_file(str(can.dbc))
    for mapping in can.signals:
        message = (db.get_message_by_frame_id(mapping.message) if isinstance(mapping.message, int)
                   else db.get_message_by_name(mapping.message))
        assert message.protocol == "j1939" and message.is_extended_frame
    assert db.get_message_by_name("EEC1").frame_id == 0x0CF00400
    assert db.get_message_by_name("ET1").frame_id == 0x18FEEE00


# --- what a good profile keeps ------------------------------------------------------------

def test_defaults_come_through(tmp_path: Path) -> None:
    """Tried: the smallest profile plus bare CAN and gpsd sections. Kept: the model's defaults."""
    path = write(tmp_path, HEADER + ACCOUNT
                 + '[vehicle.can]\ninterface = "virtual"\n[vehicle.gnss]\nsource = "gpsd"\n')
    profile = load_profile(str(path), environ={})
    assert profile.name == "Test car"
    assert (profile.account.resource, profile.account.port, profile.account.ca_file) == ("headunit", None, None)
    can, gnss = profile.vehicle.can, profile.vehicle.gnss
    assert can is not None and gnss is not None
    assert (can.channel, can.bitrate, can.fd, can.stale_after, can.signals) == ("can0", None, False, 2.0, ())
    assert (gnss.host, gnss.gpsd_port, gnss.stale_after) == ("127.0.0.1", 2947, 5.0)
    assert profile.vehicle.obd is None and profile.vehicle.gpio is None
    assert profile.policies == PoliciesConfig()
    assert profile.fleet == FleetConfig() and profile.simulation == SimulationConfig()


def test_relative_paths_are_taken_from_the_profile_folder(car: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tried: a profile in a sub-folder naming ../car.dbc and secrets/pw, loaded from another cwd.
    Kept: absolute paths under the profile's folder and the password file's first line, stripped."""
    folder = car / "profiles"
    write(folder / "secrets", "  s3cret \nsecond line\n", "pw")
    path = write(folder, HEADER + '[account]\njid = "car@localhost"\npassword_file = "secrets/pw"\n'
                 + '[vehicle.can]\ninterface = "replay"\nreplay_file = "../drive.log"\ndbc = "../car.dbc"\n'
                 + SIGNAL + '[vehicle.gnss]\nsource = "replay"\nfile = "../drive.nmea"\n')
    elsewhere = car / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    profile = load_profile(os.path.relpath(path), environ={})
    assert profile.file == path
    assert profile.account.password == "s3cret"
    can, gnss = profile.vehicle.can, profile.vehicle.gnss
    assert can is not None and gnss is not None
    assert (can.dbc, can.replay_file, gnss.file) == (car / "car.dbc", car / "drive.log", car / "drive.nmea")


def test_signal_mappings_keep_names_ids_and_transforms(car: Path) -> None:
    """Tried: one mapping by name with scale/offset/unit/datatype, one by frame id.
    Kept: both, with their fields as written."""
    path = write(car, HEADER + ACCOUNT + CAN + SIGNAL
                 + 'scale = 0.5\noffset = -1\nunit = "km/h"\ndatatype = "float"\n'
                 + '[[vehicle.can.signals]]\npath = "Vehicle.Powertrain.CombustionEngine.Speed"\n'
                 + 'message = 0x100\nsignal = "EngineSpeed"\n')
    can = load_profile(path, environ={}).vehicle.can
    assert can is not None
    first, second = can.signals
    assert (first.message, first.scale, first.offset, first.unit, first.datatype) == (
        "VehicleDynamics", 0.5, -1.0, "km/h", "float")
    assert (second.message, second.signal, second.scale) == (0x100, "EngineSpeed", 1.0)


def test_obd_pids_in_every_form(car: Path) -> None:
    """Tried: an int, a "0x.." string and a table with its own path. Kept: PIDs and their paths."""
    path = write(car, HEADER + ACCOUNT + '[vehicle.can]\ninterface = "virtual"\n[vehicle.obd]\n'
                 + 'pids = [0x0C, "0x05", { pid = 0x0B, path = "Vehicle.OBD.MAP" }]\ninterval = 2\n')
    obd = load_profile(path, environ={}).vehicle.obd
    assert obd is not None
    assert obd.pids == (ObdPid(0x0C, "Vehicle.Powertrain.CombustionEngine.Speed"),
                        ObdPid(0x05, "Vehicle.Powertrain.CombustionEngine.ECT"),
                        ObdPid(0x0B, "Vehicle.OBD.MAP"))
    assert (obd.interval, obd.timeout) == (2.0, 0.2)


def test_presence_rules_merge_with_defaults(tmp_path: Path) -> None:
    """Tried: a driving rule with only a status, a parked rule 'available' with priority.
    Kept: the driving default's show, None for available, untouched defaults for the rest."""
    path = write(tmp_path, HEADER + ACCOUNT + '[policies.presence]\nmin_text_interval = 10\n'
                 + '[policies.presence.driving]\nstatus = "{speed:.0f} km/h, {rpm:.0f} rpm, {mode}"\n'
                 + '[policies.presence.parked]\nshow = "available"\nstatus = "At {latitude:.3f}"\npriority = 5\n'
                 + '[policies.mode]\nstop_grace = 60\n')
    policies = load_profile(path, environ={}).policies
    rules = policies.presence.rules
    assert rules["driving"] == PresenceRule("dnd", "{speed:.0f} km/h, {rpm:.0f} rpm, {mode}")
    assert rules["parked"] == PresenceRule(None, "At {latitude:.3f}", 5)
    assert rules["off"] == PresenceRule("xa", "Ignition off")
    assert policies.presence.min_text_interval == 10.0
    assert policies.mode == ModeSettings(stop_grace=60.0)


def test_gpio_fleet_and_simulation(tmp_path: Path) -> None:
    """Tried: pin names and numbers, operators by JID and domain, a fast simulation. Kept: all."""
    path = write(tmp_path, HEADER + ACCOUNT
                 + '[vehicle.gpio]\npin_factory = "mock"\nignition_pin = "GPIO22"\nled_pin = "BOARD11"\n'
                 + 'ignition_active_high = false\n'
                 + '[fleet]\noperators = ["ops@localhost", "@fleet.localhost"]\n[simulation]\nspeed = 10\n')
    profile = load_profile(path, environ={})
    gpio = profile.vehicle.gpio
    assert gpio is not None
    assert (gpio.pin_factory, gpio.ignition_pin, gpio.led_pin, gpio.button_pin) == (
        "mock", "GPIO22", "BOARD11", None)
    assert gpio.ignition_active_high is False
    assert profile.fleet.operators == ("ops@localhost", "@fleet.localhost")
    assert profile.simulation.speed == 10.0


def test_environment_overrides_the_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tried: every HEADUNIT_* variable over a file naming an unset password_env; CA file relative to cwd.
    Kept: the environment's values; the file's password source is not consulted."""
    write(tmp_path / "pki", "-----BEGIN CERTIFICATE-----\n", "ca.pem")
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "profiles", HEADER
                 + '[account]\njid = "car@localhost"\npassword_env = "UNSET_VARIABLE"\n'
                 + 'host = "192.0.2.1"\nport = 5222\n')
    env = {"HEADUNIT_JID": "other@localhost", "HEADUNIT_PASSWORD": " from env ", "HEADUNIT_HOST": "127.0.0.1",
           "HEADUNIT_PORT": " 15222", "HEADUNIT_CA_FILE": "pki/ca.pem"}
    account = load_profile(path, environ=env).account
    assert (account.jid, account.password, account.host, account.port) == (
        "other@localhost", " from env ", "127.0.0.1", 15222)
    assert account.ca_file == tmp_path / "pki" / "ca.pem"


def test_empty_environment_variables_are_ignored(tmp_path: Path) -> None:
    """Tried: HEADUNIT_PORT and HEADUNIT_JID set but empty. Kept: the file's values."""
    path = write(tmp_path, HEADER + ACCOUNT + 'port = 5222\n')
    account = load_profile(path, environ={"HEADUNIT_PORT": "", "HEADUNIT_JID": " "}).account
    assert (account.jid, account.port, account.password) == ("car@localhost", 5222, "secret")


def test_password_env_is_read_from_the_given_environ(tmp_path: Path) -> None:
    """Tried: password_env naming a variable present only in ``environ``. Kept: its value."""
    path = write(tmp_path, HEADER + '[account]\njid = "car@localhost"\npassword_env = "CAR_PW"\n')
    assert load_profile(path, environ={"CAR_PW": "pw1"}).account.password == "pw1"


# --- what a bad profile gets --------------------------------------------------------------

@dataclass
class Mistake:
    text: str  # the whole profile, or None for a missing file
    key: str  # the exact key path the error must name
    expected: str  # a part of what the error says was expected
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


MISTAKES: dict[str, Mistake] = {
    "bad tls mode": Mistake(HEADER + ACCOUNT + 'tls = "ssl"\n', "account.tls", "one of 'starttls', 'direct'"),
    "bad certificate pin": Mistake(HEADER + ACCOUNT + 'pin_sha256 = ["abc"]\n', "account.pin_sha256[0]",
                                   "base64 of a SHA-256 digest"),
    "reconnect cap below initial": Mistake(HEADER + ACCOUNT + '[session]\nreconnect_initial = 10\nreconnect_cap = 5\n',
                                           "session.reconnect_cap", "a number >= reconnect_initial"),
    "telemetry rule without trigger": Mistake(HEADER + ACCOUNT + '[[telemetry.rules]]\npath = "Vehicle.Speed"\n',
                                              "telemetry.rules[0]", "every (seconds), change (threshold) or both"),
    "telemetry rule twice": Mistake(HEADER + ACCOUNT + '[[telemetry.rules]]\npath = "Vehicle.Speed"\nevery = 5\n'
                                    '[[telemetry.rules]]\npath = "Vehicle.Speed"\nchange = 5\n',
                                    "telemetry.rules[1].path", "each path in one rule only"),
    "telemetry node placeholder": Mistake(HEADER + ACCOUNT + '[telemetry]\nnode = "cars/{car}"\n',
                                          "telemetry.node", "only placeholder is {jid}"),
    "location access": Mistake(HEADER + ACCOUNT + '[location]\naccess = "everyone"\n',
                               "location.access", "one of 'operators', 'contacts'"),
    "contacts policy": Mistake(HEADER + ACCOUNT + '[contacts]\nunknown = "accept"\n',
                               "contacts.unknown", "one of 'pending', 'refuse'"),
    "toml syntax error": Mistake(HEADER + '[account]\njid = "car@localhost\n', "line 5, column 21", "valid TOML"),
    "missing required key": Mistake('[profile]\n\n' + ACCOUNT, "profile.name", "the key is required"),
    "missing account jid": Mistake(HEADER + '[account]\npassword = "x"\n', "account.jid", "a bare JID"),
    "wrong type": Mistake(HEADER + ACCOUNT + '[vehicle.can]\ninterface = "virtual"\nbitrate = "500k"\n',
                          "vehicle.can.bitrate", "an integer >= 1"),
    "wrong type for a bool": Mistake(HEADER + ACCOUNT + '[vehicle.can]\ninterface = "virtual"\nfd = "yes"\n',
                                     "vehicle.can.fd", "true or false"),
    "section not a table": Mistake('vehicle = 3\n' + HEADER + ACCOUNT, "vehicle", "a table"),
    "empty string for a section": Mistake('fleet = ""\n' + HEADER + ACCOUNT, "fleet", "a table"),
    "unknown key (typo)": Mistake(HEADER + ACCOUNT + '[vehicle.can]\ninterface = "virtual"\nchanel = "can1"\n',
                                  "vehicle.can.chanel", "a known key (allowed here: interface, channel"),
    "unknown top-level section": Mistake(HEADER + ACCOUNT + '[vehicel.can]\ninterface = "virtual"\n',
                                         "vehicel", "a known key (allowed here: profile, account"),
    "port out of range": Mistake(HEADER + ACCOUNT + 'port = 70000\n', "account.port", "an integer 1..65535"),
    "bad JID": Mistake(HEADER + '[account]\njid = "car@localhost/phone"\npassword = "x"\n',
                       "account.jid", "a bare JID local@domain"),
    "password_env unset": Mistake(HEADER + '[account]\njid = "car@localhost"\npassword_env = "NOPE_PW"\n',
                                  "account.password_env", "a set, non-empty environment variable"),
    "two password sources": Mistake(HEADER + ACCOUNT + 'password_env = "PW"\n',
                                    "account", "exactly one of password_file, password_env, password"),
    "no password source": Mistake(HEADER + '[account]\njid = "car@localhost"\n',
                                  "account", "exactly one of password_file"),
    "password file empty": Mistake(HEADER + '[account]\njid = "car@localhost"\npassword_file = "pw"\n',
                                   "account.password_file", "first line is the password", files={"pw": "\n"}),
    "ca_file missing": Mistake(HEADER + ACCOUNT + 'ca_file = "pki/ca.pem"\n',
                               "account.ca_file", "a path to an existing file"),
    "bad port override": Mistake(HEADER + ACCOUNT, "HEADUNIT_PORT (environment)", "an integer 1..65535",
                                 env={"HEADUNIT_PORT": "fifty"}),
    "bad JID override": Mistake(HEADER + ACCOUNT, "HEADUNIT_JID (environment)", "a bare JID",
                                env={"HEADUNIT_JID": "no-at-sign"}),
    "missing CA override": Mistake(HEADER + ACCOUNT, "HEADUNIT_CA_FILE (environment)", "an existing file",
                                   env={"HEADUNIT_CA_FILE": "/nonexistent/ca.pem"}),
    "unknown CAN interface": Mistake(HEADER + ACCOUNT + '[vehicle.can]\ninterface = "socketcam"\n',
                                     "vehicle.can.interface", "one of 'replay'"),
    "dbc missing": Mistake(HEADER + ACCOUNT + '[vehicle.can]\ninterface = "virtual"\ndbc = "nope.dbc"\n',
                           "vehicle.can.dbc", "a path to an existing file"),
    "dbc unparseable": Mistake(HEADER + ACCOUNT + '[vehicle.can]\ninterface = "virtual"\ndbc = "bad.dbc"\n',
                               "vehicle.can.dbc", "cantools can parse", files={"bad.dbc": "BO_ what is this\n"}),
    "signals without dbc": Mistake(HEADER + ACCOUNT + '[vehicle.can]\ninterface = "virtual"\n' + SIGNAL,
                                   "vehicle.can.signals", "a dbc key"),
    "DBC signal not in message": Mistake(
        HEADER + ACCOUNT + CAN + SIGNAL + SIGNAL.replace('"VehicleSpeed"', '"EngineSpeed"'),
        "vehicle.can.signals[1].signal", "a signal of message VehicleDynamics (VehicleSpeed)"),
    "unknown message": Mistake(HEADER + ACCOUNT + CAN + SIGNAL.replace("VehicleDynamics", "VehicleDynamic"),
                               "vehicle.can.signals[0].message", "a message name or frame id defined in car.dbc"),
    "unknown frame id": Mistake(HEADER + ACCOUNT + CAN + SIGNAL.replace('"VehicleDynamics"', "0x7FF"),
                                "vehicle.can.signals[0].message", "a message name or frame id"),
    "bad VSS path": Mistake(HEADER + ACCOUNT + CAN + SIGNAL.replace('"Vehicle.Speed"', '"Speed"'),
                            "vehicle.can.signals[0].path", "a VSS path"),
    "bad datatype": Mistake(HEADER + ACCOUNT + CAN + SIGNAL + 'datatype = "double"\n',
                            "vehicle.can.signals[0].datatype", "one of 'boolean', 'int', 'float', 'string'"),
    "replay without replay_file": Mistake(HEADER + ACCOUNT + '[vehicle.can]\ninterface = "replay"\n',
                                          "vehicle.can.replay_file", "the key is required"),
    "replay_file with another interface": Mistake(
        HEADER + ACCOUNT + '[vehicle.can]\ninterface = "virtual"\nreplay_file = "drive.log"\n',
        "vehicle.can.replay_file", 'interface = "replay"'),
    "replay_file bad suffix": Mistake(
        HEADER + ACCOUNT + '[vehicle.can]\ninterface = "replay"\nreplay_file = "drive.nmea"\n',
        "vehicle.can.replay_file", "ending in .log / .asc / .blf"),
    "data_bitrate without fd": Mistake(
        HEADER + ACCOUNT + '[vehicle.can]\ninterface = "virtual"\ndata_bitrate = 2000000\n',
        "vehicle.can.data_bitrate", "fd = true"),
    "obd without can": Mistake(HEADER + ACCOUNT + '[vehicle.obd]\npids = [0x0C]\n',
                               "vehicle.obd", "[vehicle.can]"),
    "OBD pid with no path": Mistake(
        HEADER + ACCOUNT + '[vehicle.can]\ninterface = "virtual"\n[vehicle.obd]\npids = [0x0C, 0x0B]\n',
        "vehicle.obd.pids[1]", "a PID with a default path"),
    "OBD table pid with no path": Mistake(
        HEADER + ACCOUNT + '[vehicle.can]\ninterface = "virtual"\n[vehicle.obd]\npids = [{ pid = "0x0b" }]\n',
        "vehicle.obd.pids[0].path", "PID 0x0B has no default path"),
    "OBD pid the driver cannot decode": Mistake(
        HEADER + ACCOUNT + '[vehicle.can]\ninterface = "virtual"\n[vehicle.obd]\n'
        + 'pids = [{ pid = 0x22, path = "Vehicle.OBD.FuelRailPressure" }]\n',
        "vehicle.obd.pids[0].pid", "a PID the OBD driver decodes (0x04, 0x05"),
    "OBD pid out of range": Mistake(
        HEADER + ACCOUNT + '[vehicle.can]\ninterface = "virtual"\n[vehicle.obd]\npids = [0x0C, 0x100]\n',
        "vehicle.obd.pids[1]", "a PID 0x01..0xFF"),
    "OBD pid twice": Mistake(
        HEADER + ACCOUNT + '[vehicle.can]\ninterface = "virtual"\n[vehicle.obd]\npids = [0x0C, "0x0c"]\n',
        "vehicle.obd.pids[1]", "each PID listed once"),
    "bad GNSS source": Mistake(HEADER + ACCOUNT + '[vehicle.gnss]\nsource = "nmea"\n',
                               "vehicle.gnss.source", "one of 'serial', 'gpsd', 'replay'"),
    "serial GNSS without port": Mistake(HEADER + ACCOUNT + '[vehicle.gnss]\nsource = "serial"\n',
                                       "vehicle.gnss.port", "the key is required"),
    "bad baudrate": Mistake(HEADER + ACCOUNT
                            + '[vehicle.gnss]\nsource = "serial"\nport = "/dev/ttyS0"\nbaudrate = 9601\n',
                            "vehicle.gnss.baudrate", "one of 4800, 9600"),
    "GNSS key for another source": Mistake(HEADER + ACCOUNT + '[vehicle.gnss]\nsource = "gpsd"\nbaudrate = 9600\n',
                                           "vehicle.gnss.baudrate", 'source = "serial"'),
    "bad pin": Mistake(HEADER + ACCOUNT + '[vehicle.gpio]\nignition_pin = "PIN22"\n',
                       "vehicle.gpio.ignition_pin", "a BCM pin number 0..53"),
    "pin used twice": Mistake(HEADER + ACCOUNT + '[vehicle.gpio]\nignition_pin = 22\nbutton_pin = "GPIO22"\n',
                              "vehicle.gpio.button_pin", "a pin that ignition_pin does not use already"),
    "unknown presence placeholder": Mistake(
        HEADER + ACCOUNT + '[policies.presence.driving]\nstatus = "Driving at {sped:.0f}"\n',
        "policies.presence.driving.status", "({sped} is unknown)"),
    "unformattable status": Mistake(
        HEADER + ACCOUNT + '[policies.presence.idling]\nstatus = "Idle {mode:.0f}"\n',
        "policies.presence.idling.status", "that formats"),
    "unknown presence mode": Mistake(HEADER + ACCOUNT + '[policies.presence.sleeping]\nshow = "xa"\n',
                                     "policies.presence.sleeping", "allowed here: min_text_interval, places, place_distance, off"),
    "bad show": Mistake(HEADER + ACCOUNT + '[policies.presence.parked]\nshow = "online"\n',
                        "policies.presence.parked.show", "one of 'available', 'chat', 'away', 'xa', 'dnd'"),
    "priority out of range": Mistake(HEADER + ACCOUNT + '[policies.presence.off]\npriority = 200\n',
                                     "policies.presence.off.priority", "an integer -128..127"),
    "negative mode setting": Mistake(HEADER + ACCOUNT + '[policies.mode]\nstop_grace = -5\n',
                                     "policies.mode.stop_grace", "a number >= 0"),
    "bad operator": Mistake(HEADER + ACCOUNT + '[fleet]\noperators = ["ops@localhost", "ops"]\n',
                            "fleet.operators[1]", 'a bare JID or "@domain"'),
    "zero simulation speed": Mistake(HEADER + ACCOUNT + '[simulation]\nspeed = 0\n',
                                     "simulation.speed", "a number > 0"),
}


@pytest.mark.parametrize("mistake", MISTAKES.values(), ids=MISTAKES.keys())
def test_mistakes_are_refused_naming_file_key_and_expectation(car: Path, mistake: Mistake) -> None:
    """Tried: one profile with one mistake. Kept: one ProfileError naming file, key path, expectation."""
    for name, text in mistake.files.items():
        write(car, text, name)
    path = write(car, mistake.text, "mistake.toml")
    with pytest.raises(ProfileError) as caught:
        load_profile(path, environ=mistake.env)
    error = caught.value
    assert (error.file, error.key) == (str(path), mistake.key)
    assert mistake.expected in error.expected
    assert str(error).startswith(f"{path}: {mistake.key}: expected ")
    assert mistake.expected in str(error)


def test_missing_file_is_a_profile_error(tmp_path: Path) -> None:
    """Tried: a path with no file. Kept: a ProfileError naming that file."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ProfileError) as caught:
        load_profile(path, environ={})
    assert caught.value.file == str(path)
    assert str(caught.value) == f"{path}: expected an existing profile file (no such file)"


def test_error_shows_what_was_found(tmp_path: Path) -> None:
    """Tried: port = 70000. Kept: the value in the message, so the reader sees what is wrong."""
    path = write(tmp_path, HEADER + ACCOUNT + "port = 70000\n")
    with pytest.raises(ProfileError, match=r"account\.port: expected an integer 1\.\.65535, found 70000$"):
        load_profile(path, environ={})


def test_a_bool_is_not_a_number(tmp_path: Path) -> None:
    """Tried: simulation.speed = true (a Python int subclass). Kept: refused as not a number."""
    path = write(tmp_path, HEADER + ACCOUNT + "[simulation]\nspeed = true\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(path, environ={})
    assert (caught.value.key, caught.value.found) == ("simulation.speed", True)


def test_session_telemetry_location_contacts_sections(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, HEADER + ACCOUNT + 'tls = "direct"\n'
                                 'pin_sha256 = ["' + "A" * 43 + '="]\nallow_plain = true\n'
                                 '[session]\nping_interval = 30\nping_timeout = 10\n'
                                 '[storage]\ndata_dir = "state"\n'
                                 '[telemetry]\nservice = "pubsub.localhost"\nbatch_max = 10\n'
                                 '[[telemetry.rules]]\npath = "Vehicle.Speed"\nevery = 10\nchange = 5\n'
                                 '[location]\nprecision = 3\naccess = "contacts"\n'
                                 '[contacts]\nunknown = "refuse"\n'))
    assert (profile.account.tls, profile.account.allow_plain) == ("direct", True)
    assert profile.session.ping_timeout == 10 and profile.session.reconnect_cap == 300
    assert profile.storage.data_dir == tmp_path / "state"
    assert profile.telemetry.service == "pubsub.localhost" and profile.telemetry.batch_max == 10
    rule = profile.telemetry.rules[0]
    assert (rule.path, rule.every, rule.change, rule.min_interval) == ("Vehicle.Speed", 10, 5, 1.0)
    assert (profile.location.precision, profile.location.access) == (3, "contacts")
    assert profile.contacts.unknown == "refuse"


def test_obd_default_paths_are_vss_paths() -> None:
    """Tried: the PID table. Kept: the required PIDs, each mapped to a Vehicle.* path."""
    required = {0x04, 0x05, 0x0C, 0x0D, 0x0F, 0x10, 0x11, 0x1F, 0x2F, 0x42, 0x46, 0x5C}
    assert required <= set(OBD_DEFAULT_PATHS)
    assert all(path.startswith("Vehicle.") for path in OBD_DEFAULT_PATHS.values())
    assert OBD_DEFAULT_PATHS[0x0D] == "Vehicle.Speed"


def test_local_only_loading_needs_neither_the_password_nor_the_ca_file(tmp_path: Path) -> None:
    """headunit audit / contacts read local state: a fresh clone without run/ must still work."""
    profile_file = write(tmp_path, HEADER + '[account]\njid = "car@localhost"\npassword_file = "missing.pw"\n'
                         'ca_file = "missing/ca.pem"\n[storage]\ndata_dir = "state"\n')
    with pytest.raises(ProfileError, match="password_file"):
        load_profile(profile_file, environ={})
    profile = load_profile(profile_file, environ={}, local_only=True)
    assert profile.account.jid == "car@localhost" and profile.account.ca_file is None
    assert profile.storage.data_dir == tmp_path / "state"
