#!/usr/bin/env python3
"""Simulate the demo drive of route.toml; write its CAN log, NMEA log and the vehicle modes it should produce.

Standalone (stdlib, cantools, python-can) and deterministic: the same route, DBC and seed give
byte-identical files, so the logs are committed and ``--check`` proves they are up to date.

    .venv/bin/python profiles/demo/generate_drive.py           # regenerate next to this script
    .venv/bin/python profiles/demo/generate_drive.py --check   # exit 1 if the committed files differ
"""

from __future__ import annotations

import argparse
import bisect
import csv
import dataclasses
import datetime as dt
import io
import json
import math
import random
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUTPUTS = ("drive.log", "drive.nmea", "expected_modes.json", "places.csv")
PLACE_SPACING = 10.0  # m between the named points of places.csv along each leg

DT_US = 10_000  # simulation step: 10 ms
DT = DT_US / 1e6
STEPS_PER_SECOND = 100
CHANNEL = "can0"

IGNITION_STATES = ("LOCK", "OFF", "ACC", "ON", "START")  # VSS LowVoltageSystemState, DBC raw 0..4
IGNITION_ON = frozenset({"ACC", "ON", "START"})
POWERTRAIN_ON = frozenset({"ON", "START"})
LEVERS = {"P": 0, "R": 1, "N": 2, "D": 3}  # DBC SelectorLever raw values
GEAR_PARK = 126  # VSS CurrentGear


class RouteError(ValueError):
    """route.toml cannot be simulated; the message names the key and what was expected."""


class FragileRoute(RuntimeError):
    """A vehicle-mode change sits too close to one of the agent's thresholds."""


# ── The route ─────────────────────────────────────────────────────────────────────────────

@dataclass(frozen=True)
class Waypoint:
    lat: float
    lon: float
    street: str
    speed: float = 0.0  # km/h on the way to this waypoint
    stop: float = 0.0  # s standing here (a red light)
    altitude: float | None = None


@dataclass(frozen=True)
class Phase:
    name: str
    duration: float | None = None  # hold phases
    waypoints: tuple[Waypoint, ...] = ()  # drive phases
    changes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_drive(self) -> bool:
        return bool(self.waypoints)


@dataclass(frozen=True)
class CarStart:
    odometer: float
    fuel: float
    coolant: float
    ambient: float
    battery: float


@dataclass(frozen=True)
class Route:
    title: str
    start: dt.datetime
    seed: int
    car: CarStart
    origin: Waypoint
    phases: tuple[Phase, ...]


_HOLD_KEYS = {
    "ignition": IGNITION_STATES, "gear": tuple(LEVERS), "door": ("open", "closed"),
    "bus": ("awake", "asleep"), "parking_brake": (True, False),
}


def load_route(path: Path) -> Route:
    """Read and validate route.toml; any mistake raises RouteError naming the key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RouteError(f"{path}: cannot read: {exc}") from exc
    _only(data, ("drive", "car", "start", "phase"), str(path))
    drive = _table(data, "drive")
    _only(drive, ("title", "start", "seed"), "drive")
    car = _table(data, "car")
    _only(car, ("odometer", "fuel", "coolant", "ambient", "battery"), "car")
    phases = data.get("phase")
    if not isinstance(phases, list) or not phases:
        raise RouteError("[[phase]]: at least one phase is needed")
    route = Route(
        title=_text(drive, "title", "drive"),
        start=_start_time(drive.get("start")),
        seed=_integer(drive, "seed", "drive"),
        car=CarStart(**{k: _number(car, k, "car") for k in ("odometer", "fuel", "coolant", "ambient", "battery")}),
        origin=_waypoint(_table(data, "start"), "start", origin=True),
        phases=tuple(_phase(p, f"phase[{i}]") for i, p in enumerate(phases)),
    )
    _check_story(route)
    return route


def _only(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise RouteError(f"{where}.{key}: unknown key (allowed: {', '.join(allowed)})")


def _table(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise RouteError(f"[{key}]: a table is required")
    return value


def _text(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RouteError(f"{where}.{key}: a non-empty string is required, not {value!r}")
    return value


def _number(table: Mapping[str, Any], key: str, where: str, lo: float = -math.inf,
            hi: float = math.inf, default: float | None = None) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise RouteError(f"{where}.{key}: a number in [{lo}, {hi}] is required, not {value!r}")
    return float(value)


def _integer(table: Mapping[str, Any], key: str, where: str) -> int:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RouteError(f"{where}.{key}: an integer is required, not {value!r}")
    return value


def _start_time(value: object) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise RouteError(f"drive.start: an ISO date-time is required, not {value!r}") from exc
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise RouteError(f"drive.start: a date-time with a UTC offset (e.g. 2026-04-18T00:12:00Z) "
                         f"is required, not {value!r}")
    if value.microsecond:
        raise RouteError("drive.start: whole seconds only (NMEA epochs fall on the second)")
    return value.astimezone(dt.timezone.utc)


def _waypoint(table: object, where: str, origin: bool = False) -> Waypoint:
    if not isinstance(table, dict):
        raise RouteError(f"{where}: a table {{ lat = .., lon = .., street = .., speed = .. }} is required")
    allowed = ("lat", "lon", "street", "altitude") + (() if origin else ("speed", "stop"))
    _only(table, allowed, where)
    altitude = table.get("altitude")
    return Waypoint(
        lat=_number(table, "lat", where, -85.0, 85.0),
        lon=_number(table, "lon", where, -180.0, 180.0),
        street=_text(table, "street", where),
        speed=0.0 if origin else _number(table, "speed", where, 5.0, 200.0),
        stop=0.0 if origin else _number(table, "stop", where, 0.0, 600.0, default=0.0),
        altitude=None if altitude is None else _number(table, "altitude", where, -500.0, 9000.0),
    )


def _phase(table: object, where: str) -> Phase:
    if not isinstance(table, dict):
        raise RouteError(f"{where}: a table is required")
    name = _text(table, "name", where)
    where = f"{where} {name!r}"
    if "waypoints" in table:
        _only(table, ("name", "waypoints"), where)
        points = table["waypoints"]
        if not isinstance(points, list) or not points:
            raise RouteError(f"{where}.waypoints: a non-empty array of waypoint tables is required")
        return Phase(name, waypoints=tuple(_waypoint(p, f"{where}.waypoints[{i}]") for i, p in enumerate(points)))
    _only(table, ("name", "duration", *_HOLD_KEYS), where)
    changes = {}
    for key, options in _HOLD_KEYS.items():
        if key in table:
            if table[key] not in options or isinstance(table[key], bool) != isinstance(options[0], bool):
                raise RouteError(f"{where}.{key}: one of {', '.join(map(repr, options))} is required, "
                                 f"not {table[key]!r}")
            changes[key] = table[key]
    return Phase(name, duration=_number(table, "duration", where, 0.01, 3600.0), changes=changes)


def _check_story(route: Route) -> None:
    """The first phase sets the whole car; a drive phase needs a running engine, D and no parking brake."""
    missing = [k for k in _HOLD_KEYS if k not in route.phases[0].changes]
    if route.phases[0].is_drive or missing:
        raise RouteError(f"phase[0]: the first phase must be a hold phase that sets {', '.join(_HOLD_KEYS)} "
                         f"(missing: {', '.join(missing) or 'duration'})")
    car = start_car(route)
    for i, phase in enumerate(route.phases):
        if not phase.is_drive:
            car.apply(phase.changes, 0.0)
        elif car.engine != "running" or car.lever != "D" or car.parking_brake or car.door_open:
            raise RouteError(f"phase[{i}] {phase.name!r}: to drive, the engine must run (a START phase, then "
                             f"ON), gear must be D, the parking brake off and the door closed; here "
                             f"ignition={car.ignition}, engine {car.engine}, gear={car.lever}, "
                             f"parking_brake={car.parking_brake}, door={'open' if car.door_open else 'closed'}")


# ── Geometry ──────────────────────────────────────────────────────────────────────────────

EARTH_M_PER_DEG = math.pi * 6_371_000.0 / 180.0


@dataclass
class Track:
    """All drive waypoints as one polyline in local metres (east, north) around the start."""

    lat0: float
    lon0: float
    points: list[tuple[float, float]]  # [0] is the start
    s: list[float]  # distance along the track at each point
    waypoints: list[Waypoint]  # [0] is the origin
    corner_speed: list[float]  # m/s, the speed a waypoint's turn allows (inf for the last)
    ends_run: list[bool]  # the car comes to rest here at the end of a drive run

    @classmethod
    def from_route(cls, route: Route) -> Track:
        waypoints, ends = [route.origin], [False]
        for i, phase in enumerate(route.phases):
            if phase.is_drive:
                waypoints.extend(phase.waypoints)
                ends.extend([False] * len(phase.waypoints))
                following = route.phases[i + 1] if i + 1 < len(route.phases) else None
                ends[-1] = following is None or not following.is_drive
        lat0, lon0 = route.origin.lat, route.origin.lon
        track = cls(lat0, lon0, [], [0.0], waypoints, [], ends)
        track.points = [track.to_local(w.lat, w.lon) for w in waypoints]
        for n, (a, b) in enumerate(zip(track.points, track.points[1:]), 1):
            length = math.dist(a, b)
            if length < 1.0:
                w = waypoints[n]
                raise RouteError(f"waypoint {n} of the drive ({w.street}, {w.lat}, {w.lon}) is less than 1 m "
                                 f"from the one before it")
            track.s.append(track.s[-1] + length)
        track.corner_speed = [math.inf] + [track._corner(i) for i in range(1, len(waypoints))]
        return track

    def to_local(self, lat: float, lon: float) -> tuple[float, float]:
        return ((lon - self.lon0) * EARTH_M_PER_DEG * math.cos(math.radians(self.lat0)),
                (lat - self.lat0) * EARTH_M_PER_DEG)

    def to_latlon(self, x: float, y: float) -> tuple[float, float]:
        return (self.lat0 + y / EARTH_M_PER_DEG,
                self.lon0 + x / (EARTH_M_PER_DEG * math.cos(math.radians(self.lat0))))

    def segment(self, s: float) -> int:
        """Index i of the waypoint the car is driving towards (segment from i-1 to i)."""
        return min(max(bisect.bisect_right(self.s, s), 1), len(self.s) - 1)

    def heading(self, i: int) -> float:
        """Bearing of segment i in degrees clockwise from north."""
        (x0, y0), (x1, y1) = self.points[i - 1], self.points[i]
        return math.degrees(math.atan2(x1 - x0, y1 - y0)) % 360.0

    def position(self, s: float) -> tuple[float, float]:
        i = self.segment(s)
        (x0, y0), (x1, y1) = self.points[i - 1], self.points[i]
        f = min(max((s - self.s[i - 1]) / (self.s[i] - self.s[i - 1]), 0.0), 1.0)
        return x0 + f * (x1 - x0), y0 + f * (y1 - y0)

    def altitude(self, s: float) -> float:
        known = [(self.s[i], w.altitude) for i, w in enumerate(self.waypoints) if w.altitude is not None]
        if not known:
            return 50.0
        for (s0, a0), (s1, a1) in zip(known, known[1:]):
            if s0 <= s <= s1:
                return a0 + (a1 - a0) * (s - s0) / (s1 - s0) if s1 > s0 else a0
        return known[0][1] if s < known[0][0] else known[-1][1]

    def street(self, s: float) -> str:
        """The street of the waypoint the car stands at or drives towards."""
        return self.waypoints[min(bisect.bisect_left(self.s, s - 1e-6), len(self.s) - 1)].street

    def _corner(self, i: int) -> float:
        if i + 1 >= len(self.points):
            return math.inf
        turn = abs((self.heading(i + 1) - self.heading(i) + 180.0) % 360.0 - 180.0)
        return math.inf if turn < 20.0 else max(15.0, 62.0 - 0.52 * turn) / 3.6


# ── The car ───────────────────────────────────────────────────────────────────────────────

GEAR_RATIOS = (4.21, 2.64, 1.80, 1.39, 1.00, 0.77)
FINAL_DRIVE = 3.2
WHEEL_RADIUS = 0.33  # m
UPSHIFT_KMH = (16.0, 28.0, 40.0, 52.0, 64.0)  # light throttle, 1→2 .. 5→6
DOWNSHIFT_KMH = (8.0, 18.0, 28.0, 38.0, 50.0)  # 2→1 .. 6→5
TANK_LITRES = 50.0
AFTER_RUN = 1.5  # s powertrain ECUs keep sending after the ignition leaves ON
FIX_AFTER = 5  # s before the GNSS receiver has its first fix


@dataclass
class Car:
    """Everything the ECUs report, advanced 10 ms at a time."""

    ignition: str
    lever: str
    parking_brake: bool
    door_open: bool
    bus_awake: bool
    coolant: float
    fuel: float
    odometer: float
    ambient: float
    battery: float
    engine: str = "off"  # off | cranking | running
    fired_at: float = -math.inf
    powertrain_until: float = -math.inf
    rpm: float = 0.0
    gear: int = 1
    shifted_at: float = -math.inf
    pedal: float = 0.0
    s: float = 0.0
    v: float = 0.0  # m/s
    a: float = 0.0  # m/s²
    heading: float = 0.0  # degrees, of the track segment
    smooth_heading: float = 0.0  # radians, what the wheels follow
    yaw_rate: float = 0.0  # rad/s, clockwise positive
    steering: float = 0.0  # degrees at the steering wheel
    steering_rate: float = 0.0

    @property
    def kmh(self) -> float:
        return self.v * 3.6

    @property
    def current_gear(self) -> int:
        return {"P": GEAR_PARK, "R": -1, "N": 0}.get(self.lever, self.gear)

    def apply(self, changes: Mapping[str, Any], t: float) -> None:
        """A hold phase's changes take effect at its start."""
        old = self.ignition
        self.ignition = changes.get("ignition", self.ignition)
        self.lever = changes.get("gear", self.lever)
        self.parking_brake = changes.get("parking_brake", self.parking_brake)
        self.door_open = changes.get("door", "open" if self.door_open else "closed") == "open"
        self.bus_awake = changes.get("bus", "awake" if self.bus_awake else "asleep") == "awake"
        if self.ignition == "START" and self.engine == "off":
            self.engine = "cranking"
        elif old == "START" and self.ignition == "ON" and self.engine == "cranking":
            self.engine, self.fired_at = "running", t
        elif self.ignition not in POWERTRAIN_ON:
            self.engine = "off"
        if old in POWERTRAIN_ON and self.ignition not in POWERTRAIN_ON:
            self.powertrain_until = t + AFTER_RUN

    def is_sending_powertrain(self, t: float) -> bool:
        return self.bus_awake and (self.ignition in POWERTRAIN_ON or t < self.powertrain_until)


def start_car(route: Route) -> Car:
    """The car as the first phase leaves it (it sets every key)."""
    first, c = route.phases[0].changes, route.car
    return Car(first["ignition"], first["gear"], first["parking_brake"], first["door"] == "open",
               first["bus"] == "awake", c.coolant, c.fuel, c.odometer, c.ambient, c.battery)


def idle_rpm(car: Car) -> float:
    """A cold engine idles a little faster."""
    return 800.0 + 2.5 * max(0.0, 40.0 - car.coolant)


def advance_engine(car: Car, t: float, noise: random.Random) -> None:
    if car.engine == "off":
        car.rpm = max(0.0, car.rpm - (3.0 * car.rpm + 600.0) * DT)
        return
    if car.engine == "cranking":
        target = 205.0 + 30.0 * math.sin(2 * math.pi * 5.0 * t) + noise.gauss(0.0, 6.0)
        car.rpm += (target - car.rpm) * min(1.0, DT / 0.05)
        return
    flare = 480.0 * math.exp(-(t - car.fired_at) / 0.9)
    target = idle_rpm(car) + flare
    if car.lever in ("D", "R"):
        wheel_rpm = car.v / (2 * math.pi * WHEEL_RADIUS) * 60.0
        in_gear = wheel_rpm * GEAR_RATIOS[car.gear - 1] * FINAL_DRIVE
        lockup = min(max((car.kmh - 20.0) / 25.0, 0.0), 1.0)
        target = max(target, in_gear) + 11.0 * car.pedal * (1.0 - lockup)
    car.rpm += (target - car.rpm) * min(1.0, DT / 0.2)


def advance_gearbox(car: Car, t: float) -> None:
    if car.lever != "D":
        car.gear = 1
        return
    if t - car.shifted_at < 0.8:
        return
    kmh, throttle = car.kmh, 1.0 + car.pedal / 120.0
    if car.gear < 6 and kmh > UPSHIFT_KMH[car.gear - 1] * throttle:
        car.gear, car.shifted_at = car.gear + 1, t
    elif car.gear > 1 and kmh < DOWNSHIFT_KMH[car.gear - 2]:
        car.gear, car.shifted_at = car.gear - 1, t


def advance_consumables(car: Car, t: float) -> None:
    """Coolant warms with load, fuel drains, the battery follows the alternator, the odometer counts."""
    if car.engine == "running":
        load = 1.0 + 2.0 * car.pedal / 100.0 + car.rpm / 4000.0
        car.coolant += (92.0 - car.coolant) * DT * load / 380.0
        litres_per_hour = 0.7 * car.rpm / 800.0 + 30.0 * car.pedal / 100.0 * car.rpm / 3000.0
        car.fuel -= litres_per_hour / 3600.0 * DT / TANK_LITRES * 100.0
    else:
        car.coolant -= (car.coolant - car.ambient) * DT / 3000.0
    car.odometer += car.v * DT / 1000.0
    target = {"running": 14.25, "cranking": 10.45}.get(car.engine) or {
        "ACC": 12.38, "ON": 12.22, "START": 12.2}.get(car.ignition, 12.47)
    if car.engine == "cranking":
        target += 0.35 * math.sin(2 * math.pi * 5.0 * t)
    car.battery += (target - car.battery) * min(1.0, DT / (0.05 if car.engine == "cranking" else 0.4))


def advance_steering(car: Car, heading: float) -> None:
    """The wheels follow the track's heading smoothly; the driver turns the wheel at most 360°/s."""
    diff = (math.radians(heading) - car.smooth_heading + math.pi) % (2 * math.pi) - math.pi
    step = diff * min(1.0, car.v * DT / 6.0)
    car.smooth_heading = (car.smooth_heading + step) % (2 * math.pi)
    car.yaw_rate = step / DT
    target = car.steering
    if car.v > 0.3:
        target = max(-540.0, min(540.0, 14.5 * math.degrees(math.atan(2.7 * car.yaw_rate / car.v))))
    turn = max(-360.0 * DT, min(360.0 * DT, target - car.steering))
    car.steering += turn
    car.steering_rate += (abs(turn) / DT - car.steering_rate) * min(1.0, DT / 0.1)


# ── The driver ────────────────────────────────────────────────────────────────────────────

TAU_CRUISE = 1.8  # s to close a speed gap
TAU_BRAKE = 0.8
B_PLAN = 1.4  # m/s², comfortable braking the driver plans with, for stops and corners
B_COAST = 0.5  # m/s², easing off for a lower target speed ahead
B_MAX = 3.5
JERK = 2.0  # m/s³
LOOKAHEAD = 600.0  # m


@dataclass
class Driver:
    """Follows the track's target speeds, brakes ahead of corners, lights and the end of a run."""

    track: Track
    drift_phase: tuple[float, float]
    hold_until: float | None = None
    resting: bool = False  # standing at the end of a run
    served: int = 0  # the last waypoint the car stopped at

    def limit(self, i: int) -> float:
        """Speed (m/s) the driver allows at waypoint i: zero at a stop, else the slower adjacent target."""
        w = self.track.waypoints
        if w[i].stop > 0 or self.track.ends_run[i] or i + 1 >= len(w):
            return 0.0
        return min(w[i].speed, w[i + 1].speed) / 3.6

    def command(self, car: Car, t: float) -> float:
        """Wanted acceleration in m/s²: cruise at the target, brake ahead of what comes."""
        i = self.track.segment(car.s)
        drift = 0.03 * math.sin(2 * math.pi * t / 23.0 + self.drift_phase[0]) + \
            0.02 * math.sin(2 * math.pi * t / 61.0 + self.drift_phase[1])
        target = self.track.waypoints[i].speed / 3.6 * (1.0 + drift)
        wanted = min(max((target - car.v) / TAU_CRUISE, -B_MAX), max(0.7, 1.8 - 0.01 * car.kmh))
        for j in range(i, len(self.track.s)):
            d = self.track.s[j] - car.s
            if d > LOOKAHEAD:
                break
            wanted = min(wanted, self._brake_for(j, d, car.v))
            if self.limit(j) == 0.0:
                break
        return wanted

    def _brake_for(self, j: int, d: float, v: float) -> float:
        """Deceleration the driver wants for waypoint j, d metres ahead, planning half a second early."""
        stop, corner = self.limit(j) == 0.0, self.track.corner_speed[j]
        v_c = 0.0 if stop else min(self.limit(j) * 1.04, corner)
        decel = B_PLAN if stop or corner <= self.limit(j) * 1.04 else B_COAST
        allowed = math.sqrt(v_c * v_c + 2.0 * decel * max(d - 0.5 * v, 0.0))
        wanted = (allowed - v) / TAU_BRAKE
        if stop and d > 0.05 and -v * v / (2.0 * d) < -B_PLAN:  # late: brake as hard as it takes
            wanted = min(wanted, max(-v * v / (2.0 * d), -B_MAX))
        return wanted

    def step(self, car: Car, t: float) -> None:
        """Advance the car 10 ms along the track."""
        if self.hold_until is not None and t < self.hold_until:
            car.v = car.a = car.pedal = 0.0
            return
        self.hold_until = None
        wanted = self.command(car, t)
        car.a += min(max(wanted - car.a, -2.0 * JERK * DT), JERK * DT)
        car.v = max(0.0, car.v + car.a * DT)
        if car.v == 0.0 and car.a < 0.0:
            car.a = 0.0
        car.s += car.v * DT
        car.pedal += (pedal_for(car, wanted) - car.pedal) * min(1.0, DT / 0.25)
        self._arrive(car, t)

    def _arrive(self, car: Car, t: float) -> None:
        """Come to rest exactly on a stop line once close and slow enough."""
        i = self.track.segment(car.s - 0.5)
        if i <= self.served or self.limit(i) > 0.0:
            return
        d = self.track.s[i] - car.s
        if d < 0.4 and car.v < 0.6:
            car.s, car.v, car.a, car.pedal = self.track.s[i], 0.0, 0.0, 0.0
            self.served = i
            if self.track.ends_run[i]:
                self.resting = True
            else:
                self.hold_until = t + self.track.waypoints[i].stop


def pedal_for(car: Car, wanted: float) -> float:
    if wanted < -0.15 or car.v == 0.0 and wanted <= 0.0:
        return 0.0
    return min(100.0, max(0.0, 3.0 + 0.16 * car.kmh + 28.0 * max(wanted, 0.0)))


# ── CAN frames ────────────────────────────────────────────────────────────────────────────

@dataclass
class Schedule:
    """One cyclic frame: when it is due within the 10 ms grid and which ECU domain sends it."""

    name: str  # DBC message name, or a label for frames outside the DBC
    every: int  # steps
    slot: int  # step modulo every
    offset_us: int  # within the 10 ms step
    domain: str  # "body" (whenever the bus is awake) | "powertrain" (ignition ON/START + after-run)
    counter: int = 0


SCHEDULE = (  # name, slot, offset within the step (µs), domain; periods come from the DBC
    ("BodyStatus", 0, 0, "body"),
    ("SteeringAngle", 0, 350, "powertrain"),
    ("EngineData", 0, 1100, "powertrain"),
    ("VehicleDynamics", 1, 2450, "powertrain"),
    ("WheelSpeeds", 1, 3050, "powertrain"),
    ("Transmission", 3, 4600, "powertrain"),
    ("Gateway", 2, 5200, "body"),
    ("FuelStatus", 7, 6700, "powertrain"),
    ("ClusterInfo", 32, 7400, "powertrain"),
    ("BatteryStatus", 55, 8150, "body"),
)
GATEWAY_ID, GATEWAY_PERIOD_MS = 0x6F1, 50  # network management: deliberately not in the DBC
CHECKSUMMED = ("EngineData", "VehicleDynamics", "SteeringAngle")
TRACKED = {  # (message, signal) -> key of the values the mode rules read
    ("BodyStatus", "IgnitionState"): "ignition", ("BodyStatus", "ParkingBrake"): "parking_brake",
    ("VehicleDynamics", "VehicleSpeed"): "speed", ("EngineData", "EngineSpeed"): "rpm",
    ("Transmission", "CurrentGear"): "gear",
}

Update = tuple[float, str, Any]  # (seconds since start, key, value)


class CanLog:
    """Encodes the due frames of each step with cantools and collects candump -l lines."""

    def __init__(self, db: Any, start: dt.datetime, seed: int) -> None:
        self.db = db
        self.start_s = int(start.timestamp())
        self.jitter = random.Random(f"{seed}/can-jitter")
        self.noise = random.Random(f"{seed}/can-noise")
        self.lines: list[str] = []
        self.updates: list[Update] = []
        self.schedules = [Schedule(name, self._period(name) // 10, slot, offset, domain)
                          for name, slot, offset, domain in SCHEDULE]

    def _period(self, name: str) -> int:
        if name == "Gateway":
            return GATEWAY_PERIOD_MS
        cycle = self.db.get_message_by_name(name).cycle_time
        if not cycle or cycle % 10:
            raise RouteError(f"DBC message {name}: GenMsgCycleTime must be a multiple of 10 ms, not {cycle}")
        return int(cycle)

    def emit(self, step: int, car: Car) -> int:
        """Write the frames due at ``step``; return how many."""
        t = step * DT
        sent = 0
        for sched in self.schedules:
            if step % sched.every != sched.slot % sched.every:
                continue
            if not car.bus_awake or (sched.domain == "powertrain" and not car.is_sending_powertrain(t)):
                continue
            jitter = self.jitter.randrange(0, 180) if step else 0
            self._write(step * DT_US + sched.offset_us + jitter, sched, car)
            sched.counter = (sched.counter + 1) % 16
            sent += 1
        return sent

    def _write(self, us: int, sched: Schedule, car: Car) -> None:
        if sched.name == "Gateway":
            frame_id, extended = GATEWAY_ID, False
            data = bytearray([0x71, 0x10 | (car.ignition in IGNITION_ON) << 1, 0, 0, 0, 0, 0, sched.counter * 16])
        else:
            message = self.db.get_message_by_name(sched.name)
            values = SIGNALS[sched.name](car, sched, self.noise)
            data = bytearray(self.db.encode_message(sched.name, values))
            if sched.name in CHECKSUMMED:
                data[7] = checksum(message.frame_id, data)
            frame_id, extended = message.frame_id, message.is_extended_frame
            self._track(us / 1e6, sched.name, values)
        ident = f"{frame_id:08X}" if extended else f"{frame_id:03X}"
        self.lines.append(f"({self.start_s + us // 1_000_000}.{us % 1_000_000:06d}) {CHANNEL} "
                          f"{ident}#{bytes(data).hex().upper()}")

    def _track(self, t: float, name: str, values: Mapping[str, Any]) -> None:
        for (message, signal), key in TRACKED.items():
            if message == name:
                value = values[signal]
                if key == "ignition":
                    value = IGNITION_STATES[value]
                elif key == "parking_brake":
                    value = bool(value)
                self.updates.append((t, key, value))


def checksum(frame_id: int, data: bytes | bytearray) -> int:
    """0xFF minus the 8-bit sum of bytes 0..6 and both bytes of the 11-bit id (see the DBC comment)."""
    return 0xFF - ((sum(data[:7]) + (frame_id >> 8) + (frame_id & 0xFF)) & 0xFF)


def _engine(car: Car, sched: Schedule, noise: random.Random) -> dict[str, Any]:
    rpm = car.rpm + (noise.gauss(0.0, 3.0) if car.engine == "running" else 0.0)
    return {"EngineSpeed": max(0.0, rpm), "PedalPosition": min(100.0, max(0.0, car.pedal)),
            "CoolantTemp": round(car.coolant), "AliveCounter": sched.counter, "Checksum": 0}


def _dynamics(car: Car, sched: Schedule, noise: random.Random) -> dict[str, Any]:
    accel = car.a + noise.gauss(0.0, 0.015) if car.v > 0 else noise.gauss(0.0, 0.004)
    return {"VehicleSpeed": car.kmh, "LongitudinalAccel": accel, "AliveCounter": sched.counter, "Checksum": 0}


def _transmission(car: Car, sched: Schedule, noise: random.Random) -> dict[str, Any]:
    return {"CurrentGear": car.current_gear, "SelectorLever": LEVERS[car.lever], "AliveCounter": sched.counter}


def _body(car: Car, sched: Schedule, noise: random.Random) -> dict[str, Any]:
    return {"IgnitionState": IGNITION_STATES.index(car.ignition), "DriverDoorOpen": int(car.door_open),
            "ParkingBrake": int(car.parking_brake)}


def _fuel(car: Car, sched: Schedule, noise: random.Random) -> dict[str, Any]:
    return {"FuelLevel": min(100.0, max(0.0, car.fuel))}


def _cluster(car: Car, sched: Schedule, noise: random.Random) -> dict[str, Any]:
    if sched.counter % 2 == 0:
        return {"InfoMux": 0, "Odometer": math.floor(car.odometer * 10.0) / 10.0}
    return {"InfoMux": 1, "AmbientTemp": car.ambient}


def _battery(car: Car, sched: Schedule, noise: random.Random) -> dict[str, Any]:
    return {"BatteryVoltage": car.battery + noise.gauss(0.0, 0.004)}


def _wheels(car: Car, sched: Schedule, noise: random.Random) -> dict[str, Any]:
    turn = car.yaw_rate * 0.8 * 3.6  # half the track width, km/h
    base = car.kmh
    return {name: max(0.0, base * scale + side * turn) if base > 0 else 0.0
            for name, scale, side in (("WheelSpeedFL", 1.002, 1), ("WheelSpeedFR", 0.999, -1),
                                      ("WheelSpeedRL", 1.003, 1), ("WheelSpeedRR", 1.000, -1))}


def _steering(car: Car, sched: Schedule, noise: random.Random) -> dict[str, Any]:
    return {"SteeringWheelAngle": car.steering + noise.gauss(0.0, 0.15),
            "SteeringWheelSpeed": min(1016.0, car.steering_rate), "AliveCounter": sched.counter, "Checksum": 0}


SIGNALS: dict[str, Callable[[Car, Schedule, random.Random], dict[str, Any]]] = {
    "EngineData": _engine, "VehicleDynamics": _dynamics, "Transmission": _transmission, "BodyStatus": _body,
    "FuelStatus": _fuel, "ClusterInfo": _cluster, "BatteryStatus": _battery, "WheelSpeeds": _wheels,
    "SteeringAngle": _steering,
}


# ── NMEA ──────────────────────────────────────────────────────────────────────────────────

SATELLITES = (  # GPS PRN, elevation, azimuth at the start; they drift slowly
    (2, 62, 41), (5, 18, 318), (7, 37, 112), (9, 71, 265), (13, 12, 194), (15, 46, 289),
    (18, 27, 72), (20, 8, 160), (23, 54, 205), (27, 22, 21), (30, 33, 241),
)
GEOID_SEPARATION = 23.4  # m, around Seoul


def nmea(body: str) -> str:
    """A sentence with its checksum: XOR of every character between $ and *."""
    value = 0
    for char in body:
        value ^= ord(char)
    return f"${body}*{value:02X}"


class NmeaLog:
    """One epoch per second: RMC, GGA, VTG, GSA, GSV, as a multi-GNSS receiver prints them."""

    def __init__(self, track: Track, start: dt.datetime, seed: int) -> None:
        self.track = track
        self.start = start
        self.rng = random.Random(f"{seed}/gnss")
        self.lines: list[str] = []
        self.error = [0.0, 0.0, 0.0]  # east, north, up: slowly wandering receiver error (m)
        self.course = 0.0

    def emit(self, second: int, car: Car) -> None:
        when = self.start + dt.timedelta(seconds=second)
        hhmmss, ddmmyy = when.strftime("%H%M%S") + ".00", when.strftime("%d%m%y")
        sats = self._sky(second)
        if second < FIX_AFTER:
            self.lines += [nmea(f"GNRMC,{hhmmss},V,,,,,,,{ddmmyy},,,N"),
                           nmea(f"GNGGA,{hhmmss},,,,,0,00,99.99,,,,,,"),
                           nmea("GNVTG,,,,,,,,,N"),
                           nmea("GNGSA,A,1" + "," * 12 + ",99.99,99.99,99.99"), *self._gsv(sats)]
            return
        for axis in range(3):
            self.error[axis] = 0.92 * self.error[axis] + self.rng.gauss(0.0, 0.45 if axis < 2 else 0.3)
        x, y = self.track.position(car.s)
        lat, lon = self.track.to_latlon(x + self.error[0], y + self.error[1])
        altitude = self.track.altitude(car.s) + self.error[2]
        kmh = car.kmh + self.rng.gauss(0.0, 0.1) if car.v > 0.3 else abs(self.rng.gauss(0.0, 0.06))
        if car.v > 0.5:
            self.course = (math.degrees(car.smooth_heading) + self.rng.gauss(0.0, 0.4)) % 360.0
        used = [prn for prn, elevation, _, snr in sats if snr is not None and elevation >= 10 and snr >= 25][:12]
        hdop = round(7.8 / max(len(used), 4) + 0.05, 2)
        lat_s, lon_s, knots = _latlon(lat, lon) + (f"{kmh / 1.852:.3f}",)
        self.lines += [
            nmea(f"GNRMC,{hhmmss},A,{lat_s},{lon_s},{knots},{self.course:.2f},{ddmmyy},,,A"),
            nmea(f"GNGGA,{hhmmss},{lat_s},{lon_s},1,{len(used):02d},{hdop:.2f},{altitude:.1f},M,"
                 f"{GEOID_SEPARATION:.1f},M,,"),
            nmea(f"GNVTG,{self.course:.2f},T,,M,{knots},N,{kmh:.3f},K,A"),
            nmea("GNGSA,A,3," + ",".join(f"{p:02d}" for p in used) + "," * (12 - len(used))
                 + f",{hdop * 1.6:.2f},{hdop:.2f},{hdop * 1.3:.2f}"),
            *self._gsv(sats),
        ]

    def _sky(self, second: int) -> list[tuple[int, int, int, int | None]]:
        """Satellites in view (PRN, elevation, azimuth, C/N0); a receiver that just woke up sees few."""
        visible = SATELLITES[:min(len(SATELLITES), second * 3)] if second < FIX_AFTER else SATELLITES
        sky = []
        for prn, elevation, azimuth in visible:
            elevation = min(89, elevation + second // 90)
            azimuth = (azimuth + second // 40) % 360
            snr: int | None = round(20 + 0.35 * elevation + self.rng.gauss(0.0, 1.5))
            if second < FIX_AFTER and (second < 2 or prn % 3 == 0):
                snr = None
            sky.append((prn, elevation, azimuth, snr))
        return sky

    def _gsv(self, sats: Sequence[tuple[int, int, int, int | None]]) -> list[str]:
        if not sats:
            return [nmea("GPGSV,1,1,00")]
        total = (len(sats) + 3) // 4
        lines = []
        for n in range(total):
            chunk = sats[4 * n:4 * n + 4]
            fields = "".join(f",{p:02d},{e:02d},{a:03d}," + ("" if s is None else f"{s:02d}") for p, e, a, s in chunk)
            lines.append(nmea(f"GPGSV,{total},{n + 1},{len(sats):02d}{fields}"))
        return lines


def _latlon(lat: float, lon: float) -> tuple[str, str]:
    """NMEA ddmm.mmmmm,N / dddmm.mmmmm,E, rounded once so minutes never read 60."""
    def dm(value: float, width: int) -> str:
        units = round(abs(value) * 60 * 100_000)  # 1e-5 minutes
        degrees, rest = divmod(units, 60 * 100_000)
        return f"{degrees:0{width}d}{rest // 100_000:02d}.{rest % 100_000:05d}"
    return f"{dm(lat, 2)},{'N' if lat >= 0 else 'S'}", f"{dm(lon, 3)},{'E' if lon >= 0 else 'W'}"


# ── Expected vehicle modes ────────────────────────────────────────────────────────────────

@dataclass(frozen=True)
class ModeRules:
    """The agent's defaults (agent/vehicle/mode.py ModeSettings) and the demo profile's stale_after."""

    moving_speed: float = 3.0  # km/h
    engine_running_rpm: float = 300.0
    drive_after: float = 2.0
    stop_grace: float = 120.0
    park_after: float = 3.0
    off_after: float = 3.0
    stale_after: float = 2.0


class ModeOracle:
    """The mode rules, fed with what the agent would have last heard from the bus."""

    def __init__(self, rules: ModeRules) -> None:
        self.rules = rules
        self.mode = "off"
        self.since: dict[str, float | None] = {"off": None, "moving": None, "stationary": None, "parking": None}

    def step(self, heard: Mapping[str, tuple[float, Any]], now: float) -> str:
        r = self.rules
        fresh = {k: v for k, (t, v) in heard.items() if now - t <= r.stale_after}
        ignition, speed, rpm = fresh.get("ignition"), fresh.get("speed"), fresh.get("rpm")
        powered = ignition in IGNITION_ON if ignition is not None else (speed is not None or rpm is not None)
        moving = speed is not None and speed >= r.moving_speed
        running = rpm is not None and rpm >= r.engine_running_rpm
        parking = fresh.get("gear") == GEAR_PARK or fresh.get("parking_brake") is True
        self._hold("off", not powered, now)
        self._hold("moving", powered and moving, now)
        self._hold("stationary", powered and not moving, now)
        self._hold("parking", parking, now)
        if not powered:
            if self.mode != "off" and self._held("off", r.off_after, now):
                self.mode = "off"
        elif moving:
            if self.mode == "driving" or self._held("moving", r.drive_after, now):
                self.mode = "driving"
            else:
                self.mode = "idling" if running else "parked"
        elif self.mode == "driving":
            # A parking signal (P, parking brake) ends the drive sooner than the stop grace.
            if self._held("parking", r.park_after, now) or self._held("stationary", r.stop_grace, now):
                self.mode = "idling" if running else "parked"
        else:
            self.mode = "idling" if running else "parked"
        return self.mode

    def _hold(self, name: str, condition: bool, now: float) -> None:
        since = self.since[name]
        self.since[name] = (now if since is None else since) if condition else None

    def _held(self, name: str, duration: float, now: float) -> bool:
        since = self.since[name]
        return since is not None and now - since >= duration


def expected_modes(updates: Sequence[Update], steps: int, rules: ModeRules) -> list[tuple[float, str]]:
    """Mode changes (seconds since start, mode), evaluated at the end of every 10 ms step."""
    oracle, i = ModeOracle(rules), 0
    heard: dict[str, tuple[float, Any]] = {}
    transitions: list[tuple[float, str]] = []
    for step in range(steps):
        now = (step + 1) * DT
        while i < len(updates) and updates[i][0] < now:
            t, key, value = updates[i]
            heard[key] = (t, value)
            i += 1
        mode = oracle.step(heard, now)
        if not transitions or transitions[-1][1] != mode:
            transitions.append((0.0 if not transitions else round(now, 2), mode))
    return transitions


def check_margins(updates: Sequence[Update], steps: int, nominal: list[tuple[float, str]],
                  margin: float = 2.0) -> None:
    """Every threshold moved by ``margin`` must give the same sequence of modes, or the route is fragile."""
    base = ModeRules()
    variants = [("moving_speed", 1.0), ("engine_running_rpm", 50.0), ("drive_after", margin),
                ("stop_grace", margin), ("park_after", margin), ("off_after", margin), ("stale_after", margin - 1.0)]
    want = [mode for _, mode in nominal]
    for name, delta in variants:
        for sign in (-1, 1):
            value = max(getattr(base, name) + sign * delta, 0.0)
            got = expected_modes(updates, steps, dataclasses.replace(base, **{name: value}))
            if [mode for _, mode in got] != want:
                raise FragileRoute(f"with {name} = {value:g} instead of {getattr(base, name):g} the modes would be "
                                   f"{_story(got)}\ninstead of {_story(nominal)}: move the phases near that "
                                   f"threshold at least {margin:g} s away from it")


def _story(transitions: Iterable[tuple[float, str]]) -> str:
    return " → ".join(f"{mode}@{t:.1f}s" for t, mode in transitions)


# ── The simulation ────────────────────────────────────────────────────────────────────────

@dataclass
class PhaseReport:
    name: str
    start: float
    end: float = 0.0
    distance: float = 0.0
    top_kmh: float = 0.0
    frames: int = 0


@dataclass
class Drive:
    route: Route
    steps: int
    can: CanLog
    gnss: NmeaLog
    phases: list[PhaseReport]
    modes: list[tuple[float, str]]
    car: Car
    streets: list[str]

    @property
    def duration(self) -> float:
        return self.steps * DT


class Simulation:
    """Runs the route's phases in 10 ms steps, feeding the CAN and NMEA logs at each."""

    def __init__(self, route: Route, db: Any) -> None:
        self.route = route
        self.track = Track.from_route(route)
        self.car = start_car(route)
        self.car.heading = self.track.heading(1) if len(self.track.s) > 1 else 0.0
        self.car.smooth_heading = math.radians(self.car.heading)
        self.noise = random.Random(f"{route.seed}/engine")
        drift = random.Random(f"{route.seed}/driver")
        self.driver = Driver(self.track, (drift.uniform(0, 2 * math.pi), drift.uniform(0, 2 * math.pi)))
        self.can = CanLog(db, route.start, route.seed)
        self.gnss = NmeaLog(self.track, route.start, route.seed)
        self.step_no = 0
        self.reports: list[PhaseReport] = []
        self.streets: list[str] = []  # where the car is, once a second

    def run(self) -> Drive:
        waypoint = 0
        for phase in self.route.phases:
            report = PhaseReport(phase.name, self.step_no * DT)
            self.reports.append(report)
            s0 = self.car.s
            if phase.is_drive:
                waypoint += len(phase.waypoints)
                self._drive_to(waypoint, report)
            else:
                self.car.apply(phase.changes, self.step_no * DT)
                for _ in range(round((phase.duration or 0.0) / DT)):
                    self._tick(report)
            report.end, report.distance = self.step_no * DT, self.car.s - s0
        modes = expected_modes(self.can.updates, self.step_no, ModeRules())
        return Drive(self.route, self.step_no, self.can, self.gnss, self.reports, modes, self.car, self.streets)

    def _drive_to(self, waypoint: int, report: PhaseReport) -> None:
        """Drive until the waypoint is passed (or reached and rested at, at the end of a run)."""
        self.driver.resting = False
        goal = self.track.s[waypoint]
        ends = self.track.ends_run[waypoint]
        limit = self.step_no + 3600 * STEPS_PER_SECOND
        while not (self.driver.resting if ends else self.car.s >= goal and self.driver.hold_until is None):
            if self.step_no > limit:
                raise RouteError(f"phase {report.name!r}: the car never reached waypoint {waypoint} in an hour")
            self._tick(report, driving=True)

    def _tick(self, report: PhaseReport, driving: bool = False) -> None:
        """Report the car at this step, then advance it by 10 ms."""
        car, t = self.car, self.step_no * DT
        report.frames += self.can.emit(self.step_no, car)
        if self.step_no % STEPS_PER_SECOND == 0:
            self.gnss.emit(self.step_no // STEPS_PER_SECOND, car)
            self.streets.append(self.track.street(car.s))
        if driving:
            self.driver.step(car, t)
        else:
            car.v = car.a = car.pedal = 0.0
        car.heading = self.track.heading(self.track.segment(car.s))
        advance_steering(car, car.heading)
        advance_gearbox(car, t)
        advance_engine(car, t, self.noise)
        advance_consumables(car, t)
        car.ambient = self.route.car.ambient + 0.4 * math.sin(2 * math.pi * t / 400.0)
        report.top_kmh = max(report.top_kmh, car.kmh)
        self.step_no += 1


# ── Output ────────────────────────────────────────────────────────────────────────────────

def load_dbc(path: Path) -> Any:
    import cantools  # imported late so --help works without it

    try:
        return cantools.database.load_file(str(path))
    except Exception as exc:  # cantools raises many types for a bad file; all mean the same here
        raise RouteError(f"{path}: not a DBC cantools can load: {exc}") from exc


def modes_document(drive: Drive) -> dict[str, Any]:
    by_time = [(r.start, r.name) for r in drive.phases]
    return {
        "comment": "Generated by profiles/demo/generate_drive.py from route.toml; do not edit. t is seconds "
                   "since the first CAN frame and the first NMEA epoch (start).",
        "start": drive.route.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration": round(drive.duration, 2),
        "rules": dataclasses.asdict(ModeRules()),
        "transitions": [{"t": t, "mode": mode, "phase": _phase_at(by_time, t),
                         "street": drive.streets[min(int(t), len(drive.streets) - 1)]} for t, mode in drive.modes],
    }


def _phase_at(by_time: Sequence[tuple[float, str]], t: float) -> str:
    index = max(bisect.bisect_right([start for start, _ in by_time], t + 1e-9) - 1, 0)
    return by_time[index][1]


def write_outputs(drive: Drive, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in OUTPUTS}
    files["drive.log"].write_text("\n".join(drive.can.lines) + "\n", encoding="ascii", newline="\n")
    files["drive.nmea"].write_text("\n".join(drive.gnss.lines) + "\n", encoding="ascii", newline="\n")
    files["expected_modes.json"].write_text(json.dumps(modes_document(drive), indent=2, ensure_ascii=False)
                                            + "\n", encoding="utf-8", newline="\n")
    files["places.csv"].write_text(places_csv(Track.from_route(drive.route)), encoding="utf-8", newline="\n")
    return files


def places_csv(track: Track) -> str:
    """The street names of the route as named points every PLACE_SPACING m along each leg.

    A leg carries the street of the waypoint it leads to (as ``Track.street`` does), so the
    nearest point to the car names the road it is on; agent/vehicle/places.py reads the file.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["lat", "lon", "name"])
    origin = track.waypoints[0]
    writer.writerow([f"{origin.lat:.6f}", f"{origin.lon:.6f}", origin.street])
    for i in range(1, len(track.points)):
        (x0, y0), (x1, y1) = track.points[i - 1], track.points[i]
        steps = max(1, math.ceil((track.s[i] - track.s[i - 1]) / PLACE_SPACING))
        for k in range(1, steps + 1):
            lat, lon = track.to_latlon(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps)
            writer.writerow([f"{lat:.6f}", f"{lon:.6f}", track.waypoints[i].street])
    return out.getvalue()


def verify(files: Mapping[str, Path], db: Any, drive: Drive) -> None:
    """Read the logs back the way the agent will: python-can's LogReader, cantools, NMEA checksums."""
    import can  # imported late so --help works without it

    count, last = 0, -math.inf
    with can.LogReader(str(files["drive.log"])) as reader:
        for msg in reader:
            if msg.timestamp < last:
                raise RuntimeError(f"drive.log: timestamps go backwards at frame {count}")
            last = msg.timestamp
            count += 1
            try:
                message = db.get_message_by_frame_id(msg.arbitration_id)
            except KeyError:
                continue
            message.decode(msg.data)
    if count != len(drive.can.lines):
        raise RuntimeError(f"drive.log: python-can read {count} frames of {len(drive.can.lines)}")
    for n, line in enumerate(files["drive.nmea"].read_text(encoding="ascii").splitlines(), 1):
        body, _, _ = line[1:].partition("*")
        if nmea(body) != line:
            raise RuntimeError(f"drive.nmea line {n}: bad checksum: {line}")


def summary(drive: Drive, files: Mapping[str, Path]) -> str:
    lines = [f"{drive.route.title} — {drive.route.start:%Y-%m-%d %H:%M:%S} UTC"]
    for n, r in enumerate(drive.phases):
        lines.append(f"{n:3d} {r.start:7.2f}–{r.end:7.2f} s {r.end - r.start:6.2f} s  {r.distance:7.0f} m  "
                     f"top {r.top_kmh:5.1f} km/h  {r.frames:6d} frames  {r.name}")
    frames = len(drive.can.lines)
    lines.append(f"total {drive.duration:.2f} s ({drive.duration / 60:.1f} min), "
                 f"{drive.car.odometer - drive.route.car.odometer:.2f} km, {frames} frames "
                 f"({frames / drive.duration:.0f}/s), {len(drive.gnss.lines)} NMEA sentences; "
                 + ", ".join(f"{name} {_size(path.stat().st_size)}" for name, path in files.items()))
    lines.append("modes: " + _story(drive.modes))
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def generate(route_file: Path, dbc_file: Path, out: Path, strict: bool = True) -> tuple[Drive, dict[str, Path]]:
    """Simulate the route and write the three output files into ``out``."""
    route = load_route(route_file)
    db = load_dbc(dbc_file)
    drive = Simulation(route, db).run()
    if strict:
        check_margins(drive.can.updates, drive.steps, drive.modes)
    files = write_outputs(drive, out)
    verify(files, db, drive)
    return drive, files


def check(route_file: Path, dbc_file: Path, committed: Path) -> list[str]:
    """Regenerate into a temporary folder; return the names of committed files that differ."""
    with tempfile.TemporaryDirectory(prefix="demo-drive-") as tmp:
        generate(route_file, dbc_file, Path(tmp))
        return [name for name in OUTPUTS
                if not (committed / name).is_file()
                or (committed / name).read_bytes() != (Path(tmp) / name).read_bytes()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Writes drive.log (candump -l), drive.nmea, expected_modes.json "
                                            "and places.csv.")
    parser.add_argument("--route", type=Path, default=HERE / "route.toml", help="route description (TOML)")
    parser.add_argument("--dbc", type=Path, default=HERE / "demo.dbc", help="CAN database to encode with")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the outputs (default: next to "
                        "this script)")
    parser.add_argument("--check", action="store_true", help="regenerate into a temporary folder and exit 1 "
                        "if the files in --out differ")
    parser.add_argument("--allow-fragile", action="store_true", help="write even if a mode change sits "
                        "within 2 s of a threshold")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = check(args.route, args.dbc, args.out)
            if stale:
                print(f"out of date: {', '.join(stale)} (rerun {Path(__file__).name})", file=sys.stderr)
                return 1
            if not args.quiet:
                print(f"up to date: {', '.join(OUTPUTS)}")
            return 0
        drive, files = generate(args.route, args.dbc, args.out, strict=not args.allow_fragile)
    except (RouteError, FragileRoute) as exc:
        print(f"{Path(__file__).name}: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(summary(drive, files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
