"""The agent's CAN pipeline decodes the bundled demo log to what cantools gives, frame by frame."""

from __future__ import annotations

import can
import cantools
import pytest

from agent.profile import load_profile
from agent.profile.model import SignalMapping
from agent.vehicle.can_feed import CanFeed
from agent.vehicle.state import VehicleState
from tests.harness.agentproc import DEMO_PROFILE


def reference_value(decoded: dict[str, object], mapping: SignalMapping) -> object:
    """What the profile asks for, computed the plain way from a full cantools decode."""
    value = decoded[mapping.signal]
    if mapping.datatype == "string" or (mapping.datatype is None and hasattr(value, "name")):
        return str(getattr(value, "name", value))
    value = getattr(value, "value", value)
    if mapping.datatype == "boolean":
        return bool(value)
    if mapping.datatype == "int":
        return int(value)  # type: ignore[call-overload]
    return value * mapping.scale + mapping.offset  # type: ignore[operator]


def test_every_mapped_value_matches_cantools_after_every_frame_of_the_demo_drive() -> None:
    profile = load_profile(DEMO_PROFILE, environ={"HEADUNIT_PASSWORD": "x", "HEADUNIT_CA_FILE": __file__})
    config = profile.vehicle.can
    assert config is not None and config.dbc is not None and config.replay_file is not None
    db = cantools.database.load_file(str(config.dbc))
    by_frame: dict[int, list[SignalMapping]] = {}
    for mapping in config.signals:
        by_frame.setdefault(db.get_message_by_name(str(mapping.message)).frame_id, []).append(mapping)

    state = VehicleState()
    feed = CanFeed(state, config, clock=lambda: 0.0)
    expected: dict[str, object] = {}
    checked = frames = 0
    with can.LogReader(str(config.replay_file)) as reader:
        for msg in reader:
            frames += 1
            mappings = by_frame.get(msg.arbitration_id)
            if mappings is None:
                assert not feed.port.frame_filter.accepts(msg.arbitration_id, msg.is_extended_id)  # type: ignore[union-attr]
                continue
            feed._on_frames([msg])  # what CanPort calls with each batch
            decoded = db.decode_message(msg.arbitration_id, msg.data, decode_choices=True)
            for mapping in mappings:
                if mapping.signal in decoded:  # multiplexed signals come in their own frames only
                    expected[mapping.path] = reference_value(decoded, mapping)
            for path, value in expected.items():
                assert state.value(path) == pytest.approx(value) if isinstance(value, float) else (
                    state.value(path) == value), f"frame {frames} ({msg.arbitration_id:#x}): {path}"
                checked += 1
    assert frames > 80_000 and checked > frames
    assert {m.path for m in config.signals} == set(expected), "every mapped signal occurs in the drive"
    stats = feed.decoder.stats  # type: ignore[union-attr]
    assert stats.unchanged > (stats.decoded + stats.unchanged) / 4, (
        "frames whose wanted bits repeat (body, fuel, a car at rest) are not decoded again")
