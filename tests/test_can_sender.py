"""The CAN sender on python-can's real virtual bus: order, ids, data, gaps, serialised sequences,
clear errors (closed, refused mid-way, stopped), reopening after a failure, and sending
through a running CanPort."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator

import can
import pytest

from drivers.can.port import CanPort
from drivers.can.sender import CanSender, FrameNotSent, candump
from drivers.errors import DriverOperationError

WAIT = 10.0  # generous: only there so a broken bus cannot hang a test


def frame(ident: int, *data: int, extended: bool = False) -> can.Message:
    return can.Message(arbitration_id=ident, data=bytes(data), is_extended_id=extended)


def channel() -> str:
    return f"test-sender-{secrets.token_hex(4)}"


@contextlib.contextmanager
def listener(name: str, *, rx_queue_size: int = 0) -> Iterator[can.BusABC]:
    """A second bus on the same virtual channel: it sees what the sender sent."""
    bus = can.Bus(interface="virtual", channel=name, rx_queue_size=rx_queue_size)
    try:
        yield bus
    finally:
        bus.shutdown()


@contextlib.asynccontextmanager
async def started(sender: CanSender) -> AsyncIterator[CanSender]:
    await sender.start()
    try:
        yield sender
    finally:
        await sender.stop()


async def receive(bus: can.BusABC, count: int) -> list[can.Message]:
    got: list[can.Message] = []
    async with asyncio.timeout(WAIT):
        while len(got) < count:
            msg = await asyncio.to_thread(bus.recv, 0.1)
            if msg is not None:
                got.append(msg)
    return got


def kept(msgs: list[can.Message]) -> list[tuple[int, bytes, bool]]:
    return [(m.arbitration_id, bytes(m.data), m.is_extended_id) for m in msgs]


async def test_frames_arrive_in_order_with_ids_data_and_extended_flag() -> None:
    """Tried: three frames, one extended, on an own virtual bus. Kept: all three, in order, as given."""
    name = channel()
    sent = [frame(0x2F0, 1, 0, 0, 0, 0, 0, 0, 0), frame(0x18FF5021, 0xAA, 0x55, extended=True), frame(0x7FF)]
    with listener(name) as bus:
        async with started(CanSender.on_bus("virtual", name)) as sender:
            assert sender.is_open
            assert await sender.send(sent, gap=0.01) == 3
            got = await receive(bus, 3)
        assert bus.recv(0.0) is None, "each frame once"
    assert kept(got) == [(0x2F0, bytes([1, 0, 0, 0, 0, 0, 0, 0]), False),
                         (0x18FF5021, b"\xaa\x55", True), (0x7FF, b"", False)]


async def test_the_gap_comes_between_the_frames() -> None:
    """Tried: two frames 30 s apart, stopped once the first arrived. Kept: only the first went out,
    the second waited for the gap, and stopping ended the wait with a clear error."""
    name = channel()
    with listener(name) as bus:
        sender = CanSender.on_bus("virtual", name)
        await sender.start()
        task = asyncio.create_task(sender.send([frame(0x100, 1), frame(0x100, 2)], gap=30.0))
        first = await receive(bus, 1)
        assert not task.done() and bus.recv(0.0) is None, "the second frame waits for the gap"
        await sender.stop()
        with pytest.raises(FrameNotSent) as caught:
            async with asyncio.timeout(WAIT):
                await task
        assert bus.recv(0.0) is None, "the second frame never went out"
    assert kept(first) == [(0x100, b"\x01", False)]
    assert (caught.value.index, caught.value.sent, caught.value.total) == (1, 1, 2)
    assert "stopped" in str(caught.value) and "the 1 frame(s) before it were sent" in str(caught.value)


async def test_sequences_do_not_interleave() -> None:
    """Tried: two sequences sent at once. Kept: one whole sequence, then the other."""
    name = channel()
    with listener(name) as bus:
        async with started(CanSender.on_bus("virtual", name)) as sender:
            a = [frame(0x101, i) for i in range(3)]
            b = [frame(0x102, i) for i in range(3)]
            await asyncio.gather(sender.send(a, gap=0.01), sender.send(b, gap=0.01))
            got = await receive(bus, 6)
    ids = [m.arbitration_id for m in got]
    assert ids in ([0x101] * 3 + [0x102] * 3, [0x102] * 3 + [0x101] * 3)
    assert [m.data[0] for m in got] == [0, 1, 2, 0, 1, 2]


async def test_a_stopped_sender_refuses_clearly_and_sends_nothing() -> None:
    """Tried: a send after stop. Kept: FrameNotSent for frame 1, "nothing was sent", no frame on the bus."""
    name = channel()
    with listener(name) as bus:
        sender = CanSender.on_bus("virtual", name)
        await sender.start()
        await sender.stop()
        await sender.stop()  # idempotent
        assert not sender.is_open
        with pytest.raises(FrameNotSent) as caught:
            await sender.send([frame(0x2F0, 1)])
        assert bus.recv(0.0) is None
    assert caught.value.sent == 0 and "nothing was sent" in str(caught.value)
    assert isinstance(caught.value.cause, DriverOperationError) and "stopped" in str(caught.value.cause)


async def test_refused_mid_way_names_the_frame_and_reopens_next_time() -> None:
    """Tried: a recipient whose queue holds one frame, so the bus refuses the second of three.
    Kept: frame 1 sent, frame 2 reported with the bus's reason, frame 3 never tried; the next
    sequence opens the bus afresh and goes out."""
    name = channel()
    with listener(name, rx_queue_size=1) as full:
        async with started(CanSender.on_bus("virtual", name, timeout=0.05)) as sender:
            with pytest.raises(FrameNotSent) as caught:
                await sender.send([frame(0x2F0, 1), frame(0x2F0, 2), frame(0x2F0, 3)])
            assert not sender.is_open, "a bus that refused is closed"
            got = await receive(full, 1)
            assert full.recv(0.0) is None, "frame 3 was not tried after frame 2 failed"
            full.shutdown()
            with listener(name) as bus:
                assert await sender.send([frame(0x2F1, 9)]) == 1
                again = await receive(bus, 1)
                assert sender.is_open
    error = caught.value
    assert (error.index, error.total, candump(error.frame)) == (1, 3, "2F0#02")
    assert "frame 2 of 3 (2F0#02) was not sent" in str(error) and "the 1 frame(s) before it were sent" in str(error)
    assert "refused the frame" in str(error.cause) and "recipients" in str(error.cause)
    assert kept(got) == [(0x2F0, b"\x01", False)]
    assert kept(again) == [(0x2F1, b"\x09", False)]


async def test_a_bus_that_cannot_open_is_reported_at_send() -> None:
    """Tried: an interface python-can does not know. Kept: start() survives; send says why."""
    sender = CanSender.on_bus("no-such-interface", "x")
    await sender.start()
    try:
        with pytest.raises(FrameNotSent) as caught:
            await sender.send([frame(0x100)])
    finally:
        await sender.stop()
    assert "cannot open no-such-interface x for sending" in str(caught.value)


async def test_sending_through_a_running_port() -> None:
    """Tried: a CanPort reading a virtual channel, and the sender on that port. Kept: a closed port
    is a clear error; once open, the frames reach another bus on the channel, in order."""
    name = channel()
    port = CanPort("virtual", name, lambda batch: None)
    sender = CanSender.on_port(port)
    with pytest.raises(FrameNotSent) as closed:
        await sender.send([frame(0x2F0, 1)])
    assert "not open" in str(closed.value) and closed.value.sent == 0
    task = asyncio.create_task(port.run())
    try:
        async with asyncio.timeout(WAIT):
            while not port.is_connected:
                await asyncio.sleep(0.01)
        with listener(name) as bus:
            assert await sender.send([frame(0x2F0, 3), frame(0x2F0, 0)], gap=0.01) == 2
            got = await receive(bus, 2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sender.stop()
    assert kept(got) == [(0x2F0, b"\x03", False), (0x2F0, b"\x00", False)]
    assert "(the bus being read)" in sender.description
