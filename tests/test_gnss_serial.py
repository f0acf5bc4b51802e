"""SerialSource through a real pty, reached through a udev-style by-id symlink.

The test is the receiver: it writes NMEA into the pty master. It then pulls the
"USB plug" (closes the master, removes the symlink), checks that the source
notices and keeps retrying, plugs a new pty in at the same symlink, sends junk
and then valid epochs, and checks that fixes flow again.
"""

from __future__ import annotations

import asyncio
import os
import termios
import threading
import tty
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from drivers.backoff import Backoff
from drivers.errors import DriverInitError
from drivers.gnss import Fix, create_source
from drivers.gnss.serial import SerialSource
from tests.nmea_sentences import ddmm, line

START = datetime(2025, 3, 23, 12, 0, 0, tzinfo=timezone.utc)




def lat_of(second: int) -> float:
    return 52.5 + second * 0.0001


def lon_of(second: int) -> float:
    return 13.4 + second * 0.0001




def epoch(second: int) -> bytes:
    t = START + timedelta(seconds=second)
    where = f"{ddmm(lat_of(second), 2, 'NS')},{ddmm(lon_of(second), 3, 'EW')}"
    return (
        line(f"GNRMC,{t:%H%M%S}.00,A,{where},10.0,90.0,{t:%d%m%y},,,A")
        + line(f"GNGGA,{t:%H%M%S}.00,{where},1,10,0.8,34.0,M,40.0,M,,")
        + line("GNGSA,A,3,01,02,03,04,05,06,,,,,,,1.6,0.8,1.4")
    )


def second_of(fix: Fix) -> int:
    assert fix.time is not None
    return round((fix.time - START).total_seconds())


class FakeReceiver:
    """A pty whose master plays the receiver; the slave is what the driver opens."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(self.master)
        os.set_blocking(self.master, False)
        self.slave_path = os.ttyname(slave)
        os.close(slave)
        self.is_open = True

    def write(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except BlockingIOError:  # nobody reads the slave yet: a receiver just keeps talking
            pass

    def speed(self) -> int:
        """The line speed the driver configured on the slave."""
        fd = os.open(self.slave_path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            return int(termios.tcgetattr(fd)[5])
        finally:
            os.close(fd)

    def unplug(self) -> None:
        if self.is_open:
            self.is_open = False
            os.close(self.master)


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


class Talker:
    """Writes one epoch every 20 ms, each a second later in receiver time, until stopped."""

    def __init__(self, receiver: FakeReceiver, first_second: int) -> None:
        self.receiver = receiver
        self.second = first_second
        self._task = asyncio.create_task(self._talk())

    async def _talk(self) -> None:
        while True:
            self.receiver.write(epoch(self.second))
            self.second += 1
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def receivers() -> AsyncIterator[list[FakeReceiver]]:
    made: list[FakeReceiver] = []
    yield made
    for receiver in made:
        receiver.unplug()


@pytest.mark.parametrize("baudrate", [9600, 115200])
async def test_fixes_survive_unplug_and_replug(
    baudrate: int, tmp_path: Path, receivers: list[FakeReceiver]
) -> None:
    loop = asyncio.get_running_loop()
    link = tmp_path / "usb-u-blox_GNSS_receiver-if00"
    fixes: list[Fix] = []
    wrong_context: list[str] = []

    def on_fix(fix: Fix) -> None:
        try:
            if asyncio.get_running_loop() is not loop:
                wrong_context.append("another loop")
        except RuntimeError:
            wrong_context.append(f"no loop in thread {threading.current_thread().name}")
        fixes.append(fix)

    first = FakeReceiver()
    receivers.append(first)
    link.symlink_to(first.slave_path)
    backoff = Backoff(initial=0.02, cap=0.1)
    source = SerialSource(on_fix, str(link), baudrate=baudrate, backoff=backoff)
    threads_before = threading.active_count()
    runner = asyncio.create_task(source.run())
    talker = Talker(first, first_second=0)
    try:
        # 1. fixes arrive in the agent's loop, with the coordinates sent for their time
        await wait_until(lambda: len(fixes) >= 5, "fixes from the first pty")
        assert source.is_connected
        assert first.speed() == getattr(termios, f"B{baudrate}")
        assert threading.active_count() == threads_before, "the driver must not start a thread"
        assert wrong_context == []
        for fix in fixes:
            assert fix.latitude == pytest.approx(lat_of(second_of(fix)), abs=1e-6)
            assert fix.longitude == pytest.approx(lon_of(second_of(fix)), abs=1e-6)
        for fix in fixes[1:]:  # RMC leads each epoch: GGA/GSA values arrive from the second fix on
            assert (fix.fix_type, fix.talker, fix.satellites_used) == ("THREE_D", "GN", 10)

        # 2. the USB plug is pulled mid-sentence: disconnected, and reopening keeps failing
        await talker.stop()
        first.write(b"$GNGGA,1200")
        first.unplug()
        link.unlink()
        await wait_until(lambda: not source.is_connected, "the source to notice the unplug")
        await wait_until(lambda: backoff.attempts >= 4, "several reopen attempts with backoff")
        assert not runner.done()
        before_replug = len(fixes)
        skipped_before = source.stats.skipped()

        # 3. a new receiver appears at the same by-id path; junk first, then valid epochs
        second = FakeReceiver()
        receivers.append(second)
        link.symlink_to(second.slave_path)
        await wait_until(lambda: source.is_connected, "the source to reopen the new pty")
        second.write(b"\x00" * 8 + b"\xb5\x62\x01\x07\x5c\x00garbage\r\n" + b"$GNTXT,01,01,02,hi*00\r\n")
        second.write(line("PUBX,00,1,2") + b"x" * 200 + b"\r\n" + line("GNRMC,120500.00,V,,,,,,,230325,,,N"))
        talker = Talker(second, first_second=1000)
        await wait_until(lambda: len(fixes) >= before_replug + 5, "fixes from the second pty")
    finally:
        await talker.stop()
        await source.stop()
    await source.stop()  # idempotent

    assert runner.done() and runner.exception() is None
    assert second.speed() == getattr(termios, f"B{baudrate}")
    new_fixes = fixes[before_replug:]
    assert all(second_of(fix) >= 1000 for fix in new_fixes)
    for fix in new_fixes:
        assert fix.latitude == pytest.approx(lat_of(second_of(fix)), abs=1e-6)
    stats = source.stats
    assert stats.nul_bytes >= 8
    assert (stats.garbage, stats.bad_checksum, stats.proprietary, stats.too_long, stats.invalid_fix) == (1, 1, 1, 1, 1)
    assert stats.skipped() == skipped_before + 5, "the cut sentence of the old port must not reach the new one"
    assert stats.spliced == 0
    assert backoff.attempts == 0, "data from the new port resets the backoff"
    assert wrong_context == []


async def test_absent_port_is_retried_until_it_appears(tmp_path: Path, receivers: list[FakeReceiver]) -> None:
    """Started before the receiver is plugged in: no crash, retries, then fixes."""
    link = tmp_path / "gnss0"
    fixes: list[Fix] = []
    backoff = Backoff(initial=0.01, cap=0.05)
    source = create_source("serial", fixes.append, port=str(link), baudrate=38400, backoff=backoff)
    runner = asyncio.create_task(source.run())
    try:
        await wait_until(lambda: backoff.attempts >= 3, "retries of the missing port")
        assert not source.is_connected and not runner.done()
        receiver = FakeReceiver()
        receivers.append(receiver)
        link.symlink_to(receiver.slave_path)
        talker = Talker(receiver, first_second=0)
        try:
            await wait_until(lambda: len(fixes) >= 2, "fixes once the port exists")
        finally:
            await talker.stop()
    finally:
        await source.stop()
    assert runner.exception() is None
    assert fixes[0].latitude == pytest.approx(lat_of(second_of(fixes[0])), abs=1e-6)


def test_bad_options_are_refused_at_creation() -> None:
    with pytest.raises(DriverInitError, match="baudrate"):
        SerialSource(lambda fix: None, "/dev/ttyACM0", baudrate=0)
    with pytest.raises(DriverInitError, match="baudrate"):
        create_source("serial", lambda fix: None, port="/dev/ttyACM0", baudrate="9600")
    with pytest.raises(DriverInitError, match="port"):
        SerialSource(lambda fix: None, "")
