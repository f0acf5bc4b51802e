"""The telemetry policy: samples on change beyond a threshold, heartbeats, a minimum interval, never stale values.

The policy's timers run on a real ``Clock`` sped up 50x (one vehicle second is
20 ms), so these tests wait for what they expect with generous timeouts and
check values and timestamps, never how fast anything happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from agent.clock import Clock
from agent.profile.model import TelemetryRule
from agent.telemetry.queue import Sample
from agent.policies.telemetry import TelemetryPolicy, changed_enough
from agent.vehicle import paths
from agent.vehicle.state import VehicleState

SPEED = 50.0
WAIT = 5.0


class Taken:
    """The policy's ``on_samples``: what it produced, and the vehicle time of each."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.samples: list[Sample] = []
        self.at: list[float] = []
        self.changed = asyncio.Event()

    def __call__(self, samples: list[Sample]) -> None:
        self.samples += samples
        self.at += [self.clock.now()] * len(samples)
        self.changed.set()

    @property
    def values(self) -> list[object]:
        return [s.value for s in self.samples]

    async def wait_for(self, count: int) -> list[Sample]:
        async with asyncio.timeout(WAIT):
            while len(self.samples) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.samples


@pytest.fixture
def clock() -> Clock:
    return Clock(SPEED)


@pytest.fixture
def state(clock: Clock) -> VehicleState:
    return VehicleState(clock=clock.now)


@pytest.fixture
def policies() -> Iterator[list[TelemetryPolicy]]:
    made: list[TelemetryPolicy] = []
    yield made
    for policy in made:
        policy.stop()


def make(state: VehicleState, clock: Clock, policies: list[TelemetryPolicy], *rules: TelemetryRule) -> Taken:
    taken = Taken(clock)
    policy = TelemetryPolicy(state, rules, clock, taken)
    policies.append(policy)
    policy.start()
    return taken


async def vehicle_sleep(clock: Clock, seconds: float) -> None:
    await asyncio.sleep(clock.real_delay(seconds))


# -- changes -------------------------------------------------------------------------


def test_what_counts_as_a_change() -> None:
    rule = TelemetryRule(paths.SPEED, change=2.0)
    assert not changed_enough(rule, 50.0, 51.9) and changed_enough(rule, 50.0, 52.0)
    assert changed_enough(rule, 50, 47.5) and not changed_enough(rule, 50, 50)
    assert changed_enough(rule, True, False) and changed_enough(rule, "P", "D") and not changed_enough(rule, "D", "D")
    assert changed_enough(rule, 1, "one"), "a change of type is a change"
    assert changed_enough(TelemetryRule(paths.SPEED, change=0.0), 1.0, 1.0000001)
    assert not changed_enough(TelemetryRule(paths.SPEED, every=5.0), 1.0, 99.0), "no change rule: heartbeats only"


async def test_numbers_are_sampled_when_they_moved_by_the_threshold_since_the_last_sample(
        state: VehicleState, clock: Clock, policies: list[TelemetryPolicy]) -> None:
    taken = make(state, clock, policies, TelemetryRule(paths.SPEED, change=2.0, min_interval=0.0))
    for value in (50.0, 50.5, 51.0, 51.9, 52.0, 52.5, 50.1, 50.0, 49.0):
        state.update(paths.SPEED, value, "can")
    assert taken.values == [50.0, 52.0, 50.0], "creeping changes add up against the last sample, not the last value"


async def test_other_values_are_sampled_on_any_change_and_zero_means_every_change(
        state: VehicleState, clock: Clock, policies: list[TelemetryPolicy]) -> None:
    taken = make(state, clock, policies,
                 TelemetryRule(paths.PARKING_BRAKE, change=5.0, min_interval=0.0),
                 TelemetryRule(paths.MODE, change=5.0, min_interval=0.0),
                 TelemetryRule(paths.ENGINE_SPEED, change=0.0, min_interval=0.0))
    for brake, mode, rpm in ((True, "parked", 800), (True, "idling", 801), (False, "idling", 801.5),
                             (False, "driving", 801.5), (True, "driving", 800)):
        state.update(paths.PARKING_BRAKE, brake, "can")
        state.update(paths.MODE, mode, "agent")
        state.update(paths.ENGINE_SPEED, rpm, "can")
    by_path = {p: [s.value for s in taken.samples if s.path == p]
               for p in (paths.PARKING_BRAKE, paths.MODE, paths.ENGINE_SPEED)}
    assert by_path == {paths.PARKING_BRAKE: [True, False, True], paths.MODE: ["parked", "idling", "driving"],
                       paths.ENGINE_SPEED: [800, 801, 801.5, 800]}


async def test_samples_carry_the_observations_timestamp_and_values_known_at_start_are_sampled(
        state: VehicleState, clock: Clock, policies: list[TelemetryPolicy]) -> None:
    state.update(paths.SPEED, 12.0, "can", timestamp=1776471120.5)
    state.update(paths.FUEL_LEVEL, 40, "can", timestamp=1776471100.0)
    taken = make(state, clock, policies, TelemetryRule(paths.SPEED, change=1.0, min_interval=0.0))
    state.update(paths.SPEED, 20.0, "can", timestamp=1776471121.25)
    state.update(paths.FUEL_LEVEL, 39, "can")
    assert taken.samples == [Sample(paths.SPEED, 12.0, 1776471120.5), Sample(paths.SPEED, 20.0, 1776471121.25)]


# -- the minimum interval --------------------------------------------------------------


async def test_a_change_too_soon_waits_and_the_latest_is_sent_with_its_own_timestamp(
        state: VehicleState, clock: Clock, policies: list[TelemetryPolicy]) -> None:
    taken = make(state, clock, policies, TelemetryRule(paths.SPEED, change=5.0, min_interval=2.0))
    state.update(paths.SPEED, 50.0, "can", timestamp=1000.0)
    state.update(paths.SPEED, 60.0, "can", timestamp=1000.1)
    state.update(paths.SPEED, 70.0, "can", timestamp=1000.2)
    state.update(paths.SPEED, 71.0, "can", timestamp=1000.3)
    assert taken.values == [50.0], "held back by min_interval"
    samples = await taken.wait_for(2)
    assert samples == [Sample(paths.SPEED, 50.0, 1000.0), Sample(paths.SPEED, 71.0, 1000.3)]
    assert taken.at[1] - taken.at[0] >= 2.0 - 1e-3


async def test_a_held_change_that_came_back_within_the_threshold_is_not_sent(
        state: VehicleState, clock: Clock, policies: list[TelemetryPolicy]) -> None:
    taken = make(state, clock, policies, TelemetryRule(paths.SPEED, change=5.0, min_interval=1.0))
    state.update(paths.SPEED, 50.0, "can")
    state.update(paths.SPEED, 60.0, "can")  # held
    state.update(paths.SPEED, 51.0, "can")  # back: nothing to tell
    await vehicle_sleep(clock, 3.0)
    state.update(paths.SPEED, 58.0, "can")
    await taken.wait_for(2)
    assert taken.values == [50.0, 58.0]


# -- heartbeats and staleness --------------------------------------------------------------


async def test_heartbeats_repeat_the_current_value_and_stop_while_it_is_stale(
        state: VehicleState, clock: Clock, policies: list[TelemetryPolicy]) -> None:
    state.set_stale_after("gnss", 1000.0)
    taken = make(state, clock, policies, TelemetryRule(paths.LATITUDE, every=2.0, min_interval=0.5))
    state.update(paths.LATITUDE, 37.39, "gnss", timestamp=500.0)
    await taken.wait_for(3)
    assert taken.samples[:3] == [Sample(paths.LATITUDE, 37.39, 500.0)] * 3, "heartbeat: current value, observed at"
    assert all(b - a >= 2.0 - 1e-3 for a, b in zip(taken.at, taken.at[1:]))

    state.set_stale_after("gnss", 0.0)
    await vehicle_sleep(clock, 0.1)
    assert state.expire() == [paths.LATITUDE]
    count = len(taken.samples)
    await vehicle_sleep(clock, 6.0)
    assert len(taken.samples) == count, "no heartbeat on a stale value"

    state.set_stale_after("gnss", 1000.0)
    state.refresh([paths.LATITUDE], timestamp=520.0)  # fresh again, same value: the overdue heartbeat goes
    await taken.wait_for(count + 1)
    assert taken.samples[count] == Sample(paths.LATITUDE, 37.39, 520.0)


async def test_a_heartbeat_rule_samples_the_first_value_and_then_ignores_changes(
        state: VehicleState, clock: Clock, policies: list[TelemetryPolicy]) -> None:
    taken = make(state, clock, policies, TelemetryRule(paths.FUEL_LEVEL, every=3.0, min_interval=0.0))
    state.update(paths.FUEL_LEVEL, 40, "obd")
    state.update(paths.FUEL_LEVEL, 39, "obd")
    state.update(paths.FUEL_LEVEL, 38, "obd")
    assert taken.values == [40]
    await taken.wait_for(2)
    assert taken.values[:2] == [40, 38], "the heartbeat brings the current value"


async def test_min_interval_also_spaces_heartbeats(
        state: VehicleState, clock: Clock, policies: list[TelemetryPolicy]) -> None:
    taken = make(state, clock, policies, TelemetryRule(paths.SPEED, every=0.1, change=0.0, min_interval=5.0))
    state.update(paths.SPEED, 1.0, "can")
    await taken.wait_for(2)
    for value in range(2, 40):
        state.update(paths.SPEED, float(value), "can")
    await taken.wait_for(4)
    assert all(b - a >= 5.0 - 1e-3 for a, b in zip(taken.at, taken.at[1:]))
    assert taken.values[:2] == [1.0, 1.0] and taken.values[2] == 39.0


# -- robustness ------------------------------------------------------------------------------


async def test_a_failing_consumer_is_logged_and_sampling_goes_on(
        state: VehicleState, clock: Clock, policies: list[TelemetryPolicy], caplog: pytest.LogCaptureFixture) -> None:
    seen: list[object] = []

    def flaky(samples: list[Sample]) -> None:
        seen.extend(s.value for s in samples)
        if len(seen) == 1:
            raise RuntimeError("queue full")

    policy = TelemetryPolicy(state, [TelemetryRule(paths.SPEED, change=1.0, min_interval=0.0)], clock, flaky)
    policies.append(policy)
    policy.start()
    state.update(paths.SPEED, 10.0, "can")
    state.update(paths.SPEED, 20.0, "can")
    assert seen == [10.0, 20.0] and "telemetry sample of Vehicle.Speed not taken" in caplog.text


async def test_after_stop_nothing_is_sampled_and_held_changes_are_dropped(
        state: VehicleState, clock: Clock, policies: list[TelemetryPolicy]) -> None:
    taken = make(state, clock, policies, TelemetryRule(paths.SPEED, every=1.0, change=1.0, min_interval=1.0))
    state.update(paths.SPEED, 10.0, "can")
    state.update(paths.SPEED, 20.0, "can")  # held for the interval
    policies[0].stop()
    policies[0].stop()
    state.update(paths.SPEED, 30.0, "can")
    await vehicle_sleep(clock, 4.0)
    assert taken.values == [10.0]
