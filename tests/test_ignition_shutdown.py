"""The ignition-off sequence: flush, "ignition off" presence, offers withdrawn, then the power-off command.

The ignition is a gpiozero MockFactory pin driven high and low (the agent's own GPIO driver
reads it), or CAN-style values written into the vehicle state. The power off is intercepted
at the systemd boundary: ``[power] poweroff_command`` names a script of the test's that
records its arguments, the telemetry queue and the clock when it runs, and exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.app import Agent
from agent.cabin.offers import Offers
from agent.clock import Clock
from agent.errors import ProfileError
from agent.policies.presence import PresencePolicy, PresenceUpdate
from agent.policies.power import MARKER, IgnitionShutdown, Phase
from agent.profile import load_profile
from agent.profile.model import PresencePolicyConfig, PowerConfig
from agent.telemetry.queue import Sample, _sample
from agent.vehicle import paths
from agent.vehicle.mode import ModeSettings
from agent.vehicle.mode_tracker import ModeTracker
from agent.vehicle.state import VehicleState
from agent.telemetry.publisher import node_name
from devserver.clients import Watcher
from tests.harness.agentproc import demo_profile, wait_until
from devserver.fleet import FleetReceiver
from devserver.prosody import Prosody

IGNITION_PIN = 22
WAIT = 20.0  # generous: only so a broken agent cannot hang the test
PENDING = ("SELECT count(*) FROM samples LEFT JOIN batches ON batch = counter WHERE acked_at IS NULL")


class PoweroffScript:
    """An executable standing in for ``systemctl``: appends one JSON line per run, exits with ``status``."""

    def __init__(self, folder: Path, *, status: int = 0) -> None:
        self.path = folder / "poweroff"
        self.record = folder / "poweroff.calls"
        self.status = status
        self.telemetry_db: Path | None = None  # when set, the script also reads the queue as it runs

    def write(self) -> None:
        self.path.write_text(f"""#!{sys.executable}
import json, sqlite3, sys, time
record = {{"argv": sys.argv[1:], "at": time.monotonic()}}
db = {str(self.telemetry_db) if self.telemetry_db else ""!r}
if db:
    conn = sqlite3.connect(db)
    record["pending"] = conn.execute({PENDING!r}).fetchone()[0]
    record["modes"] = [r[0] for r in conn.execute(
        "SELECT value FROM samples WHERE path = 'Headunit.VehicleMode' ORDER BY seq")]
    conn.close()
with open({str(self.record)!r}, "a") as out:
    out.write(json.dumps(record) + "\\n")
if {self.status}:
    print("Failed to power off system: Access denied")
sys.exit({self.status})
""")
        self.path.chmod(0o755)

    def calls(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]


# -- the whole agent, its GPIO ignition on gpiozero's MockFactory -------------------------------


def write_profile(folder: Path, prosody: Prosody, operator: str, script: PoweroffScript, *,
                  enabled: bool = True, delay: float = 1.0) -> Path:
    path = folder / "car.toml"
    path.write_text(f"""
[profile]
name = "ignition test car"

[vehicle.gpio]
pin_factory = "mock"
ignition_pin = {IGNITION_PIN}
ignition_bounce = 0.01

[policies.mode]
off_after = 0.5

[fleet]
operators = ["{operator}"]

[telemetry]
service = "{prosody.pubsub_host}"
batch_delay = 600  # nothing goes out in a test's time unless flushed

[[telemetry.rules]]
path = "Headunit.VehicleMode"
change = 0
min_interval = 0

[dashboard]
enabled = false

[power]
enabled = {str(enabled).lower()}
shutdown_delay = {delay}
poweroff_command = ["{script.path}", "--no-wall"]
""")
    return path


class Car:
    """A registered car, the fleet's node for it, an operator watching it, and its profile."""

    def __init__(self, prosody: Prosody, folder: Path, **options: Any) -> None:
        self.prosody = prosody
        server = prosody.server_info()
        self.password = secrets.token_urlsafe(12)
        self.jid = prosody.register(f"car-{secrets.token_hex(3)}", self.password)
        operator_password = secrets.token_urlsafe(12)
        operator = prosody.register(f"op-{secrets.token_hex(3)}", operator_password)
        fleet_password = secrets.token_urlsafe(12)
        fleet = prosody.register("fleet", fleet_password)
        self.script = PoweroffScript(folder)
        self.script.write()  # the profile is refused unless the program exists
        self.profile = demo_profile(server, self.jid, self.password,
                                    path=write_profile(folder, prosody, operator, self.script, **options))
        assert self.profile.storage.data_dir is not None
        self.data_dir = self.profile.storage.data_dir
        self.script.telemetry_db = self.data_dir / "telemetry.db"
        self.script.write()
        self.receiver = FleetReceiver(fleet, fleet_password, server, prosody.pubsub_host,
                                      node_name(self.profile.telemetry.node, self.jid))
        self.watcher = Watcher(operator, operator_password, server, self.jid)

    async def __aenter__(self) -> Car:
        await self.receiver.connect()
        await self.receiver.provision(self.jid)
        await self.watcher.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.watcher.stop()
        await self.receiver.stop()


async def started(car: Car) -> Agent:
    agent = Agent(car.profile)
    await agent.start()
    await wait_until(lambda: agent.xmpp.is_online, WAIT)
    return agent


def ignition(agent: Agent, on: bool) -> None:
    """Drive the ignition sense line, as the optocoupler would."""
    assert agent.gpio is not None
    pin = agent.gpio.factory.pin(IGNITION_PIN)
    pin.drive_high() if on else pin.drive_low()


async def switch_on(agent: Agent) -> None:
    ignition(agent, True)
    await wait_until(lambda: agent.state.value(paths.MODE) == "parked", WAIT)


def recorded(data_dir: Path) -> list[Sample]:
    with sqlite3.connect(data_dir / "telemetry.db") as db:
        rows = db.execute("SELECT path, kind, value, timestamp FROM samples ORDER BY seq").fetchall()
    return [_sample(*row) for row in rows]


def to_ms(sample: Sample) -> Sample:
    return Sample(sample.path, sample.value, round(sample.timestamp * 1000) / 1000)


async def test_ignition_off_flushes_shows_off_withdraws_offers_then_powers_off(
        prosody: Prosody, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with Car(prosody, tmp_path) as car:
        agent = await started(car)
        sent: list[tuple[float, PresenceUpdate | None]] = []
        agent.presence.changed.listen(lambda _: sent.append((time.monotonic(), agent.presence.last)))
        try:
            await switch_on(agent)
            offer = agent.offers.offer_call("friend@example.org", ["audio"])
            ignition(agent, False)
            await wait_until(lambda: car.script.calls(), WAIT)
            await car.watcher.wait_for(lambda: any(p.show == "xa" and p.status == "Ignition off"
                                                   for p in car.watcher.seen), WAIT)
        finally:
            await agent.stop()
    [call] = car.script.calls()
    assert call["argv"] == ["--no-wall"], "the profile's command, arguments as given, no shell"
    assert call["pending"] == 0, "every sample was acknowledged by the fleet before the power off"
    assert call["modes"][-2:] == ["parked", "off"], "including the mode 'off' recorded during the delay"
    off_sent = [at for at, update in sent if update is not None and update.show == "xa"
                and update.status == "Ignition off"]
    assert off_sent and off_sent[0] < call["at"], "the ignition-off presence went out before the power off"
    assert offer.outcome == "withdrawn", "nobody is left to answer the call"
    await car.receiver.connect()
    await car.receiver.catch_up()
    await car.receiver.stop()
    assert car.receiver.samples == [to_ms(s) for s in recorded(car.data_dir)], "the fleet has every sample"
    messages = [r.getMessage() for r in caplog.records if r.name == "agent.policies.power"]
    assert any("powering the board off in 1 s" in m for m in messages), messages
    assert any("power off asked" in m for m in messages), messages


async def test_ignition_back_within_the_delay_cancels_the_power_off(
        prosody: Prosody, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with Car(prosody, tmp_path) as car:
        agent = await started(car)
        try:
            await switch_on(agent)
            ignition(agent, False)
            await wait_until(lambda: agent.power.phase is Phase.COUNTING_DOWN, WAIT)
            assert (car.data_dir / MARKER).exists(), "the countdown is written down before it runs"
            ignition(agent, True)
            await wait_until(lambda: agent.power.phase is Phase.IDLE, WAIT)
            await asyncio.sleep(car.profile.power.shutdown_delay + 2.0)  # past the cancelled deadline
            assert car.script.calls() == [], "cancelled: the command never ran"
            assert not (car.data_dir / MARKER).exists()
            ignition(agent, False)  # a later ignition off still powers off, once
            await wait_until(lambda: car.script.calls(), WAIT)
        finally:
            await agent.stop()
    assert len(car.script.calls()) == 1
    assert any("power off cancelled" in r.getMessage() for r in caplog.records), "the cancel is logged"


async def test_power_disabled_never_runs_the_command(
        prosody: Prosody, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with Car(prosody, tmp_path, enabled=False) as car:
        agent = await started(car)
        try:
            await switch_on(agent)
            ignition(agent, False)
            await wait_until(lambda: agent.power.phase is Phase.STAYING_ON, WAIT)
            assert agent.presence.last == PresenceUpdate("xa", "Ignition off", 0)
            await asyncio.sleep(car.profile.power.shutdown_delay + 2.0)
            assert agent.power.phase is Phase.STAYING_ON
        finally:
            await agent.stop()
    assert car.script.calls() == [], "power off disabled: the board stays on"
    assert not (car.data_dir / MARKER).exists()
    assert any("the board stays on ([power] enabled = false)" in r.getMessage() for r in caplog.records)


async def test_a_countdown_interrupted_by_a_restart_resumes_with_the_ignition_still_off(
        prosody: Prosody, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with Car(prosody, tmp_path, delay=2.0) as car:
        first = await started(car)
        try:
            await switch_on(first)
            ignition(first, False)
            await wait_until(lambda: first.power.phase is Phase.COUNTING_DOWN, WAIT)
        finally:
            await first.stop()  # systemd restarts the agent in the middle of the delay
        assert car.script.calls() == [] and (car.data_dir / MARKER).exists()
        second = await started(car)  # its ignition sense reads off from the start
        try:
            await wait_until(lambda: car.script.calls(), WAIT)
        finally:
            await second.stop()
    assert len(car.script.calls()) == 1
    assert any("after a restart during a power-off countdown" in r.getMessage() for r in caplog.records)


# -- the sequence alone, on CAN-style ignition values -------------------------------------------


class Sink:
    """What the presence policy sends, with the (system-wide monotonic) time it was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, PresenceUpdate]] = []

    def send_presence_update(self, update: PresenceUpdate) -> None:
        self.sent.append((time.monotonic(), update))


class Parts:
    def __init__(self, tmp_path: Path, *, status: int = 0, enabled: bool = True) -> None:
        self.state = VehicleState()
        self.mode = ModeTracker(self.state, ModeSettings(off_after=0.1), Clock())
        self.sink = Sink()
        self.presence = PresencePolicy(self.state, PresencePolicyConfig(), self.sink)
        self.offers = Offers()
        self.script = PoweroffScript(tmp_path, status=status)
        self.script.write()
        self.marker = tmp_path / MARKER
        self.power = IgnitionShutdown(self.state, PowerConfig(enabled, 0.3, (str(self.script.path),)),
                                      self.presence, self.offers, marker=self.marker)

    def start(self) -> None:
        self.mode.start()
        self.presence.start()
        self.power.start()

    async def stop(self) -> None:
        await self.power.stop()
        self.presence.stop()
        self.mode.stop()

    def ignition(self, value: str) -> None:
        self.state.update(paths.LOW_VOLTAGE_STATE, value, "can")


async def test_can_acc_to_lock_powers_off_once_and_off_to_lock_is_not_a_second_drop(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    parts.start()
    try:
        parts.ignition("ACC")
        parts.ignition("OFF")
        assert parts.power.as_json()["phase"] == "counting down"
        parts.ignition("LOCK")
        await wait_until(lambda: parts.power.phase is Phase.POWERING_OFF and parts.script.calls(), WAIT)
        await asyncio.sleep(0.5)  # a second sequence, if one had started, would have run by now
    finally:
        await parts.stop()
    [call] = parts.script.calls()
    off = [at for at, update in parts.sink.sent if update.status == "Ignition off"]
    assert off and off[-1] < call["at"], "the presence policy showed ignition off before the power off"


async def test_starting_with_the_ignition_off_stays_on_unless_a_countdown_was_interrupted(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    parts.ignition("LOCK")  # known before the agent starts: a bench, or a board woken for another reason
    parts.start()
    try:
        await asyncio.sleep(1.0)  # three times the delay
        assert parts.power.phase is Phase.IDLE and parts.script.calls() == []
    finally:
        await parts.stop()
    parts = Parts(tmp_path)
    parts.marker.write_text("{}")  # left by an agent that was counting down
    parts.start()
    parts.ignition("ON")  # the first reading is on: the marker goes, nothing is resumed
    await parts.stop()
    assert not parts.marker.exists()
    parts = Parts(tmp_path)
    parts.marker.write_text("{}")
    parts.start()
    try:
        parts.ignition("OFF")
        await wait_until(lambda: parts.script.calls(), WAIT)
    finally:
        await parts.stop()


async def test_a_stale_ignition_is_not_an_ignition_off(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    parts.state.set_stale_after("can", 0.05)
    parts.start()
    try:
        parts.ignition("ON")
        await asyncio.sleep(0.1)
        assert parts.state.expire() == [paths.LOW_VOLTAGE_STATE], "the bus went quiet"
        parts.ignition("ON")  # and speaks again
        await asyncio.sleep(0.6)
        assert parts.power.phase is Phase.IDLE and parts.script.calls() == []
    finally:
        await parts.stop()


async def test_a_failing_poweroff_command_is_logged_and_the_board_stays_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    parts = Parts(tmp_path, status=1)
    parts.start()
    try:
        parts.ignition("ON")
        parts.ignition("OFF")
        await wait_until(lambda: parts.power.phase is Phase.FAILED, WAIT)
    finally:
        await parts.stop()
    assert len(parts.script.calls()) == 1
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "exited with 1: Failed to power off system: Access denied" in error


# -- the [power] profile section ------------------------------------------------------------------


def profile_with(tmp_path: Path, power: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(f'[profile]\nname = "p"\n[account]\njid = "car@example.org"\npassword = "x"\n[vehicle]\n'
                    f"[power]\n{power}\n")
    return path


def test_power_defaults_are_off_with_two_minutes_and_systemctl(tmp_path: Path) -> None:
    power = load_profile(profile_with(tmp_path, "")).power
    assert power == PowerConfig(enabled=False, shutdown_delay=120.0, poweroff_command=("systemctl", "poweroff"))
    script = PoweroffScript(tmp_path)
    script.write()
    power = load_profile(profile_with(tmp_path, f'enabled = true\nshutdown_delay = 30\n'
                                                f'poweroff_command = ["{script.path}", "-i"]')).power
    assert power == PowerConfig(True, 30.0, (str(script.path), "-i"))


@pytest.mark.parametrize(("power", "key", "expected"), [
    ("shutdown_delay = -1", "power.shutdown_delay", "a number >= 0"),
    ("poweroff_command = []", "power.poweroff_command", "a command as an array of strings"),
    ("poweroff_command = \"systemctl poweroff\"", "power.poweroff_command", "an array"),
    ('poweroff_command = ["bin/off"]', "power.poweroff_command[0]", "no relative path"),
    ('enabled = true\npoweroff_command = ["/nonexistent/poweroff"]', "power.poweroff_command[0]",
     "a program that exists"),
    ("delay = 10", "power.delay", "a known key"),
])
def test_a_bad_power_section_is_refused_naming_the_key(tmp_path: Path, power: str, key: str,
                                                       expected: str) -> None:
    with pytest.raises(ProfileError) as refused:
        load_profile(profile_with(tmp_path, power))
    assert refused.value.key == key and expected in str(refused.value), str(refused.value)


def test_a_missing_program_is_accepted_while_power_off_is_disabled(tmp_path: Path) -> None:
    """A car's profile still passes ``headunit check`` on a desk without the program."""
    power = load_profile(profile_with(tmp_path, 'poweroff_command = ["/nonexistent/poweroff"]')).power
    assert power.poweroff_command == ("/nonexistent/poweroff",) and not power.enabled


def test_the_demo_profile_never_powers_off() -> None:
    from tests.harness.agentproc import DEMO_PROFILE

    profile = load_profile(DEMO_PROFILE, local_only=True)
    assert profile.power.enabled is False
    assert dataclasses.replace(profile.power, enabled=True).shutdown_delay == 120.0
