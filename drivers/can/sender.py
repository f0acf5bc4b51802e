"""Sends a few CAN frames in order, with a gap between them: what a vehicle action does.

Frames go out on one of two links: the :class:`~drivers.can.port.CanPort` that reads
the bus (a car's SocketCAN interface), or a bus of the sender's own, opened from an
interface and channel (python-can's "virtual" bus in the demo and the tests), kept
open for the agent's life and reopened on the next send after a failure.

A frame that fails is never sent again here: a lock frame sent twice is not harmless
on every car, so the caller decides. Sends are serialised, one sequence at a time.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import can

from drivers.can.port import CanPort
from drivers.errors import DriverError, DriverInitError, DriverOperationError, DriverTimeout

log = logging.getLogger(__name__)

SEND_TIMEOUT = 1.0  # s the CAN driver may take to accept one frame (a full transmit queue)
GRACE = 1.0  # s on top of that before we stop waiting for a driver that ignores its timeout
DRAIN_MAX = 10_000  # frames an own bus may have queued for reading; dropped before each sequence


class FrameNotSent(DriverError):
    """Frame ``index`` (0-based) of a sequence failed; the ``index`` frames before it were sent."""

    def __init__(self, index: int, total: int, frame: can.Message, cause: DriverError) -> None:
        before = "nothing was sent" if index == 0 else f"the {index} frame(s) before it were sent"
        super().__init__(f"frame {index + 1} of {total} ({candump(frame)}) was not sent: {cause}; {before}")
        self.index = index
        self.total = total
        self.frame = frame
        self.cause = cause

    @property
    def sent(self) -> int:
        return self.index


class FrameLink(ABC):
    """Where frames go; ``send`` raises a DriverError saying why a frame did not go."""

    description: str

    @property
    @abstractmethod
    def is_open(self) -> bool: ...

    async def open(self) -> None:
        """Make the link ready now, so a broken one shows at start-up; DriverInitError if not."""

    async def prepare(self) -> None:
        """Called before each sequence."""

    @abstractmethod
    async def send(self, msg: can.Message, timeout: float) -> None: ...

    async def close(self) -> None:
        """Release what the link opened; safe to call twice."""


class PortLink(FrameLink):
    """Frames go out on the bus a running :class:`CanPort` reads; the port owns that bus."""

    def __init__(self, port: CanPort) -> None:
        self.port = port
        self.description = f"{port.interface} {port.channel} (the bus being read)"

    @property
    def is_open(self) -> bool:
        return self.port.is_connected

    async def send(self, msg: can.Message, timeout: float) -> None:
        if not self.port.is_connected:
            raise DriverOperationError(f"CAN bus {self.port.channel} is not open")
        await self.port.send(msg)


class BusLink(FrameLink):
    """A bus of our own, opened on first need and after a failure, closed by ``close``."""

    def __init__(self, interface: str, channel: str, options: dict[str, Any]) -> None:
        self.interface = interface
        self.channel = channel
        self.options = options
        self.description = f"{interface} {channel}"
        self._bus: can.BusABC | None = None
        self._closed = False

    @property
    def is_open(self) -> bool:
        return self._bus is not None

    async def open(self) -> None:
        await self._ensure_open()

    async def prepare(self) -> None:
        """Drop frames queued for reading: nothing reads this bus, and a virtual one would keep them all."""
        bus = self._bus
        if bus is None:
            return
        try:
            await asyncio.to_thread(_drain, bus)
        except (can.CanError, OSError) as exc:
            log.warning("CAN sender: %s failed while idle (%s); opening it again", self.description, exc)
            self._drop(bus)

    async def send(self, msg: can.Message, timeout: float) -> None:
        bus = await self._ensure_open()
        try:
            await asyncio.to_thread(bus.send, msg, timeout)
        except can.CanTimeoutError as exc:
            raise DriverTimeout(f"{self.description} did not take the frame within {timeout:g} s") from exc
        except (can.CanError, OSError) as exc:
            self._drop(bus)  # a bus that refused (bus-off, device gone) is opened afresh next time
            raise DriverOperationError(f"{self.description} refused the frame: {exc}") from exc

    async def close(self) -> None:
        self._closed = True
        bus, self._bus = self._bus, None
        if bus is not None:
            await asyncio.to_thread(_shutdown, bus)

    async def _ensure_open(self) -> can.BusABC:
        if self._closed:
            raise DriverOperationError(f"CAN sender on {self.description} is stopped")
        if self._bus is None:
            opening = asyncio.ensure_future(asyncio.to_thread(self._open))
            try:
                bus = await asyncio.shield(opening)
            except asyncio.CancelledError:
                opening.add_done_callback(_shutdown_if_opened)
                raise
            if self._closed:  # stopped while opening
                await asyncio.to_thread(_shutdown, bus)
                raise DriverOperationError(f"CAN sender on {self.description} is stopped")
            self._bus = bus
            log.info("CAN sender: %s open", self.description)
        return self._bus

    def _open(self) -> can.BusABC:
        options = dict(self.options)
        if self.interface == "virtual":
            options["receive_own_messages"] = False
        try:
            return can.Bus(interface=self.interface, channel=self.channel, **options)
        except (can.CanError, OSError, ValueError, ImportError) as exc:
            raise DriverInitError(f"cannot open {self.description} for sending: {exc}") from exc

    def _drop(self, bus: can.BusABC) -> None:
        if self._bus is bus:
            self._bus = None
        _shutdown(bus)


class CanSender:
    """Sends sequences of frames on one link, one sequence at a time, never retrying a frame."""

    def __init__(self, link: FrameLink, *, timeout: float = SEND_TIMEOUT) -> None:
        self.link = link
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()

    @classmethod
    def on_port(cls, port: CanPort, *, timeout: float = SEND_TIMEOUT) -> CanSender:
        """Send on the bus ``port`` reads (it must be running for frames to go out)."""
        return cls(PortLink(port), timeout=timeout)

    @classmethod
    def on_bus(cls, interface: str, channel: str, *, timeout: float = SEND_TIMEOUT,
               **options: Any) -> CanSender:
        """Send on a bus of our own, e.g. ``on_bus("virtual", "demo-actions")``."""
        return cls(BusLink(interface, channel, options), timeout=timeout)

    @property
    def description(self) -> str:
        return self.link.description

    @property
    def is_open(self) -> bool:
        return self.link.is_open and not self._stopping.is_set()

    async def start(self) -> None:
        """Open the link now; a failure is logged and the next send tries again (and says why)."""
        try:
            await self.link.open()
        except DriverError as exc:
            log.warning("CAN sender: %s (vehicle actions will try again when run)", exc)

    async def send(self, frames: Sequence[can.Message], gap: float = 0.0) -> int:
        """Send ``frames`` in order, ``gap`` s apart; the number sent, or FrameNotSent."""
        async with self._lock:
            await self.link.prepare()
            for index, frame in enumerate(frames):
                if index and gap > 0:
                    await self._wait_gap(gap)
                try:
                    await self._send_one(frame)
                except DriverError as exc:
                    raise FrameNotSent(index, len(frames), frame, exc) from exc
                log.debug("CAN sender: sent %s on %s", candump(frame), self.description)
            return len(frames)

    async def stop(self) -> None:
        """Stop sending (a sequence waiting out a gap ends at once) and close our own bus; idempotent."""
        self._stopping.set()
        async with self._lock:
            await self.link.close()

    async def _send_one(self, frame: can.Message) -> None:
        if self._stopping.is_set():
            raise DriverOperationError(f"CAN sender on {self.description} is stopped")
        try:
            async with asyncio.timeout(self.timeout + GRACE):
                await self.link.send(frame, self.timeout)
        except TimeoutError as exc:
            if isinstance(exc, DriverTimeout):
                raise
            raise DriverTimeout(f"{self.description}: no answer from the CAN driver within "
                                f"{self.timeout + GRACE:g} s (the frame may still go out)") from exc

    async def _wait_gap(self, gap: float) -> None:
        try:
            async with asyncio.timeout(gap):
                await self._stopping.wait()
        except TimeoutError:
            return


def candump(msg: can.Message) -> str:
    """``msg`` in candump notation, ``2F0#0100`` (8 hex digits for an extended id)."""
    ident = f"{msg.arbitration_id:08X}" if msg.is_extended_id else f"{msg.arbitration_id:03X}"
    return f"{ident}#{bytes(msg.data).hex().upper()}"


def _drain(bus: can.BusABC) -> None:
    for _ in range(DRAIN_MAX):
        if bus.recv(0.0) is None:
            return


def _shutdown(bus: can.BusABC) -> None:
    """Shut a bus down; a vanished device may fail to say goodbye, which is fine."""
    try:
        bus.shutdown()
    except (can.CanError, OSError) as exc:
        log.debug("closing %s: %s", bus.channel_info, exc)


def _shutdown_if_opened(opening: asyncio.Future[can.BusABC]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        _shutdown(opening.result())
