"""The CAN bus owner on real python-can backends: virtual bus, log replay, slcan over a real pty."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import tty
from collections.abc import AsyncIterator
from pathlib import Path

import can
import pytest

from drivers.backoff import Backoff
from drivers.can.filters import FrameFilter
from drivers.can.port import CanPort

WANTED = FrameFilter(frozenset({(0x100, False), (0x18FF5021, True)}))


class Collector:
    """Receives batches in the loop and records the thread they arrived on."""

    def __init__(self) -> None:
        self.frames: list[can.Message] = []
        self.threads: set[int] = set()
        self.arrived = asyncio.Event()

    def __call__(self, batch: list[can.Message]) -> None:
        self.threads.add(threading.get_ident())
        self.frames.extend(batch)
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.frames) < count:
                self.arrived.clear()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def running(port: CanPort) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(port.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert not port.is_connected


async def wait_until(predicate: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_virtual_bus_delivers_only_wanted_frames_in_the_loop_thread() -> None:
    collector = Collector()
    port = CanPort("virtual", "test-port-1", collector, WANTED)
    async with running(port):
        await wait_until(lambda: port.is_connected)
        sender = can.Bus(interface="virtual", channel="test-port-1")
        try:
            for i in range(300):
                sender.send(can.Message(arbitration_id=0x100, data=[i % 256] * 8, is_extended_id=False))
                sender.send(can.Message(arbitration_id=0x101, data=[1], is_extended_id=False))  # unmapped
                sender.send(can.Message(arbitration_id=0x18FF5021 & 0x7FF, data=[2], is_extended_id=False))
            sender.send(can.Message(arbitration_id=0x18FF5021, data=[3] * 8, is_extended_id=True))
            await collector.wait_for(301)
        finally:
            sender.shutdown()
    assert [m.data[0] for m in collector.frames[:300]] == [i % 256 for i in range(300)], "order kept"
    assert collector.frames[-1].arbitration_id == 0x18FF5021 and collector.frames[-1].is_extended_id
    assert collector.threads == {threading.get_ident()}
    assert port.stats.filtered_out == 600 and port.stats.frames == 301


async def test_error_frames_and_bus_off_are_counted_logged_and_reading_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    collector = Collector()
    port = CanPort("virtual", "test-port-2", collector, WANTED)
    async with running(port):
        await wait_until(lambda: port.is_connected)
        sender = can.Bus(interface="virtual", channel="test-port-2")
        try:
            with caplog.at_level(logging.WARNING):
                sender.send(can.Message(arbitration_id=0x004, is_error_frame=True, data=[0, 0x10] + [0] * 6))
                sender.send(can.Message(arbitration_id=0x040, is_error_frame=True, data=[0] * 8))  # bus-off
                sender.send(can.Message(arbitration_id=0x100, data=[7] * 8, is_extended_id=False))
                await collector.wait_for(1)
        finally:
            sender.shutdown()
    assert port.stats.error_frames == 2 and port.stats.bus_off == 1
    assert [m.data[0] for m in collector.frames] == [7], "error frames do not reach the decoder"
    assert "bus-off" in caplog.text and "error frame" in caplog.text


async def test_an_interface_that_cannot_open_is_retried_with_backoff() -> None:
    port = CanPort("socketcan", "hu-nosuch0", Collector(), WANTED, backoff=Backoff(initial=0.01, cap=0.05))
    async with running(port):
        await wait_until(lambda: port.stats.reopened >= 3)
        assert not port.is_connected
    assert port.stats.last_error is not None and "hu-nosuch0" in port.stats.last_error


async def test_a_failing_frame_handler_is_logged_and_the_port_keeps_reading(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    def handler(batch: list[can.Message]) -> None:
        seen.extend(m.data[0] for m in batch)
        if batch[0].data[0] == 1:
            raise ValueError("handler bug")

    port = CanPort("virtual", "test-port-3", handler, WANTED)
    async with running(port):
        await wait_until(lambda: port.is_connected)
        sender = can.Bus(interface="virtual", channel="test-port-3")
        try:
            with caplog.at_level(logging.ERROR):
                sender.send(can.Message(arbitration_id=0x100, data=[1], is_extended_id=False))
                await wait_until(lambda: 1 in seen)
                sender.send(can.Message(arbitration_id=0x100, data=[2], is_extended_id=False))
                await wait_until(lambda: 2 in seen)
        finally:
            sender.shutdown()
    assert "handler bug" in caplog.text


def write_candump(path: Path, frames: list[tuple[float, int, bytes, bool]]) -> None:
    lines = []
    for ts, can_id, data, extended in frames:
        ident = f"{can_id:08X}" if extended else f"{can_id:03X}"
        lines.append(f"({ts:.6f}) can0 {ident}#{data.hex().upper()}")
    path.write_text("\n".join(lines) + "\n")


async def test_replay_plays_a_candump_log_in_order_and_says_when_it_is_done(tmp_path: Path) -> None:
    log_file = tmp_path / "drive.log"
    frames = [(1_700_000_000 + i * 0.01, 0x100 if i % 3 else 0x555, bytes([i % 256, 1]), False) for i in range(200)]
    frames.append((1_700_000_002.5, 0x18FF5021, bytes([9] * 8), True))
    write_candump(log_file, frames)
    collector = Collector()
    port = CanPort("replay", "demo-test", collector, WANTED, replay_file=log_file, replay_speed=20.0)
    async with running(port):
        await asyncio.wait_for(port.replay_finished.wait(), 20)
        await collector.wait_for(134)
    expected = [f for f in frames if (f[1], f[3]) in WANTED.ids]
    assert [(m.arbitration_id, bytes(m.data)) for m in collector.frames] == [(f[1], f[2]) for f in expected]


async def test_replay_of_a_missing_file_is_an_init_failure_that_is_retried(tmp_path: Path) -> None:
    port = CanPort("replay", "demo-missing", Collector(), WANTED, replay_file=tmp_path / "nope.log",
                   backoff=Backoff(initial=0.01, cap=0.02))
    async with running(port):
        await wait_until(lambda: port.stats.reopened >= 2)
    assert "nope.log" in (port.stats.last_error or "")


class SlcanAdapter:
    """The far side of a USB-serial SLCAN adapter: a real pty whose master speaks SLCAN."""

    def __init__(self, link: Path) -> None:
        self.master, slave = os.openpty()
        tty.setraw(self.master)
        self.slave_name = os.ttyname(slave)
        os.close(slave)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(self.slave_name)

    def send_frame(self, can_id: int, data: bytes) -> None:
        os.write(self.master, f"t{can_id:03X}{len(data)}{data.hex().upper()}\r".encode())

    def unplug(self) -> None:
        os.close(self.master)


async def test_slcan_adapter_unplugged_is_reopened_when_it_comes_back(tmp_path: Path) -> None:
    link = tmp_path / "ttyCAN0"
    adapter = SlcanAdapter(link)
    collector = Collector()
    port = CanPort("slcan", str(link), collector, WANTED, backoff=Backoff(initial=0.05, cap=0.2),
                   bus_options={"sleep_after_open": 0, "tty_baudrate": 115200})
    async with running(port):
        await wait_until(lambda: port.is_connected)
        adapter.send_frame(0x100, b"\x01\x02")
        adapter.send_frame(0x123, b"\x09")  # unmapped
        await collector.wait_for(1)
        adapter.unplug()
        link.unlink()
        await wait_until(lambda: not port.is_connected)
        await wait_until(lambda: port.stats.reopened >= 2)  # retried while the port is gone
        adapter = SlcanAdapter(link)
        await wait_until(lambda: port.is_connected)
        adapter.send_frame(0x100, b"\x03\x04")
        await collector.wait_for(2)
        adapter.unplug()
    assert [bytes(m.data) for m in collector.frames] == [b"\x01\x02", b"\x03\x04"]
    assert port.stats.last_error is not None


@pytest.mark.parametrize("suffix", [".asc", ".blf"])
async def test_replay_reads_vector_asc_and_blf_logs_too(tmp_path: Path, suffix: str) -> None:
    log_file = tmp_path / f"drive{suffix}"
    sent = [can.Message(timestamp=1_700_000_000 + i * 0.005, arbitration_id=0x100 if i % 2 else 0x18FF5021,
                        is_extended_id=not i % 2, data=bytes([i, 0xA5]), channel=0) for i in range(60)]
    with can.Logger(str(log_file)) as writer:
        for msg in sent:
            writer.on_message_received(msg)
    collector = Collector()
    port = CanPort("replay", f"demo-{suffix[1:]}", collector, WANTED, replay_file=log_file, replay_speed=10.0)
    async with running(port):
        await asyncio.wait_for(port.replay_finished.wait(), 20)
        await collector.wait_for(60)
    assert [(m.arbitration_id, m.is_extended_id, bytes(m.data)) for m in collector.frames] == [
        (m.arbitration_id, m.is_extended_id, bytes(m.data)) for m in sent]


async def test_replay_refuses_an_unknown_log_format(tmp_path: Path) -> None:
    log_file = tmp_path / "drive.csv"
    log_file.write_text("not a can log\n")
    port = CanPort("replay", "demo-csv", Collector(), WANTED, replay_file=log_file,
                   backoff=Backoff(initial=0.01, cap=0.02))
    async with running(port):
        await wait_until(lambda: port.stats.reopened >= 1)
    assert "must end in one of .log, .asc, .blf" in (port.stats.last_error or "")
