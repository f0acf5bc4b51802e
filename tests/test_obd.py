"""ObdPoller against simulated ECUs on python-can's virtual bus.

The poller sends through a real virtual bus and is fed by a python-can Notifier
running its listener in the event loop, as the bus owner would; the ECUs are
tests/sim_ecu.py instances on the same channel. Expected values are computed
here from the raw bytes the ECU was given, with the J1979 formulas written out.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import can
import pytest

from drivers.backoff import Backoff
from drivers.can.obd import DATA_LENGTH, DECODERS, ObdPoller, supported_in_bitmap
from drivers.errors import DriverInitError, DriverOperationError
from tests.sim_ecu import SimulatedEcu, support_bitmap

HANG_GUARD = 15.0  # s; only there so a broken poller fails instead of hanging

# Raw data bytes per PID and the physical value by the J1979 formula.
RAW = {
    0x0C: bytes([0x1A, 0xF8]),  # rpm (256A+B)/4
    0x0D: bytes([0x42]),  # km/h A
    0x05: bytes([0x7B]),  # °C A-40
    0x2F: bytes([0xBF]),  # % A*100/255
    0x11: bytes([0x33]),  # % A*100/255
    0x46: bytes([0x1E]),  # °C A-40
}
EXPECTED = {
    0x0C: (256 * 0x1A + 0xF8) / 4,
    0x0D: 0x42,
    0x05: 0x7B - 40,
    0x2F: 0xBF * 100 / 255,
    0x11: 0x33 * 100 / 255,
    0x46: 0x1E - 40,
}
SIX = (0x0C, 0x0D, 0x05, 0x2F, 0x11, 0x46)


async def until(condition: Callable[[], bool], what: str, timeout: float = HANG_GUARD) -> None:
    """Wait until ``condition()`` holds; fail naming ``what`` if it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class PollerSide:
    """The poller's side of the bus: a virtual bus, a Notifier in the loop, the values received."""

    def __init__(self, channel: str) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
        self.values: list[tuple[int, float]] = []
        self.failing_sends = 0
        self.poller: ObdPoller | None = None
        self._notifier: can.Notifier | None = None
        self._task: asyncio.Task[None] | None = None

    async def send(self, msg: can.Message) -> None:
        if self.failing_sends:
            self.failing_sends -= 1
            raise DriverOperationError("virtual bus down (test)")
        self.bus.send(msg)

    def on_value(self, pid: int, value: float) -> None:
        self.values.append((pid, value))

    def make(self, pids: tuple[int, ...] = SIX, on_value: Callable[[int, float], None] | None = None,
             **kwargs: Any) -> ObdPoller:
        kwargs.setdefault("interval", 0.05)
        kwargs.setdefault("timeout", 0.3)
        kwargs.setdefault("backoff", Backoff(initial=0.05, cap=0.2))
        self.poller = ObdPoller(self.send, pids, on_value or self.on_value, **kwargs)
        self._notifier = can.Notifier(self.bus, [self._on_frame], timeout=0.05,
                                      loop=asyncio.get_running_loop())
        return self.poller

    def _on_frame(self, msg: can.Message) -> None:
        """What the bus owner does: only 0x7E8..0x7EF reach the poller."""
        if self.poller is not None and msg.arbitration_id in ObdPoller.RESPONSE_IDS:
            self.poller.feed(msg)

    def start(self) -> None:
        assert self.poller is not None
        self._task = asyncio.create_task(self.poller.run())

    def latest(self, pid: int) -> float | None:
        return next((v for p, v in reversed(self.values) if p == pid), None)

    def of(self, pid: int) -> list[float]:
        return [v for p, v in self.values if p == pid]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self._task  # run() must let the cancellation out
        if self._notifier is not None:
            self._notifier.stop()
        self.bus.shutdown()


@pytest.fixture
def channel() -> str:
    return f"obd-{uuid.uuid4().hex}"


@pytest.fixture
async def tester(channel: str) -> AsyncIterator[PollerSide]:
    t = PollerSide(channel)
    yield t
    await t.close()


@pytest.fixture
def ecu(channel: str) -> Iterator[SimulatedEcu]:
    with SimulatedEcu(channel, RAW, response_id=0x7E8) as sim:
        yield sim


def test_bitmap_decoding_matches_the_j1979_example() -> None:
    # SAE J1979's example answer to PID 0x00, "BE 1F A8 13", written out by hand.
    expected = {0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x11, 0x13,
                0x15, 0x1C, 0x1F, 0x20}
    assert supported_in_bitmap(0x00, bytes.fromhex("BE1FA813")) == expected
    assert support_bitmap(0x00, expected) == bytes.fromhex("BE1FA813")
    assert supported_in_bitmap(0x40, bytes.fromhex("40000000")) == {0x42}


def test_pid_without_formula_is_refused_by_name() -> None:
    async def send(msg: can.Message) -> None:
        raise AssertionError("must not send")

    with pytest.raises(DriverInitError, match="0x01") as info:
        ObdPoller(send, [0x0C, 0x01], lambda pid, value: None)
    assert "0x0C" not in str(info.value)


async def test_discovery_unions_two_ecus_over_chained_bitmaps(channel: str, tester: PollerSide) -> None:
    # Engine ECU pads with 0x00, a second ECU sends short frames (no padding at all).
    engine_pids = {0x05, 0x0C, 0x0D, 0x11, 0x2F, 0x46}
    other_pids = {0x04, 0x0F, 0x42, 0x5C}
    with SimulatedEcu(channel, supported=engine_pids, response_id=0x7E8, padding=0x00) as engine, \
            SimulatedEcu(channel, supported=other_pids, response_id=0x7E9, padding=None):
        poller = tester.make()
        found = await asyncio.wait_for(poller.discover(), HANG_GUARD)

    # Both bitmaps at 0x00 and 0x20 set "next range supported", which marks 0x20 and 0x40.
    assert found == engine_pids | other_pids | {0x20, 0x40}
    assert poller.supported == frozenset(found)
    assert poller.ecus == {0x7E8: frozenset(engine_pids | {0x20, 0x40}),
                           0x7E9: frozenset(other_pids | {0x20, 0x40})}
    assert engine.requests == [0x00, 0x20, 0x40]  # chained while a bitmap said "more", no further
    assert poller.stats.malformed == 0


async def test_polls_six_pids_converted_and_follows_changes(ecu: SimulatedEcu, tester: PollerSide) -> None:
    tester.make()
    tester.start()
    await until(lambda: all(tester.latest(pid) is not None for pid in SIX), "a value for each PID")
    for pid in SIX:
        assert tester.latest(pid) == pytest.approx(EXPECTED[pid]), hex(pid)

    ecu.set_value(0x0C, bytes([0x2E, 0xE0]))  # 3000 rpm
    ecu.set_value(0x05, bytes([0x00]))  # -40 °C, the bottom of the range
    await until(lambda: tester.latest(0x0C) == (256 * 0x2E + 0xE0) / 4, "the changed rpm")
    await until(lambda: tester.latest(0x05) == -40.0, "the changed coolant temperature")
    assert tester.latest(0x0D) == EXPECTED[0x0D]
    assert tester.poller is not None and tester.poller.stats.answers >= 8


async def test_engine_ecu_is_preferred_when_two_answer(channel: str, tester: PollerSide) -> None:
    # The second ECU answers first; the value must still be the engine ECU's.
    with SimulatedEcu(channel, {0x0D: bytes([50])}, response_id=0x7E8, latency=0.05), \
            SimulatedEcu(channel, {0x0D: bytes([99])}, response_id=0x7E9):
        tester.make(pids=(0x0D,), timeout=0.5)
        tester.start()
        await until(lambda: len(tester.of(0x0D)) >= 3, "three speed readings")
    assert set(tester.of(0x0D)) == {50.0}


async def test_unsupported_configured_pid_is_skipped(ecu: SimulatedEcu, tester: PollerSide) -> None:
    poller = tester.make(pids=(0x0D, 0x5C, 0x0C))  # the ECU does not claim 0x5C
    tester.start()
    await until(lambda: len(tester.of(0x0C)) >= 3, "three rounds")
    assert 0x5C not in ecu.requests
    assert 0x5C not in poller.supported
    assert poller.stats.unsupported_skipped >= 3
    assert tester.of(0x5C) == []
    assert tester.latest(0x0D) == EXPECTED[0x0D]


async def test_negative_response_is_counted_and_named(ecu: SimulatedEcu, tester: PollerSide,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    ecu.refuse(0x0D, 0x31)
    poller = tester.make(pids=(0x0D, 0x0C))
    caplog.set_level(logging.WARNING, logger="drivers.can.obd")
    tester.start()
    await until(lambda: poller.stats.negative >= 2 and len(tester.of(0x0C)) >= 2, "two refused rounds")
    assert tester.of(0x0D) == []
    assert tester.latest(0x0C) == EXPECTED[0x0C]
    assert any("requestOutOfRange" in r.getMessage() and "0x0D" in r.getMessage() for r in caplog.records)
    assert poller.supported  # a refusal is an answer: the car is on, no rediscovery
    assert poller.stats.discoveries == 1


async def test_response_pending_then_answer_waits_past_the_timeout(ecu: SimulatedEcu,
                                                                  tester: PollerSide) -> None:
    ecu.delay(0x0C, 0.8)  # 0x78 at once, the value 0.8 s later, well past the 0.2 s timeout
    poller = tester.make(pids=(0x0C,), timeout=0.2)
    tester.start()
    await until(lambda: tester.of(0x0C) != [], "the delayed rpm")
    assert tester.of(0x0C)[0] == EXPECTED[0x0C]
    assert poller.stats.response_pending >= 1
    assert poller.stats.negative == 0
    assert poller.stats.unsolicited == 0


async def test_silent_car_is_rediscovered_when_it_answers_again(ecu: SimulatedEcu,
                                                                tester: PollerSide) -> None:
    poller = tester.make(pids=(0x0D, 0x0C), timeout=0.1, silent_rounds=2)
    tester.start()
    await until(lambda: tester.latest(0x0D) is not None, "the first speed")

    ecu.set_silent(True)  # ignition off
    asked_before = ecu.requests.count(0x00)
    await until(lambda: ecu.requests.count(0x00) >= asked_before + 3, "repeated discovery while silent")
    assert poller.stats.no_answer >= 4  # two full silent rounds of two PIDs
    assert poller.supported == frozenset()
    assert poller.stats.discoveries == 1

    ecu.set_value(0x0D, bytes([0x10]))
    ecu.set_silent(False)
    await until(lambda: tester.latest(0x0D) == 0x10, "the speed after the car came back")
    assert poller.stats.discoveries == 2
    assert 0x0D in poller.supported


async def test_malformed_frames_are_counted_and_ignored(ecu: SimulatedEcu, tester: PollerSide) -> None:
    bad = (
        bytes([0x10, 0x14, 0x41, 0x0D, 0x01, 0x02, 0x03, 0x04]),  # ISO-TP first frame
        bytes([0x21, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B]),  # consecutive frame
        bytes([0x04, 0x41, 0x0D, 0x10, 0x20, 0xAA, 0xAA, 0xAA]),  # two data bytes for speed
        bytes([0x03, 0x41, 0x05, 0x99, 0xAA, 0xAA, 0xAA, 0xAA]),  # a PID we did not ask
        bytes([0x07, 0x41, 0x0D]),  # length beyond the frame
        bytes([0x02, 0x41]),  # far too short for speed
        b"",
    )
    ecu.add_extra_frames(0x0D, *bad)
    poller = tester.make(pids=(0x0D,))
    tester.start()
    await until(lambda: len(tester.of(0x0D)) >= 2, "two speed readings")
    assert set(tester.of(0x0D)) == {float(EXPECTED[0x0D])}
    assert poller.stats.malformed >= 2 * len(bad)
    assert poller.stats.no_answer == 0


async def test_other_services_from_the_engine_ecu_are_ignored(ecu: SimulatedEcu, tester: PollerSide) -> None:
    other = (
        bytes([0x06, 0x49, 0x0D, 0x01, 0x02, 0x03, 0x04, 0x00]),  # service 09 answer
        bytes([0x03, 0x7F, 0x09, 0x11, 0xAA, 0xAA, 0xAA, 0xAA]),  # service 09 refused
        bytes([0x03, 0x42, 0x0D, 0x99, 0xAA, 0xAA, 0xAA, 0xAA]),  # service 02 (freeze frame)
        bytes([0x04, 0x43, 0x01, 0x01, 0x33, 0xAA, 0xAA, 0xAA]),  # service 03 DTC
    )
    ecu.add_extra_frames(0x0D, *other)
    poller = tester.make(pids=(0x0D,))
    tester.start()
    await until(lambda: len(tester.of(0x0D)) >= 2, "two speed readings")
    assert set(tester.of(0x0D)) == {float(EXPECTED[0x0D])}
    assert poller.stats.negative == 0  # the service 09 refusal is not ours
    assert poller.stats.malformed >= 2 * len(other)


async def test_late_answer_is_not_taken_for_a_later_request(ecu: SimulatedEcu, tester: PollerSide) -> None:
    poller = tester.make(pids=(0x0D,), timeout=0.1, interval=0.6, silent_rounds=1000)
    tester.start()
    await until(lambda: tester.of(0x0D) != [], "the first speed")
    ecu.set_latency(0.35)  # after the 0.1 s window, before the next request at 0.6 s
    await until(lambda: poller.stats.unsolicited >= 1, "a late answer")
    assert poller.stats.no_answer >= 1
    assert poller.stats.malformed == 0


async def test_send_failures_back_off_and_recover(ecu: SimulatedEcu, tester: PollerSide) -> None:
    tester.failing_sends = 3
    poller = tester.make(pids=(0x0D,))
    tester.start()
    await until(lambda: tester.of(0x0D) != [], "a speed after the bus came back")
    assert poller.stats.send_errors == 3
    assert tester.latest(0x0D) == EXPECTED[0x0D]


async def test_failing_value_callback_does_not_stop_polling(ecu: SimulatedEcu, tester: PollerSide) -> None:
    seen: list[float] = []

    def on_value(pid: int, value: float) -> None:
        seen.append(value)
        if len(seen) == 1:
            raise RuntimeError("listener bug (test)")

    tester.make(pids=(0x0D,), on_value=on_value)
    tester.start()
    await until(lambda: len(seen) >= 3, "values after the failing callback")
    assert set(seen) == {float(EXPECTED[0x0D])}


def test_formulas_cover_the_required_pids_within_their_data_length() -> None:
    # Each decoder must work on exactly the bytes its PID carries, no more.
    required = {0x04, 0x05, 0x0C, 0x0D, 0x0F, 0x10, 0x11, 0x1F, 0x2F, 0x42, 0x46, 0x5C}
    assert required <= DECODERS.keys()
    for pid, decode in DECODERS.items():
        assert isinstance(decode(bytes(range(1, 1 + DATA_LENGTH[pid]))), float), hex(pid)
