"""A simulated OBD-II ECU: answers service 01 requests on a python-can bus from a table it can change.

It is a real bus participant (its own python-can bus, its own receive thread),
so a test or benchmark drives the poller through the same frames a car sends.
Faults are switched per PID: negative responses, responsePending then the
answer, extra frames (malformed, other services) before the answer, and
silence for the whole ECU (ignition off). Values are the raw data bytes
A, B, ... so a test can compute the expected physical value itself.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import can

FUNCTIONAL_ID = 0x7DF
SUPPORT_PIDS = tuple(range(0x00, 0xE0, 0x20))


def support_bitmap(base: int, pids: Iterable[int]) -> bytes:
    """The 4-byte answer to PID ``base``: bit 31 is ``base + 1`` ... bit 0 is ``base + 0x20``."""
    wanted = set(pids)
    bits = 0
    for pid in wanted:
        if base < pid <= base + 0x20:
            bits |= 1 << (base + 0x20 - pid)
    if any(pid > base + 0x20 for pid in wanted):
        bits |= 1  # "the next range is supported"
    return bits.to_bytes(4, "big")


class SimulatedEcu:
    """One ECU answering 0x7DF (and its physical id) from ``response_id``; use as a context manager."""

    def __init__(self, channel: str, values: Mapping[int, bytes] | None = None, *,
                 supported: Iterable[int] = (), response_id: int = 0x7E8,
                 padding: int | None = 0xAA, latency: float = 0.0, interface: str = "virtual",
                 **bus_kwargs: Any) -> None:
        self.channel = channel
        self.response_id = response_id
        self.padding = padding  # None: frames are as short as their payload (DLC < 8)
        self._interface = interface
        self._bus_kwargs = bus_kwargs
        self._lock = threading.Lock()
        self._values: dict[int, bytes] = {pid: bytes(raw) for pid, raw in (values or {}).items()}
        self._supported = set(supported) | set(self._values)
        self._refusals: dict[int, int] = {}
        self._delays: dict[int, float] = {}
        self._extra: dict[int, list[bytes]] = {}
        self._silent = False
        self._latency = latency
        self._requests: list[int] = []
        self._scheduled: list[tuple[float, int, bytes]] = []
        self._sequence = 0
        self._bus: can.BusABC | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SimulatedEcu:
        """Open the bus and start answering."""
        if self._thread is None:
            self._bus = can.Bus(interface=self._interface, channel=self.channel,
                                receive_own_messages=False, **self._bus_kwargs)
            self._thread = threading.Thread(target=self._serve, name=f"sim-ecu-{self.response_id:03X}",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and close the bus; safe to call twice."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._bus is not None:
            self._bus.shutdown()
            self._bus = None

    def __enter__(self) -> SimulatedEcu:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- what the test changes -------------------------------------------------------------

    def set_value(self, pid: int, raw: bytes) -> None:
        """Answer ``pid`` with these data bytes from now on (and claim it in the bitmaps)."""
        with self._lock:
            self._values[pid] = bytes(raw)
            self._supported.add(pid)

    def set_silent(self, is_silent: bool) -> None:
        """Ignition off (True): answer nothing at all; on again (False)."""
        with self._lock:
            self._silent = is_silent

    def refuse(self, pid: int, nrc: int) -> None:
        """Answer ``pid`` with the negative response ``[0x03, 0x7F, 0x01, nrc]`` instead of a value."""
        with self._lock:
            self._refusals[pid] = nrc

    def delay(self, pid: int, seconds: float) -> None:
        """Answer ``pid`` with responsePending (NRC 0x78) at once and the value ``seconds`` later."""
        with self._lock:
            self._delays[pid] = seconds

    def add_extra_frames(self, pid: int, *frames: bytes) -> None:
        """Send these raw frames (as given, no padding) just before each answer to ``pid``."""
        with self._lock:
            self._extra.setdefault(pid, []).extend(bytes(f) for f in frames)

    def set_latency(self, seconds: float) -> None:
        """Send every answer this long after the request (a slow ECU, or one slower than another)."""
        with self._lock:
            self._latency = seconds

    def clear_faults(self) -> None:
        """Forget refusals, delays and extra frames."""
        with self._lock:
            self._refusals.clear()
            self._delays.clear()
            self._extra.clear()

    @property
    def requests(self) -> list[int]:
        """Every service 01 PID asked so far, in order (also those it did not answer)."""
        with self._lock:
            return list(self._requests)

    # -- the ECU ---------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._bus is not None
        bus = self._bus
        while not self._stopping.is_set():
            msg = bus.recv(timeout=self._until_next_due())
            self._send_due(bus)
            if msg is not None:
                frames = self._answer(msg)
                for data in frames:
                    self._schedule(self._latency, data)
                self._send_due(bus)

    def _until_next_due(self) -> float:
        with self._lock:
            if not self._scheduled:
                return 0.05
            return min(0.05, max(0.0, self._scheduled[0][0] - time.monotonic()))

    def _schedule(self, delay: float, data: bytes) -> None:
        with self._lock:
            self._sequence += 1
            heapq.heappush(self._scheduled, (time.monotonic() + delay, self._sequence, data))

    def _send_due(self, bus: can.BusABC) -> None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._scheduled or self._scheduled[0][0] > now:
                    return
                _, _, data = heapq.heappop(self._scheduled)
            bus.send(can.Message(arbitration_id=self.response_id, is_extended_id=False, data=data))

    def _answer(self, msg: can.Message) -> list[bytes]:
        """The frames to send now for one received frame; delayed answers are scheduled here."""
        data = bytes(msg.data)
        if (msg.is_extended_id or msg.arbitration_id not in (FUNCTIONAL_ID, self.response_id - 8)
                or len(data) < 3 or data[0] != 0x02 or data[1] != 0x01):
            return []
        pid = data[2]
        with self._lock:
            self._requests.append(pid)
            if self._silent:
                return []
            frames = list(self._extra.get(pid, []))
            if pid in self._refusals:
                return frames + [self._frame(bytes([0x7F, 0x01, self._refusals[pid]]))]
            payload = self._payload(pid)
            if payload is None:
                return frames  # unsupported: ECUs stay silent to functional requests
            if pid in self._delays:
                self._sequence += 1
                due = time.monotonic() + self._latency + self._delays[pid]
                heapq.heappush(self._scheduled, (due, self._sequence,
                                                 self._frame(payload)))
                return frames + [self._frame(bytes([0x7F, 0x01, 0x78]))]
            return frames + [self._frame(payload)]

    def _payload(self, pid: int) -> bytes | None:
        """``[0x41, pid, A, ...]`` or None if this ECU does not support ``pid``; lock held."""
        if pid in SUPPORT_PIDS:
            claims_range = pid == 0 or pid in self._supported or any(p > pid for p in self._supported)
            return bytes([0x41, pid]) + support_bitmap(pid, self._supported) if claims_range else None
        if pid not in self._supported or pid not in self._values:
            return None
        return bytes([0x41, pid]) + self._values[pid]

    def _frame(self, payload: bytes) -> bytes:
        frame = bytes([len(payload)]) + payload
        return frame if self.padding is None else frame.ljust(8, bytes([self.padding]))
