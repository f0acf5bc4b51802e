"""DBC decoding of mapped signals: routing, J1939 by PGN, multiplexing, CAN FD, change detection."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import cantools
import pytest

from drivers.can.dbc import DbcDecoder, SignalSpec
from drivers.can.filters import FrameFilter, j1939_pgn
from drivers.errors import DriverInitError

DBC = Path(__file__).parent / "data" / "can" / "test.dbc"
DB = cantools.database.load_file(str(DBC))


def spec(message: str | int, signal: str, key: str | None = None, *, scale: float = 1.0, offset: float = 0.0,
         datatype: str | None = None) -> SignalSpec:
    return SignalSpec(message, signal, key or f"{message}.{signal}", scale=scale, offset=offset, datatype=datatype)


def approx(value: float) -> float:
    """pytest.approx typed as the number it stands for, so it compares with decoded values."""
    return cast(float, pytest.approx(value))


def frame(name: str, **values: object) -> bytes:
    message = DB.get_message_by_name(name)
    full: dict[str, object] = {s.name: 0 for s in message.signals if not s.multiplexer_ids or s.name in values}
    full.update(values)
    return bytes(message.encode(full, strict=False))


def test_decodes_only_the_wanted_signals_with_scale_offset_and_types() -> None:
    decoder = DbcDecoder.from_file(DBC, [
        spec("Engine", "Rpm", "rpm"),
        spec("Engine", "Coolant", "coolant", scale=1.8, offset=32),  # °C → °F through the profile
        spec("Motorola", "Speed", "speed"),
        spec("Body", "Ignition", "ignition"),
        spec("Body", "DoorOpen", "door", datatype="boolean"),
    ])
    _, values = decoder.decode(0x100, False, frame("Engine", Rpm=2500.25, Coolant=90, Counter=3))
    assert dict(values or []) == {"rpm": 2500.25, "coolant": pytest.approx(194.0)}
    _, values = decoder.decode(300, False, frame("Motorola", Speed=63.42, Counter=9))
    assert dict(values or []) == {"speed": pytest.approx(63.42)}
    _, values = decoder.decode(0x200, False, frame("Body", Ignition=3, DoorOpen=1))
    assert dict(values or []) == {"ignition": "ON", "door": True}


def test_unchanged_wanted_bits_are_not_decoded_again_even_if_the_counter_moves() -> None:
    decoder = DbcDecoder.from_file(DBC, [spec("Engine", "Rpm", "rpm")])
    assert decoder.decode(0x100, False, frame("Engine", Rpm=800, Counter=1))[1] == [("rpm", 800)]
    route, values = decoder.decode(0x100, False, frame("Engine", Rpm=800, Counter=2))
    assert route is not None and values is None, "only the counter changed"
    assert decoder.decode(0x100, False, frame("Engine", Rpm=800, Coolant=99, Counter=3))[1] is None
    assert decoder.decode(0x100, False, frame("Engine", Rpm=801, Counter=4))[1] == [("rpm", 801)]
    assert (decoder.stats.decoded, decoder.stats.unchanged) == (2, 2)


def test_motorola_signal_bits_are_watched_too() -> None:
    decoder = DbcDecoder.from_file(DBC, [spec("Motorola", "Speed", "speed")])
    for speed in (0.0, 0.01, 2.56, 655.35):  # low byte, high byte, both
        assert decoder.decode(300, False, frame("Motorola", Speed=speed))[1] == [("speed", approx(speed))]


def test_multiplexed_signals_decode_per_mux_value_and_alternating_frames_are_deduplicated() -> None:
    decoder = DbcDecoder.from_file(DBC, [spec("Cluster", "Odometer", "odo"), spec("Cluster", "Ambient", "amb")])
    odo = frame("Cluster", Mux=0, Odometer=12345.6)
    amb = frame("Cluster", Mux=1, Ambient=21.5)
    assert decoder.decode(0x520, False, odo)[1] == [("odo", approx(12345.6))]
    assert decoder.decode(0x520, False, amb)[1] == [("amb", 21.5)]
    assert decoder.decode(0x520, False, odo)[1] is None, "same odometer frame again"
    assert decoder.decode(0x520, False, amb)[1] is None, "same ambient frame again"
    assert decoder.decode(0x520, False, frame("Cluster", Mux=0, Odometer=12345.7))[1] == [
        ("odo", approx(12345.7))]


def test_extended_and_standard_ids_are_different_frames() -> None:
    decoder = DbcDecoder.from_file(DBC, [spec("Battery", "Voltage", "volts")])
    data = frame("Battery", Voltage=12.6)
    assert decoder.decode(0x18FF5021, True, data)[1] == [("volts", approx(12.6))]
    assert decoder.decode(0x18FF5021 & 0x7FF, False, data) == (None, None)
    assert decoder.frame_filter.accepts(0x18FF5021, True)
    assert not decoder.frame_filter.accepts(0x18FF5021 & 0x7FF, False)


def test_can_fd_64_byte_frames_decode() -> None:
    decoder = DbcDecoder.from_file(DBC, [spec("Wide", "First", "a"), spec("Wide", "Last", "z")])
    data = frame("Wide", First=1234, Last=54321)
    assert len(data) == 64
    assert dict(decoder.decode(0x400, False, data)[1] or []) == {"a": 1234, "z": 54321}


@pytest.mark.parametrize("source_address", [0x00, 0x03, 0x17, 0xFE])
@pytest.mark.parametrize("priority", [3, 6])
def test_j1939_messages_match_by_pgn_whatever_source_address_and_priority(source_address: int, priority: int) -> None:
    decoder = DbcDecoder.from_file(DBC, [spec("EEC1", "EngineSpeed", "rpm"),
                                         spec("CCVS1", "WheelBasedVehicleSpeed", "speed")])
    eec1 = (priority << 26) | (0xF004 << 8) | source_address
    ccvs1 = (priority << 26) | (0xFEF1 << 8) | source_address
    assert decoder.decode(eec1, True, frame("EEC1", EngineSpeed=1500))[1] == [("rpm", 1500)]
    assert decoder.decode(ccvs1, True, frame("CCVS1", WheelBasedVehicleSpeed=88.5))[1] == [
        ("speed", approx(88.5))]
    assert decoder.frame_filter.accepts(eec1, True) and decoder.frame_filter.accepts(ccvs1, True)
    other_pgn = (priority << 26) | (0xFEEE << 8) | source_address
    assert decoder.decode(other_pgn, True, bytes(8)) == (None, None)
    assert not decoder.frame_filter.accepts(other_pgn, True)


def test_j1939_pdu1_messages_match_whatever_the_destination_address() -> None:
    decoder = DbcDecoder.from_file(DBC, [spec("TSC1", "RequestedSpeed", "req")])
    for destination in (0x00, 0x0F, 0xFF):
        frame_id = (3 << 26) | (0x00 << 16) | (destination << 8) | 0x21
        assert j1939_pgn(frame_id) == 0
        route, values = decoder.decode(frame_id, True, frame("TSC1", RequestedSpeed=1000 + destination))
        assert values == [("req", 1000 + destination)]


def test_kernel_filters_express_the_same_set() -> None:
    decoder = DbcDecoder.from_file(DBC, [spec("Engine", "Rpm"), spec("Battery", "Voltage"),
                                         spec("EEC1", "EngineSpeed"), spec("TSC1", "RequestedSpeed")])
    wanted = decoder.frame_filter
    filters = wanted.can_filters()

    def kernel_accepts(can_id: int, extended: bool) -> bool:  # what SocketCAN does with can_filters
        return any((can_id & f["can_mask"]) == (f["can_id"] & f["can_mask"]) and f["extended"] == extended
                   for f in filters)

    samples = [(0x100, False), (0x101, False), (0x18FF5021, True), (0x18FF5022, True),
               (0x0CF00400, True), (0x18F00417, True), (0x0CF00500, True), (0x0C00FF21, True), (0x0C01FF21, True)]
    for can_id, extended in samples:
        assert kernel_accepts(can_id, extended) == wanted.accepts(can_id, extended), hex(can_id)


def test_an_undecodable_frame_is_counted_and_skipped() -> None:
    decoder = DbcDecoder.from_file(DBC, [spec("Engine", "Rpm", "rpm")])
    route, values = decoder.decode(0x100, False, b"\x01\x02")  # 2 bytes for an 8-byte message
    assert route is not None and values is None and decoder.stats.errors == 1
    assert decoder.decode(0x100, False, frame("Engine", Rpm=900))[1] == [("rpm", 900)]


@pytest.mark.parametrize(("specs", "words"), [
    ([spec("Nope", "Rpm")], "Nope"),
    ([spec("Engine", "Nope")], "Nope"),
    ([spec(0x7FF, "Rpm")], "2047"),
    ([spec("Engine", "Rpm", datatype="complex")], "complex"),
])
def test_bad_mapping_is_refused_at_start(specs: list[SignalSpec], words: str) -> None:
    with pytest.raises(DriverInitError, match=words):
        DbcDecoder.from_file(DBC, specs)


def test_unreadable_dbc_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dbc"
    bad.write_text("BO_ this is not a dbc")
    with pytest.raises(DriverInitError, match="bad.dbc"):
        DbcDecoder.from_file(bad, [spec("Engine", "Rpm")])


def test_empty_filter_is_falsy_and_union_combines() -> None:
    assert not FrameFilter()
    combined = FrameFilter(frozenset({(1, False)})) | FrameFilter(pgns=frozenset({0xF004}))
    assert combined.accepts(1, False) and combined.accepts(0x0CF00401, True)


def test_values_are_rounded_to_the_resolution_the_signal_has() -> None:
    decoder = DbcDecoder.from_file(DBC, [spec("Engine", "Rpm", "rpm"), spec("Motorola", "Speed", "speed"),
                                         spec("Cluster", "Ambient", "amb", scale=1.8, offset=32)])
    # 0.25 rpm steps keep two decimals; 0.01 km/h steps keep two; °F from 0.5 °C steps keeps one
    assert decoder.decode(0x100, False, frame("Engine", Rpm=800.25))[1] == [("rpm", 800.25)]
    raw_speed = 6240  # 62.4 km/h: 6240 * 0.01 is 62.400000000000006 in floating point
    data = raw_speed.to_bytes(2, "big") + bytes(6)
    assert decoder.decode(300, False, data)[1] == [("speed", 62.4)]
    values = decoder.decode(0x520, False, frame("Cluster", Mux=1, Ambient=21.5))[1]
    assert values == [("amb", 70.7)]
