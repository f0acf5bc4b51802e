"""The vehicle state store: change/reported events, unsubscribe, staleness, failing listeners."""

from __future__ import annotations

import logging

import pytest

from agent.vehicle.state import EventKind, StateEvent, VehicleState


class FakeTime:
    """A controllable clock (the store takes its clocks as arguments)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def state(clock: FakeTime) -> VehicleState:
    return VehicleState(clock=clock, wall=lambda: 1_700_000_000.0)


def test_update_records_value_timestamp_and_source(state: VehicleState) -> None:
    state.update("Vehicle.Speed", 63.5, "can", 1_700_000_123.5)
    reading = state.get("Vehicle.Speed")
    assert reading is not None
    assert (reading.value, reading.timestamp, reading.source, reading.is_stale) == (63.5, 1_700_000_123.5, "can", False)
    state.update("Vehicle.Cabin.Door.Row1.DriverSide.IsOpen", True, "can")
    assert state.get("Vehicle.Cabin.Door.Row1.DriverSide.IsOpen").timestamp == 1_700_000_000.0  # type: ignore[union-attr]


def test_changed_events_carry_old_and_new_and_reported_only_on_request(state: VehicleState) -> None:
    changed: list[StateEvent] = []
    everything: list[StateEvent] = []
    state.listen(changed.append, ["Vehicle.Speed"])
    state.listen(everything.append, ["Vehicle.Speed"], reported=True)
    state.update("Vehicle.Speed", 10, "can")
    state.update("Vehicle.Speed", 10, "can")  # same value: "reported" only
    state.update("Vehicle.Speed", 12, "can")
    state.update("Vehicle.Powertrain.CombustionEngine.Speed", 800, "can")  # other path
    assert [(e.kind, e.old.value if e.old else None, e.new.value) for e in changed] == [
        (EventKind.CHANGED, None, 10), (EventKind.CHANGED, 10, 12)]
    assert [e.kind for e in everything] == [EventKind.CHANGED, EventKind.REPORTED, EventKind.CHANGED]


def test_unsubscribe_stops_events(state: VehicleState) -> None:
    seen: list[StateEvent] = []
    unsubscribe = state.listen(seen.append)
    state.update("Vehicle.Speed", 1, "can")
    unsubscribe()
    unsubscribe()  # twice is harmless
    state.update("Vehicle.Speed", 2, "can")
    assert [e.new.value for e in seen] == [1]


def test_values_go_stale_when_their_source_goes_quiet(state: VehicleState, clock: FakeTime) -> None:
    state.set_stale_after("can", 2.0)
    events: list[StateEvent] = []
    state.listen(events.append)
    state.update("Vehicle.Speed", 50, "can")
    state.update("Vehicle.CurrentLocation.Latitude", 37.4, "gnss")  # no stale_after for gnss
    clock.now += 1.5
    assert state.expire() == []
    state.refresh(["Vehicle.Speed"])  # a repeated frame confirms the value
    clock.now += 1.5
    assert state.expire() == []
    clock.now += 1.0
    assert state.expire() == ["Vehicle.Speed"]
    assert state.value("Vehicle.Speed") is None, "stale values are not served as fresh"
    assert state.get("Vehicle.Speed").value == 50, "the last value is kept"  # type: ignore[union-attr]
    assert state.value("Vehicle.CurrentLocation.Latitude") == 37.4
    assert events[-1].kind is EventKind.STALE
    state.update("Vehicle.Speed", 50, "can")  # same value again: fresh, reported as a change
    last = events[-1]
    assert last.kind is EventKind.CHANGED and not last.new.is_stale


def test_refresh_of_a_stale_value_makes_it_fresh_and_says_so(state: VehicleState, clock: FakeTime) -> None:
    state.set_stale_after("can", 1.0)
    state.update("Vehicle.Speed", 5, "can")
    clock.now += 2
    state.expire()
    events: list[StateEvent] = []
    state.listen(events.append)
    state.refresh(["Vehicle.Speed", "Vehicle.Unknown"])
    assert state.value("Vehicle.Speed") == 5
    assert [(e.kind, e.path) for e in events] == [(EventKind.CHANGED, "Vehicle.Speed")]


def test_a_failing_listener_is_logged_and_the_others_still_run(state: VehicleState, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[object] = []

    def broken(event: StateEvent) -> None:
        raise RuntimeError("listener bug")

    state.listen(broken)
    state.listen(seen.append)
    with caplog.at_level(logging.ERROR):
        state.update("Vehicle.Speed", 3, "can")
    assert len(seen) == 1
    assert "listener bug" in caplog.text and "Vehicle.Speed" in caplog.text
