"""The presence policy: mode changes go out at once, text-only changes are rate-limited."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.policies.presence import PresencePolicy, PresenceUpdate, render
from agent.profile.model import PresencePolicyConfig
from agent.vehicle import paths
from agent.vehicle.state import VehicleState


class Sink:
    def __init__(self) -> None:
        self.sent: list[PresenceUpdate] = []

    def send_presence_update(self, update: PresenceUpdate) -> None:
        self.sent.append(update)


class ManualTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_templates_fill_known_values_and_leave_out_segments_with_unknown_ones() -> None:
    template = "Driving · {speed:.0f} km/h · {road} {direction}"
    assert render(template, {"speed": 63.4, "road": "A7", "direction": "northbound"}) == (
        "Driving · 63 km/h · A7 northbound")
    assert render(template, {"speed": 63.4, "road": None}) == "Driving · 63 km/h"
    assert render(template, {}) == "Driving"
    assert render("{speed:.0f} km/h", {}) == ""


async def test_a_mode_change_goes_out_at_once_and_speed_only_changes_are_rate_limited() -> None:
    state = VehicleState()
    sink = Sink()
    clock = ManualTime()
    policy = PresencePolicy(state, PresencePolicyConfig(min_text_interval=30.0), sink, monotonic=clock)
    state.update(paths.MODE, "parked", "agent")
    policy.start()
    assert sink.sent == [PresenceUpdate(None, "Parked", 0)]

    state.update(paths.SPEED, 12.0, "can")
    state.update(paths.MODE, "driving", "agent")
    assert sink.sent[-1] == PresenceUpdate("dnd", "Driving", 0, "Driving · 12 km/h"), "mode change: immediately"
    for speed in range(13, 80):  # a busy drive: the speed changes many times a second
        state.update(paths.SPEED, float(speed), "can")
    assert len(sink.sent) == 2, "text-only updates wait for the interval"

    clock.now += 30.0
    await asyncio.sleep(0.05)  # the pending flush was scheduled for the real 30 s; nudge it
    policy.push()
    assert sink.sent[-1] == PresenceUpdate("dnd", "Driving", 0, "Driving · 79 km/h"), "latest value when the interval passed"
    assert len(sink.sent) == 3

    state.update(paths.SPEED, 0.0, "can")
    state.update(paths.MODE, "parked", "agent")
    assert sink.sent[-1] == PresenceUpdate(None, "Parked", 0) and len(sink.sent) == 4
    policy.stop()
    state.update(paths.MODE, "off", "agent")
    assert len(sink.sent) == 4, "nothing after stop"


async def test_a_pending_text_update_is_sent_by_the_timer_without_new_events() -> None:
    state = VehicleState()
    sink = Sink()
    policy = PresencePolicy(state, PresencePolicyConfig(min_text_interval=0.2), sink)
    state.update(paths.MODE, "driving", "agent")
    state.update(paths.SPEED, 10.0, "can")
    policy.start()
    state.update(paths.SPEED, 55.0, "can")
    assert sink.sent[-1].for_operators == "Driving · 10 km/h"
    await asyncio.sleep(0.5)
    assert sink.sent[-1].for_operators == "Driving · 55 km/h" and len(sink.sent) == 2
    policy.stop()


def test_road_and_direction_come_from_the_places_file_and_the_heading(tmp_path: Path) -> None:
    places = tmp_path / "places.csv"
    places.write_text("lat,lon,name\n37.4000,127.1000,Pangyoyeok-ro\n37.5000,127.2000,Gyeongbu Expressway\n")
    state = VehicleState()
    sink = Sink()
    policy = PresencePolicy(state, PresencePolicyConfig(places=places, min_text_interval=0), sink)
    state.update(paths.MODE, "parked", "agent")
    state.update(paths.LATITUDE, 37.4001, "gnss")
    state.update(paths.LONGITUDE, 127.1001, "gnss")
    policy.start()
    assert sink.sent[-1].for_operators == "Parked · Pangyoyeok-ro"
    state.update(paths.SPEED, 98.0, "can")
    state.update(paths.HEADING, 10.0, "gnss")
    state.update(paths.LATITUDE, 37.5001, "gnss")
    state.update(paths.LONGITUDE, 127.2001, "gnss")
    state.update(paths.MODE, "driving", "agent")
    assert sink.sent[-1].for_operators == "Driving · 98 km/h · Gyeongbu Expressway northbound"
    state.update(paths.LATITUDE, 38.9, "gnss")  # far from every known place
    assert sink.sent[-1].for_operators == "Driving · 98 km/h"
    policy.stop()


def test_an_unchanged_presence_is_not_sent_again() -> None:
    state = VehicleState()
    sink = Sink()
    policy = PresencePolicy(state, PresencePolicyConfig(), sink)
    state.update(paths.MODE, "off", "agent")
    policy.start()
    state.update(paths.MODE, "off", "agent")
    state.update(paths.FUEL_LEVEL, 40, "can")  # not in any template: no update
    policy.push(force=True)
    assert sink.sent == [PresenceUpdate("xa", "Ignition off", 0)]


async def test_the_drivers_override_holds_through_mode_changes_until_automatic() -> None:
    state = VehicleState()
    sink = Sink()
    policy = PresencePolicy(state, PresencePolicyConfig(min_text_interval=30.0), sink, monotonic=ManualTime())
    changes: list[bool] = []
    policy.changed.listen(lambda _: changes.append(policy.is_automatic))
    state.update(paths.MODE, "parked", "agent")
    policy.start()
    policy.override("dnd", "Busy\nnow")
    assert sink.sent[-1] == PresenceUpdate("dnd", "Busy now", 0) and not policy.is_automatic
    state.update(paths.MODE, "driving", "agent")
    state.update(paths.MODE, "parked", "agent")
    assert sink.sent[-1] == PresenceUpdate("dnd", "Busy now", 0), "the mode does not undo the driver's choice"
    assert policy.current() == PresenceUpdate(None, "Parked", 0), "current() is still what the mode gives"
    policy.override("away")
    assert sink.sent[-1] == PresenceUpdate("away", "Parked", 0), "without a text the automatic one is kept"
    policy.automatic()
    assert sink.sent[-1] == PresenceUpdate(None, "Parked", 0) and policy.is_automatic
    assert changes[-1] is True and False in changes
    for show in ("unavailable", "chat", "", "DND"):
        with pytest.raises(ValueError, match="must be one of"):
            policy.override(show)


def test_everyone_but_the_operators_gets_the_status_without_place_speed_or_direction() -> None:
    from agent.policies.presence import public_template

    assert public_template("Driving · {speed:.0f} km/h · {road} {direction}") == "Driving"
    assert public_template("Parked · {road}") == "Parked"
    assert public_template("Engine running · {rpm:.0f} rpm · {latitude}") == "Engine running · {rpm:.0f} rpm"
    assert public_template("{road}") == ""  # nothing left that does not say where: an empty status
    assert PresenceUpdate("dnd", "Driving", 0, "Driving · 63 km/h").for_operators == "Driving · 63 km/h"
    assert PresenceUpdate("xa", "Ignition off", 0).for_operators == "Ignition off"
