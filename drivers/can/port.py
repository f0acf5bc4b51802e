"""The owner of one CAN bus: opens it from the profile, filters, reads frames into the loop, recovers.

A bus with a file descriptor (SocketCAN) is read with ``loop.add_reader``; any
other bus (virtual, replay, vendor interfaces) is read by one thread that hands
batches to the loop with ``call_soon_threadsafe`` (python-can's Notifier does the
same). Unwanted frames are dropped by the kernel where it can filter, and
otherwise before they cross into the loop. Error frames, bus-off and a bus
that goes away are logged and retried with backoff; the agent keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can

from drivers.backoff import Backoff
from drivers.can.filters import FrameFilter
from drivers.errors import DriverInitError, DriverOperationError

log = logging.getLogger(__name__)

FramesCallback = Callable[[list[can.Message]], None]

CAN_ERR_BUSOFF = 0x00000040  # linux/can/error.h: error class "bus off"
BATCH_MAX = 512
# Frames are handed to the loop at most this often (seconds): one wake-up for many
# frames instead of one per frame, at the price of this much added latency.
BATCH_WINDOW = 0.005
POLL_TIMEOUTS = (0.2, 1.0)  # s a thread-bridged bus waits for a frame: while frames come, and at most when quiet
# Interfaces whose drivers filter in the kernel or the adapter; elsewhere python-can
# filters in Python per frame, which our own set lookup does cheaper.
HARDWARE_FILTERING = frozenset({"socketcan", "kvaser", "pcan", "vector", "ixxat", "neovi", "gs_usb"})


@dataclass
class CanStats:
    frames: int = 0
    batches: int = 0
    filtered_out: int = 0
    error_frames: int = 0
    bus_off: int = 0
    reopened: int = 0
    last_error: str | None = None


@dataclass
class CanPort:
    """One bus: ``run()`` reads until cancelled, reopening after failures; ``send()`` writes."""

    interface: str
    channel: str
    on_frames: FramesCallback
    frame_filter: FrameFilter | None = None
    bitrate: int | None = None
    fd: bool = False
    data_bitrate: int | None = None
    replay_file: Path | None = None
    replay_speed: float = 1.0
    replay_loop: bool = False
    backoff: Backoff = field(default_factory=Backoff)
    batch_window: float = BATCH_WINDOW
    bus_options: dict[str, Any] = field(default_factory=dict)
    stats: CanStats = field(default_factory=CanStats)
    replay_finished: asyncio.Event = field(default_factory=asyncio.Event)
    _bus: can.BusABC | None = None
    _last_warning: float = 0.0

    @property
    def is_connected(self) -> bool:
        return self._bus is not None

    async def run(self) -> None:
        """Read frames until cancelled; a failed bus is closed and reopened with backoff."""
        while True:
            try:
                await self._session()
            except DriverInitError as exc:
                self._note_failure(f"cannot open {self.interface} {self.channel}: {exc}")
            except DriverOperationError as exc:
                self._note_failure(f"{self.interface} {self.channel} failed: {exc}")
            delay = self.backoff.next_delay()
            log.info("retrying CAN %s in %.1f s", self.channel, delay)
            await asyncio.sleep(delay)
            self.stats.reopened += 1

    async def send(self, msg: can.Message) -> None:
        """Send one frame; DriverOperationError if the bus is down or refuses it."""
        bus = self._bus
        if bus is None:
            raise DriverOperationError(f"CAN {self.channel} is not open")
        try:
            await asyncio.to_thread(bus.send, msg, 0.1)
        except can.CanError as exc:
            raise DriverOperationError(f"cannot send on {self.channel}: {exc}") from exc

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[BaseException] = loop.create_future()
        bus = await self._open_bus()
        self._bus = bus
        stop = threading.Event()
        feeder: threading.Thread | None = None
        reader: threading.Thread | None = None
        fileno = _fileno(bus)
        try:
            if fileno is not None:
                loop.add_reader(fileno, self._on_readable, loop, fileno, bus, failed)
            else:
                reader = threading.Thread(target=self._read_thread, args=(bus, loop, stop, failed),
                                          name=f"can-{self.channel}", daemon=True)
                reader.start()
            if self.interface == "replay":
                feeder = self._start_replay(loop, stop)
            log.info("CAN %s open (%s)", self.channel, self.interface)
            self.backoff.reset()
            exc = await failed
            raise DriverOperationError(str(exc)) from exc
        finally:
            stop.set()
            if reader is not None and self.interface == "replay":
                _wake_replay_reader(self._channel_name())
            failed.cancel()  # also tells a pending batch-window callback that this bus is gone
            if fileno is not None:
                loop.remove_reader(fileno)
            self._bus = None
            try:
                for thread in (reader, feeder):
                    if thread is not None:
                        await asyncio.to_thread(thread.join, 2.0)
            finally:
                _close(bus)

    async def _open_bus(self) -> can.BusABC:
        """Open in a thread (some adapters sleep after opening); a bus opened after we were cancelled is closed."""
        opening = asyncio.ensure_future(asyncio.to_thread(self._open))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_shutdown_if_opened)
            raise

    def _open(self) -> can.BusABC:
        options: dict[str, Any] = dict(self.bus_options)
        interface = "virtual" if self.interface == "replay" else self.interface
        if self.bitrate is not None:
            options["bitrate"] = self.bitrate
        if self.fd:
            options["fd"] = True
            if self.data_bitrate is not None:
                options["data_bitrate"] = self.data_bitrate
        if self.frame_filter and self.interface in HARDWARE_FILTERING:
            options["can_filters"] = self.frame_filter.can_filters()
        if interface == "virtual":
            options.pop("bitrate", None)
            options["receive_own_messages"] = False
        try:
            return can.Bus(interface=interface, channel=self._channel_name(), **options)
        except (can.CanError, OSError, ValueError, ImportError) as exc:
            raise DriverInitError(str(exc)) from exc

    def _channel_name(self) -> str:
        return f"replay:{self.channel}" if self.interface == "replay" else self.channel

    def _start_replay(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> threading.Thread:
        from drivers.can.replay import LogReplay

        if self.replay_file is None:
            raise DriverInitError("the replay interface needs a replay file")
        replay = LogReplay(self.replay_file, speed=self.replay_speed, loop=self.replay_loop)
        channel = self._channel_name()

        def feed() -> None:
            try:
                replay.play_to_virtual(channel, stop)
            except Exception:
                log.exception("replay of %s failed", self.replay_file)
            finally:
                loop.call_soon_threadsafe(self.replay_finished.set)

        thread = threading.Thread(target=feed, name=f"replay-{self.channel}", daemon=True)
        thread.start()
        return thread

    # -- reading -------------------------------------------------------------

    def _read_thread(self, bus: can.BusABC, loop: asyncio.AbstractEventLoop,
                     stop: threading.Event, failed: asyncio.Future[BaseException]) -> None:
        """The one thread→loop bridge for buses without a file descriptor."""
        timeout = None if self.interface == "replay" else POLL_TIMEOUTS[0]
        while not stop.is_set():
            try:
                first = bus.recv(timeout)
                if stop.is_set():  # woken to stop (the replay's wake-up frame is not a frame of the car)
                    return
                if timeout is not None:  # no descriptor to wait on: poll, more slowly while the bus is quiet
                    timeout = POLL_TIMEOUTS[0] if first is not None else min(timeout * 2, POLL_TIMEOUTS[1])
                if first is not None and self.batch_window > 0:
                    stop.wait(self.batch_window)
                batch = self._read_batch(bus, first)
            except (can.CanError, OSError) as exc:
                loop.call_soon_threadsafe(_fail, failed, exc)
                return
            if batch:
                loop.call_soon_threadsafe(self._deliver, batch)

    def _on_readable(self, loop: asyncio.AbstractEventLoop, fileno: int, bus: can.BusABC,
                     failed: asyncio.Future[BaseException]) -> None:
        """The descriptor has frames: let the batch window fill, then drain and watch again."""
        if self.batch_window > 0:
            loop.remove_reader(fileno)
            loop.call_later(self.batch_window, self._drain_ready, loop, fileno, bus, failed)
        else:
            self._drain_ready(loop, None, bus, failed)

    def _drain_ready(self, loop: asyncio.AbstractEventLoop, rearm: int | None, bus: can.BusABC,
                     failed: asyncio.Future[BaseException]) -> None:
        if failed.done():  # the session ended while the batch window was open
            return
        try:
            batch = self._read_batch(bus, bus.recv(0.0))
        except (can.CanError, OSError) as exc:
            _fail(failed, exc)
            return
        if rearm is not None:
            loop.add_reader(rearm, self._on_readable, loop, rearm, bus, failed)
        if batch:
            self._deliver(batch)

    def _read_batch(self, bus: can.BusABC, msg: can.Message | None) -> list[can.Message]:
        """Starting from ``msg``, take the frames already queued (up to BATCH_MAX), filtered."""
        batch: list[can.Message] = []
        wanted = self.frame_filter.accepts if self.frame_filter else None
        while msg is not None:
            if msg.is_error_frame or wanted is None or wanted(msg.arbitration_id, msg.is_extended_id):
                batch.append(msg)
            else:
                self.stats.filtered_out += 1
            if len(batch) >= BATCH_MAX:
                break
            msg = bus.recv(0.0)
        return batch

    def _deliver(self, batch: list[can.Message]) -> None:
        frames = [m for m in batch if not m.is_error_frame]
        if len(frames) != len(batch):
            for msg in batch:
                if msg.is_error_frame:
                    self._note_error_frame(msg)
        self.stats.frames += len(frames)
        self.stats.batches += 1
        if frames:
            try:
                self.on_frames(frames)
            except Exception:
                log.exception("CAN %s: frame handler failed on a batch of %d", self.channel, len(frames))

    def _note_error_frame(self, msg: can.Message) -> None:
        self.stats.error_frames += 1
        if msg.arbitration_id & CAN_ERR_BUSOFF:
            self.stats.bus_off += 1
            self.stats.last_error = "bus-off"
            log.warning("CAN %s: bus-off (error frame %08X)", self.channel, msg.arbitration_id)
            return
        now = time.monotonic()
        if now - self._last_warning > 30.0:
            self._last_warning = now
            log.warning("CAN %s: error frame %08X data %s (%d so far)", self.channel,
                        msg.arbitration_id, bytes(msg.data).hex(), self.stats.error_frames)

    def _note_failure(self, text: str) -> None:
        self.stats.last_error = text
        log.warning("%s", text)


def _fileno(bus: can.BusABC) -> int | None:
    try:
        fd = bus.fileno()
    except (NotImplementedError, AttributeError, OSError):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


def _shutdown_if_opened(opening: asyncio.Future[can.BusABC]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        _close(opening.result())


def _close(bus: can.BusABC) -> None:
    """Shut a bus down; a vanished device may fail to say goodbye, which is fine."""
    try:
        bus.shutdown()
    except (can.CanError, OSError) as exc:
        log.debug("closing %s: %s", bus.channel_info, exc)


def _fail(failed: asyncio.Future[BaseException], exc: BaseException) -> None:
    if not failed.done():
        failed.set_result(exc)


def _wake_replay_reader(channel: str) -> None:
    """The replay's reader blocks with no timeout on our private virtual channel: one frame wakes it."""
    try:
        waker = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    except (can.CanError, OSError, ValueError) as exc:  # the reader then ends at its join timeout
        log.debug("cannot wake the replay reader on %s: %s", channel, exc)
        return
    try:
        waker.send(can.Message(arbitration_id=0x7FF, data=b"stop"))
    except can.CanError as exc:
        log.debug("cannot wake the replay reader on %s: %s", channel, exc)
    finally:
        waker.shutdown()
