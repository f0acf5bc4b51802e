"""Telemetry rules changed at run time: laid over the profile's, kept across restarts, in force at once.

The store and the sampler are tested directly (a real SQLite file, a real
``VehicleState``, the real ``Telemetry`` with a slixmpp client that never
connects, as nothing here publishes); the ``telemetry`` command is run by a
slixmpp operator on the real Prosody, as in ``test_adhoc.py``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import slixmpp
from slixmpp.plugins.xep_0004 import Form

from agent.clock import Clock
from agent.commands.audit import AuditLog
from agent.commands.registry import AgentFacade, CommandContext, RateLimiter, Registry
from agent.commands.telemetry import telemetry_command
from agent.profile.model import TelemetryConfig, TelemetryRule
from agent.telemetry import RULES_DB_NAME, Telemetry
from agent.telemetry.overrides import MAX_RULES, RuleError, RuleOverrides
from agent.telemetry.queue import Sample
from agent.policies.telemetry import TelemetryPolicy
from agent.vehicle import paths
from agent.vehicle.state import VehicleState
from agent.telemetry.publisher import node_name
from agent.xmpp.plugins.base import enable
from agent.xmpp.plugins.commands import CommandsPlugin
from agent.xmpp.plugins.telemetry import TelemetryPlugin
from devserver.clients import WAIT, close_client, log_in, verified_client

SPEED_RULE = TelemetryRule(paths.SPEED, every=30.0, change=5.0)
RPM_RULE = TelemetryRule(paths.ENGINE_SPEED, change=100.0)
FUEL_RULE = TelemetryRule(paths.FUEL_LEVEL, every=60.0)
PROFILE = (SPEED_RULE, RPM_RULE, FUEL_RULE)
CONFIG = TelemetryConfig(service="pubsub.localhost", rules=PROFILE)
MODE_RULE = TelemetryRule(paths.MODE, change=0.0, min_interval=0.0)


def publisher_for(client: slixmpp.ClientXMPP, car: str, config: TelemetryConfig | None = None) -> TelemetryPlugin:
    """The car's telemetry publisher, as the agent makes it: the node named after the car, on the config's service."""
    config = config or TelemetryConfig(service="pubsub.localhost")
    assert config.service is not None
    return enable(client, TelemetryPlugin, service=config.service, node=node_name(config.node, car))


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.01)


# -- the store ---------------------------------------------------------------------------------


async def test_operator_changes_are_laid_over_the_profile_and_kept_when_reopened(tmp_path: Path) -> None:
    store = RuleOverrides(PROFILE, tmp_path / RULES_DB_NAME)
    faster = TelemetryRule(paths.SPEED, every=5.0, change=1.0, min_interval=0.5)
    await store.set(faster)
    await store.set(MODE_RULE)
    assert await store.remove(paths.ENGINE_SPEED)
    expected = (faster, FUEL_RULE, MODE_RULE)  # the profile's order, then the operators' new paths
    assert store.effective == expected
    assert [store.origin(r.path) for r in expected] == ["operator", "profile", "operator"]
    assert store.origin(paths.ENGINE_SPEED) is None and store.removed == (RPM_RULE,)
    store.close()

    again = RuleOverrides(PROFILE, tmp_path / RULES_DB_NAME)  # the agent restarts
    assert again.effective == expected and again.removed == (RPM_RULE,)
    assert again.origin(paths.SPEED) == "operator"
    again.close()


async def test_removing_a_profile_rule_persists_until_reset(tmp_path: Path) -> None:
    store = RuleOverrides(PROFILE, tmp_path / RULES_DB_NAME)
    assert await store.remove(paths.FUEL_LEVEL)
    assert not await store.remove(paths.FUEL_LEVEL), "a second removal finds no rule"
    await store.set(MODE_RULE)
    store.close()
    store = RuleOverrides(PROFILE, tmp_path / RULES_DB_NAME)
    assert store.effective == (SPEED_RULE, RPM_RULE, MODE_RULE)
    assert await store.reset() == 2
    assert store.effective == PROFILE and store.removed == ()
    store.close()
    store = RuleOverrides(PROFILE, tmp_path / RULES_DB_NAME)
    assert store.effective == PROFILE and store.changes == {}, "the reset is kept too"
    assert all(store.origin(r.path) == "profile" for r in PROFILE)
    store.close()


async def test_removing_an_operators_own_rule_leaves_no_trace(tmp_path: Path) -> None:
    store = RuleOverrides(PROFILE, tmp_path / RULES_DB_NAME)
    await store.set(MODE_RULE)
    assert await store.remove(paths.MODE)
    assert store.effective == PROFILE and store.changes == {}
    store.close()


async def test_setting_the_profiles_own_rule_makes_it_the_profiles_again(tmp_path: Path) -> None:
    store = RuleOverrides(PROFILE, tmp_path / RULES_DB_NAME)
    await store.remove(paths.SPEED)
    await store.set(TelemetryRule(paths.SPEED, every=30.0, change=5.0))
    assert store.effective == PROFILE and store.origin(paths.SPEED) == "profile" and store.changes == {}
    store.close()


@pytest.mark.parametrize(("rule", "why"), [
    (TelemetryRule("speed", every=1.0), "not a VSS path"),
    (TelemetryRule("Vehicle.Speed; DROP TABLE rules", every=1.0), "not a VSS path"),
    (TelemetryRule(paths.SPEED), r"every \(seconds\), change \(threshold\) or both"),
    (TelemetryRule(paths.SPEED, every=0.0), "every must be"),
    (TelemetryRule(paths.SPEED, every=float("inf")), "every must be"),
    (TelemetryRule(paths.SPEED, change=-1.0), "change must be"),
    (TelemetryRule(paths.SPEED, change=1.0, min_interval=float("nan")), "min_interval must be"),
])
async def test_an_unacceptable_rule_is_refused_and_nothing_is_stored(
        tmp_path: Path, rule: TelemetryRule, why: str) -> None:
    store = RuleOverrides(PROFILE, tmp_path / RULES_DB_NAME)
    with pytest.raises(RuleError, match=why):
        await store.set(rule)
    assert store.effective == PROFILE
    store.close()
    with sqlite3.connect(tmp_path / RULES_DB_NAME) as conn:
        assert conn.execute("SELECT count(*) FROM rules").fetchone() == (0,)


async def test_no_more_rules_than_a_batch_can_name(tmp_path: Path) -> None:
    store = RuleOverrides((), tmp_path / RULES_DB_NAME)
    for i in range(MAX_RULES):
        await store.set(TelemetryRule(f"Vehicle.Test.Signal{i}", every=60.0))
    with pytest.raises(RuleError, match="the most one car may have"):
        await store.set(TelemetryRule("Vehicle.Test.OneTooMany", every=60.0))
    await store.set(TelemetryRule("Vehicle.Test.Signal0", every=1.0))  # changing one is still allowed
    assert len(store.effective) == MAX_RULES
    store.close()


async def test_a_damaged_stored_change_is_skipped_with_a_log_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    RuleOverrides(PROFILE, tmp_path / RULES_DB_NAME).close()
    with sqlite3.connect(tmp_path / RULES_DB_NAME) as conn:
        conn.execute("INSERT INTO rules VALUES ('Vehicle.Speed', 0, -3, NULL, 1, 0)")
        conn.execute("INSERT INTO rules VALUES ('not a path', 0, 1, NULL, 1, 0)")
        conn.execute("INSERT INTO rules VALUES ('Vehicle.Powertrain.FuelSystem.RelativeLevel', 1, NULL, NULL, NULL, 0)")
    with caplog.at_level(logging.WARNING, logger="agent.telemetry.overrides"):
        store = RuleOverrides(PROFILE, tmp_path / RULES_DB_NAME)
    assert store.effective == (SPEED_RULE, RPM_RULE), "the good row (a removal) applies, the bad ones do not"
    assert "'Vehicle.Speed' ignored: Vehicle.Speed: every must be" in caplog.text
    assert "'not a path' ignored" in caplog.text
    store.close()


async def test_a_committed_change_survives_kill_9(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from pathlib import Path
        from agent.profile.model import TelemetryRule
        from agent.telemetry.overrides import RuleOverrides

        async def main() -> None:
            store = RuleOverrides((), Path({str(tmp_path / RULES_DB_NAME)!r}))
            await store.set(TelemetryRule("Vehicle.Speed", every=7.0))
            await store.remove("Vehicle.Speed") or print("no")
            await store.set(TelemetryRule("Vehicle.Speed", every=7.0, change=0.5))
            print("committed", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=WAIT,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == -signal.SIGKILL and done.stdout == "committed\n", done.stderr
    store = RuleOverrides((), tmp_path / RULES_DB_NAME)
    assert store.effective == (TelemetryRule(paths.SPEED, every=7.0, change=0.5),)
    store.close()


# -- the sampler -------------------------------------------------------------------------------


async def test_a_held_change_is_judged_by_the_new_rule_at_once() -> None:
    """A change held back by an hour's min_interval goes out as soon as the operator lowers it."""
    clock = Clock(50.0)
    state = VehicleState(clock=clock.now)
    taken: list[Sample] = []
    policy = TelemetryPolicy(state, (TelemetryRule(paths.SPEED, change=1.0, min_interval=3600.0),), clock,
                             taken.extend)
    policy.start()
    state.update(paths.SPEED, 10.0, "can", timestamp=1000.0)
    state.update(paths.SPEED, 20.0, "can", timestamp=1001.0)
    state.update(paths.SPEED, 20.0, "can", timestamp=1002.0)  # reported again: the change is still 1001's
    assert taken == [Sample(paths.SPEED, 10.0, 1000.0)], "20 waits for the interval"
    policy.replace_rules((TelemetryRule(paths.SPEED, change=1.0, min_interval=0.0),))
    assert taken == [Sample(paths.SPEED, 10.0, 1000.0), Sample(paths.SPEED, 20.0, 1001.0)]
    policy.replace_rules(())
    state.update(paths.SPEED, 90.0, "can", timestamp=1003.0)
    assert len(taken) == 2, "a path without a rule is not sampled"
    policy.stop()


@dataclass
class Car:
    state: VehicleState
    telemetry: Telemetry


@pytest.fixture
async def car(tmp_path: Path) -> AsyncIterator[Car]:
    client = slixmpp.ClientXMPP("car@localhost/car", "never used: nothing is published here")
    clock = Clock(50.0)
    state = VehicleState(clock=clock.now)
    telemetry = Telemetry(state, TelemetryConfig(service="pubsub.localhost", rules=(
        TelemetryRule(paths.SPEED, every=3600.0, min_interval=0.0),)), publisher_for(client, "car@localhost"),
        tmp_path, clock, asyncio.Event().wait)
    try:
        yield Car(state, telemetry)
    finally:
        await telemetry.stop()
        await close_client(client)


async def test_a_changed_rule_takes_effect_on_the_sampler_at_once_and_queued_samples_stay(car: Car) -> None:
    state, telemetry = car.state, car.telemetry
    state.update(paths.SPEED, 10.0, "can", timestamp=2000.0)
    state.update(paths.ENGINE_SPEED, 800, "can", timestamp=2000.0)
    telemetry.start()
    state.update(paths.SPEED, 30.0, "can", timestamp=2001.0)
    assert telemetry.pending == 1, "the profile's rule: only the baseline, then an hourly heartbeat"

    await telemetry.set_rule(TelemetryRule(paths.SPEED, change=5.0, min_interval=0.0))
    assert telemetry.pending == 2, "30 is 20 away from the last sample: taken as the rule changes"
    state.update(paths.SPEED, 32.0, "can", timestamp=2002.0)
    state.update(paths.SPEED, 40.0, "can", timestamp=2003.0)
    await telemetry.set_rule(TelemetryRule(paths.ENGINE_SPEED, change=0.0, min_interval=0.0))
    await telemetry.remove_rule(paths.SPEED)
    state.update(paths.SPEED, 100.0, "can", timestamp=2004.0)
    state.update(paths.ENGINE_SPEED, 900, "can", timestamp=2004.0)
    assert await telemetry.reset_rules() == 2
    state.update(paths.ENGINE_SPEED, 1000, "can", timestamp=2005.0)

    await until(lambda: telemetry.queue.pending() == 6)
    batch = await telemetry.queue.next_batch(100)
    assert batch is not None and list(batch.samples) == [
        Sample(paths.SPEED, 10.0, 2000.0),  # the profile's baseline
        Sample(paths.SPEED, 30.0, 2001.0),  # the operator's change rule, at once
        Sample(paths.SPEED, 40.0, 2003.0),  # 32 was within 5
        Sample(paths.ENGINE_SPEED, 800, 2000.0),  # a new path: its current value, as the baseline
        Sample(paths.ENGINE_SPEED, 900, 2004.0),  # speed 100 was not: its rule was removed
        Sample(paths.SPEED, 100.0, 2004.0),  # reset: the profile's rule again, from the current value
    ]  # and engine speed 1000 was not sampled: the reset removed its rule


async def test_telemetry_restarted_on_the_same_folder_keeps_the_operators_rules(car: Car, tmp_path: Path) -> None:
    await car.telemetry.set_rule(MODE_RULE)
    await car.telemetry.stop()
    with pytest.raises(RuleError, match="telemetry has stopped"):
        await car.telemetry.set_rule(MODE_RULE)
    client = slixmpp.ClientXMPP("car@localhost/car", "unused")
    again = Telemetry(VehicleState(), TelemetryConfig(service="pubsub.localhost"),
                      publisher_for(client, "car@localhost"), tmp_path, Clock(), asyncio.Event().wait)
    assert again.rules == (MODE_RULE,) and again.origin(paths.MODE) == "operator"
    await again.stop()
    await close_client(client)


async def test_with_telemetry_off_the_command_says_so_and_changes_nothing(tmp_path: Path) -> None:
    command = telemetry_command(None, TelemetryConfig())
    facade = AgentFacade(VehicleState())
    shown = await command.handler(CommandContext("operator@localhost/x", {"action": "show"}, facade))
    changed = await command.handler(CommandContext(
        "operator@localhost/x", {"action": "set", "path": paths.SPEED, "every": 1.0}, facade))
    assert shown.ok and "off in this car's profile" in shown.text and shown.fields == ()
    assert not changed.ok and "off in this car's profile" in changed.text and "nothing was changed" in changed.text
    assert list(tmp_path.iterdir()) == []


# -- over XMPP -----------------------------------------------------------------------------------


@dataclass
class Rig:
    car: slixmpp.ClientXMPP
    operator: slixmpp.ClientXMPP
    audit: AuditLog
    state: VehicleState
    telemetry: Telemetry
    service: CommandsPlugin
    data_dir: Path
    operators: list[str]

    @property
    def car_jid(self) -> str:
        return str(self.car.boundjid.full)

    async def run(self, node: str = "telemetry", **kwargs: Any) -> Any:
        async with asyncio.timeout(WAIT):
            return await self.operator.plugin["xep_0050"].send_command(self.car_jid, node, **kwargs)

    async def submit(self, **values: str) -> Any:
        """Open the command's form and submit ``values``; the reply."""
        first = await self.run()
        assert first["command"]["status"] == "executing"
        return await self.again(first, **values)

    async def again(self, previous: Any, **values: str) -> Any:
        """Submit ``values`` in the session of ``previous``."""
        return await self.run(action="complete", sessionid=previous["command"]["sessionid"],
                              payload=form(**values))

    async def results(self) -> list[str]:
        return [e.result for e in await self.audit.tail(100) if e.command == "telemetry"]

    async def restart(self) -> None:
        """What an agent restart does to telemetry and commands: all rebuilt on the same data folder."""
        await self.service.stop()
        await self.telemetry.stop()
        self.state = VehicleState()
        self.telemetry = open_telemetry(self.state, self.car, self.data_dir)
        self.service = open_service(self.car, self.telemetry, self.operators, self.audit, self.state)


def form(**values: str) -> Form:
    submitted = Form()
    submitted["type"] = "submit"
    for var, value in values.items():
        submitted.add_field(var=var, value=value)
    return submitted


def shown(reply: Any) -> list[tuple[str, str]]:
    """A result form's rows: (label, value)."""
    return [(str(f["label"]), str(f["value"])) for f in reply["command"]["form"].get_fields().values()]


def note(reply: Any) -> str:
    return str(reply["command"]["notes"][0][1])


def open_telemetry(state: VehicleState, car: slixmpp.ClientXMPP, data_dir: Path) -> Telemetry:
    telemetry = Telemetry(state, CONFIG, publisher_for(car, str(car.boundjid.bare), CONFIG), data_dir, Clock(),
                          asyncio.Event().wait)
    telemetry.start()
    return telemetry


def open_service(car: slixmpp.ClientXMPP, telemetry: Telemetry, operators: list[str], audit: AuditLog,
                 state: VehicleState) -> CommandsPlugin:
    registry = Registry([telemetry_command(telemetry, CONFIG)])
    return enable(car, CommandsPlugin, registry=registry, operators=operators, audit=audit,
                  agent=AgentFacade(state, audit=audit), limiter=RateLimiter(per_minute=120, burst=60))


@pytest.fixture
async def rig(prosody_server: Any, xmpp_account: Any, tmp_path: Path) -> AsyncIterator[Rig]:
    (car_jid, car_pw), (op_jid, op_pw) = xmpp_account("car"), xmpp_account("operator")
    car = verified_client(car_jid, car_pw, prosody_server, resource="car")
    operator = verified_client(op_jid, op_pw, prosody_server, plugins=["xep_0030", "xep_0004", "xep_0050"])
    audit = AuditLog(tmp_path / "audit.db")
    data_dir = tmp_path / "state"
    data_dir.mkdir()
    state = VehicleState()
    rig: Rig | None = None
    try:
        for client in (car, operator):
            await log_in(client, prosody_server)
        telemetry = open_telemetry(state, car, data_dir)
        service = open_service(car, telemetry, [op_jid], audit, state)
        rig = Rig(car, operator, audit, state, telemetry, service, data_dir, [op_jid])
        yield rig
    finally:
        if rig is not None:
            await rig.service.stop()
            await rig.telemetry.stop()
        for client in (car, operator):
            await close_client(client)
        audit.close()


async def test_the_form_offers_the_actions_and_shows_the_profiles_rules(rig: Rig) -> None:
    first = await rig.run()
    fields = first["command"]["form"].get_fields()
    assert list(fields) == ["action", "path", "every", "change", "min_interval"]
    assert [o["value"] for o in fields["action"]["options"]] == ["show", "set", "remove", "reset"]
    done = await rig.again(first)  # the defaults: show
    assert done["command"]["status"] == "completed"
    assert shown(done) == [
        (paths.SPEED, "every 30 s, on a change of 5, at most every 1 s [profile]"),
        (paths.ENGINE_SPEED, "on a change of 100, at most every 1 s [profile]"),
        (paths.FUEL_LEVEL, "every 60 s, at most every 1 s [profile]"),
    ]
    assert "3 rules in force" in note(done) and "pubsub.localhost" in note(done)


async def test_an_operator_sets_a_rule_and_it_is_in_force_at_once(rig: Rig) -> None:
    done = await rig.submit(action="set", path=paths.SPEED, every="10", change="2", min_interval="0.5")
    assert done["command"]["status"] == "completed"
    assert note(done).startswith(f"Changed the rule for {paths.SPEED}: every 10 s, on a change of 2, "
                                 "at most every 0.5 s.")
    assert (paths.SPEED, "every 10 s, on a change of 2, at most every 0.5 s [operator]") in shown(done)
    assert rig.telemetry.rules[0] == TelemetryRule(paths.SPEED, every=10.0, change=2.0, min_interval=0.5)

    added = await rig.submit(action="set", path=paths.MODE, change="0")
    assert note(added).startswith(f"Added the rule for {paths.MODE}: on every change, at most every 1 s.")
    assert "this car has no value for Headunit.VehicleMode yet" in note(added)
    assert rig.telemetry.rules[-1] == TelemetryRule(paths.MODE, change=0.0)
    assert await rig.results() == ["ok", "ok"]
    entry = (await rig.audit.tail(1))[0]
    assert entry.arguments == {"action": "set", "path": paths.MODE, "change": 0.0}


async def test_invalid_submissions_return_the_form_with_the_error_and_change_nothing(rig: Rig) -> None:
    first = await rig.run()
    tries = [
        ({"action": "set", "path": paths.SPEED}, "every", "set needs Every (s), On a change of, or both"),
        ({"action": "set", "path": "speed", "every": "1"}, "path", "'speed' is not a path like Vehicle.Speed"),
        ({"action": "set", "path": paths.SPEED, "change": "-1"}, "change", "-1.0 is below the minimum 0"),
        ({"action": "set", "path": paths.SPEED, "every": "0"}, "every", "Every (s): 0 is not above 0"),
        ({"action": "set", "path": paths.SPEED, "every": "soon"}, "every", "'soon' is not a number"),
        ({"action": "remove"}, "path", "VSS path: is required to remove a rule"),
        ({"action": "remove", "path": paths.MODE}, "path", f"no rule for {paths.MODE} to remove"),
        ({"action": "rewrite"}, "action", "'rewrite' is not one of show, set, remove, reset"),
    ]
    reply = first
    for values, var, error in tries:
        reply = await rig.again(first, **values)
        assert reply["command"]["status"] == "executing", values
        assert error in reply["command"]["form"]["instructions"], values
        assert error in reply["command"]["form"].get_fields()[var]["desc"], values
    assert rig.telemetry.rules == PROFILE and rig.telemetry.overrides.changes == {}
    assert await rig.results() == ["invalid"] * len(tries)
    done = await rig.again(reply, action="set", path=paths.SPEED, every="15")  # corrected, same session
    assert done["command"]["status"] == "completed"
    assert rig.telemetry.rules[0] == TelemetryRule(paths.SPEED, every=15.0)


async def test_remove_then_reset_returns_to_the_profiles_rules(rig: Rig) -> None:
    await rig.submit(action="set", path=paths.MODE, change="0")
    removed = await rig.submit(action="remove", path=paths.FUEL_LEVEL)
    assert note(removed).startswith(f"Removed the rule for {paths.FUEL_LEVEL}; 'reset' brings the profile's back.")
    assert (paths.FUEL_LEVEL, "off: removed by an operator [profile: every 60 s, at most every 1 s]") in shown(removed)
    assert [r.path for r in rig.telemetry.rules] == [paths.SPEED, paths.ENGINE_SPEED, paths.MODE]

    reset = await rig.submit(action="reset")
    assert note(reset).startswith("Forgot 2 operator changes: the profile's rules apply.")
    assert rig.telemetry.rules == PROFILE
    assert all(value.endswith("[profile]") for _, value in shown(reset))
    await rig.restart()
    assert rig.telemetry.rules == PROFILE, "the reset was kept"


async def test_a_rule_set_by_an_operator_is_still_there_after_a_restart(rig: Rig) -> None:
    await rig.submit(action="set", path=paths.ENGINE_SPEED, change="250", min_interval="2")
    await rig.submit(action="remove", path=paths.SPEED)
    await rig.restart()
    assert rig.telemetry.rules == (TelemetryRule(paths.ENGINE_SPEED, change=250.0, min_interval=2.0), FUEL_RULE)
    done = await rig.submit(action="show")
    assert shown(done) == [
        (paths.ENGINE_SPEED, "on a change of 250, at most every 2 s [operator]"),
        (paths.FUEL_LEVEL, "every 60 s, at most every 1 s [profile]"),
        (paths.SPEED, "off: removed by an operator [profile: every 30 s, on a change of 5, at most every 1 s]"),
    ]
