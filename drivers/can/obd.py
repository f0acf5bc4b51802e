"""OBD-II service 01 polling over ISO 15765-4 CAN (11-bit ids, functional address 0x7DF).

For cars without a DBC. The poller never owns the bus: it is given an async
``send`` and the bus owner calls :meth:`ObdPoller.feed` with every frame from
0x7E8..0x7EF, so everything runs in the event loop and the driver has no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import can

from drivers.backoff import Backoff
from drivers.can.filters import FrameFilter
from drivers.errors import DriverInitError, DriverOperationError, DriverTimeout

log = logging.getLogger(__name__)

FUNCTIONAL_ID = 0x7DF
SERVICE_CURRENT_DATA = 0x01
POSITIVE_RESPONSE = SERVICE_CURRENT_DATA + 0x40
NEGATIVE_RESPONSE = 0x7F
NRC_RESPONSE_PENDING = 0x78
P2_STAR = 5.0  # s an ECU may take after saying "responsePending" (ISO 15765-4)
# PIDs 0x00, 0x20 ... 0xC0 are bitmaps of which of the next 32 PIDs an ECU supports.
SUPPORT_PIDS = tuple(range(0x00, 0xE0, 0x20))

NRC_NAMES: dict[int, str] = {
    0x10: "generalReject",
    0x11: "serviceNotSupported",
    0x12: "subFunctionNotSupported",
    0x13: "incorrectMessageLengthOrInvalidFormat",
    0x21: "busyRepeatRequest",
    0x22: "conditionsNotCorrect",
    0x31: "requestOutOfRange",
    0x78: "responsePending",
}


def _percent(data: bytes) -> float:
    return data[0] * 100 / 255


def _celsius(data: bytes) -> float:
    return float(data[0] - 40)


def _word(data: bytes) -> float:
    return float(256 * data[0] + data[1])


# PID -> (number of data bytes, SAE J1979 formula on A, B, ...).
_FORMULAS: dict[int, tuple[int, Callable[[bytes], float]]] = {
    0x04: (1, _percent),  # calculated engine load, %
    0x05: (1, _celsius),  # engine coolant temperature, °C
    0x06: (1, lambda d: (d[0] - 128) * 100 / 128),  # short term fuel trim bank 1, %
    0x07: (1, lambda d: (d[0] - 128) * 100 / 128),  # long term fuel trim bank 1, %
    0x0B: (1, lambda d: float(d[0])),  # intake manifold absolute pressure, kPa
    0x0C: (2, lambda d: _word(d) / 4),  # engine speed, rpm
    0x0D: (1, lambda d: float(d[0])),  # vehicle speed, km/h
    0x0E: (1, lambda d: d[0] / 2 - 64),  # timing advance, ° before TDC
    0x0F: (1, _celsius),  # intake air temperature, °C
    0x10: (2, lambda d: _word(d) / 100),  # mass air flow, g/s
    0x11: (1, _percent),  # throttle position, %
    0x1F: (2, _word),  # run time since engine start, s
    0x21: (2, _word),  # distance travelled with MIL on, km
    0x2F: (1, _percent),  # fuel tank level, %
    0x31: (2, _word),  # distance since codes cleared, km
    0x33: (1, lambda d: float(d[0])),  # absolute barometric pressure, kPa
    0x42: (2, lambda d: _word(d) / 1000),  # control module voltage, V
    0x46: (1, _celsius),  # ambient air temperature, °C
    0x5C: (1, _celsius),  # engine oil temperature, °C
    0x5E: (2, lambda d: _word(d) / 20),  # engine fuel rate, L/h
}

DECODERS: dict[int, Callable[[bytes], float]] = {pid: f for pid, (_, f) in _FORMULAS.items()}
DATA_LENGTH: dict[int, int] = {pid: n for pid, (n, _) in _FORMULAS.items()}
DATA_LENGTH.update({pid: 4 for pid in SUPPORT_PIDS})



def supported_in_bitmap(base: int, bitmap: bytes) -> set[int]:
    """The PIDs a support bitmap (answer to PID ``base``) marks: MSB of A is ``base + 1``."""
    bits = int.from_bytes(bitmap[:4], "big")
    return {base + 32 - i for i in range(32) if bits >> i & 1}


@dataclass
class ObdStats:
    """Counters since construction; one request is one functional frame sent."""

    requests: int = 0
    answers: int = 0  # requests that produced a value
    no_answer: int = 0  # requests nobody answered, positively or negatively, in time
    negative: int = 0  # negative responses other than responsePending
    response_pending: int = 0  # NRC 0x78: the ECU asked for more time (up to P2*)
    malformed: int = 0  # frames ignored: ISO-TP multi-frame, bad length, other service, PID not asked
    unsolicited: int = 0  # well-formed service 01 frames with no request in flight (late answers)
    unsupported_skipped: int = 0  # configured PIDs skipped in a round because no ECU supports them
    send_errors: int = 0
    discoveries: int = 0  # successful discoveries (the first, and each one after the car went silent)


@dataclass
class _Exchange:
    """One request in flight and what the ECUs said to it."""

    pid: int
    expected: frozenset[int]  # ECUs that claim the PID; empty: unknown, collect for the whole window
    deadline: float = 0.0  # loop time; set once the request is sent, pushed out by responsePending
    answers: dict[int, bytes] = field(default_factory=dict)  # ECU id -> data bytes A, B, ...
    refused: set[int] = field(default_factory=set)
    is_heard: bool = False  # any ECU said anything to this request
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def is_complete(self) -> bool:
        """The preferred (lowest id) ECU answered, or every ECU that claims the PID replied."""
        if not self.expected:
            return False
        return min(self.expected) in self.answers or self.expected <= self.answers.keys() | self.refused


class ObdPoller:
    """Discovers the PIDs the ECUs support, then polls the configured ones, one request at a time."""

    RESPONSE_IDS: ClassVar[range] = range(0x7E8, 0x7F0)

    def __init__(self, send: Callable[[can.Message], Awaitable[None]], pids: Sequence[int],
                 on_value: Callable[[int, float], None], *, interval: float = 1.0, timeout: float = 0.2,
                 padding: int = 0xCC, backoff: Backoff | None = None, silent_rounds: int = 3) -> None:
        _check_config(pids, interval, timeout, padding, silent_rounds)
        self._send = send
        self._pids = tuple(dict.fromkeys(pids))
        self._on_value = on_value
        self._interval = interval
        self._timeout = timeout
        self._padding = padding
        self._backoff = backoff if backoff is not None else Backoff()
        self._silent_rounds = silent_rounds
        self._lock = asyncio.Lock()
        self._exchange: _Exchange | None = None
        self._ecus: dict[int, frozenset[int]] = {}
        self.supported: frozenset[int] = frozenset()
        self.stats = ObdStats()

    @property
    def ecus(self) -> dict[int, frozenset[int]]:
        """Response id -> PIDs that ECU claims, from the last discovery."""
        return dict(self._ecus)

    # -- frames in (called by the bus owner, in the event loop) ---------------------------

    def feed(self, msg: can.Message) -> None:
        """Take one frame from 0x7E8..0x7EF; what is not a service 01 answer is counted and ignored."""
        ecu = msg.arbitration_id
        if msg.is_extended_id or ecu not in self.RESPONSE_IDS:
            return
        payload = self._single_frame(ecu, bytes(msg.data))
        if payload is None:
            return
        if payload[0] == POSITIVE_RESPONSE:
            self._on_positive(ecu, payload)
        elif payload[0] == NEGATIVE_RESPONSE:
            self._on_negative(ecu, payload)
        else:
            self._reject(ecu, payload, f"service 0x{payload[0]:02X} is not a service 01 answer")

    def _single_frame(self, ecu: int, data: bytes) -> bytes | None:
        """The ISO-TP single-frame payload (padding stripped), or None after counting why not."""
        why = _single_frame_problem(data)
        if why:
            self._reject(ecu, data, why)
            return None
        return data[1:1 + (data[0] & 0x0F)]

    def _on_positive(self, ecu: int, payload: bytes) -> None:
        if len(payload) < 2:
            self._reject(ecu, payload, "positive response without a PID")
            return
        exchange, pid = self._exchange, payload[1]
        if exchange is None:
            self.stats.unsolicited += 1
            log.debug("OBD answer from 0x%03X for PID 0x%02X with no request in flight", ecu, pid)
        elif pid != exchange.pid:
            self._reject(ecu, payload, f"answers PID 0x{pid:02X}, asked 0x{exchange.pid:02X}")
        elif len(payload) != 2 + DATA_LENGTH[pid]:
            self._reject(ecu, payload, f"PID 0x{pid:02X} needs {DATA_LENGTH[pid]} data bytes")
        else:
            exchange.answers.setdefault(ecu, payload[2:])
            self._heard(exchange)

    def _on_negative(self, ecu: int, payload: bytes) -> None:
        if len(payload) != 3 or payload[1] != SERVICE_CURRENT_DATA:
            self._reject(ecu, payload, "negative response to another service")
            return
        exchange, nrc = self._exchange, payload[2]
        if exchange is None:
            self.stats.unsolicited += 1
            log.debug("OBD negative response 0x%02X from 0x%03X with no request in flight", nrc, ecu)
        elif nrc == NRC_RESPONSE_PENDING:
            self.stats.response_pending += 1
            exchange.deadline = max(exchange.deadline, asyncio.get_running_loop().time() + P2_STAR)
            exchange.is_heard = True
        else:
            self.stats.negative += 1
            log.warning("OBD ECU 0x%03X refused PID 0x%02X: %s (0x%02X)", ecu, exchange.pid,
                        NRC_NAMES.get(nrc, "unknown NRC"), nrc)
            exchange.refused.add(ecu)
            self._heard(exchange)

    def _heard(self, exchange: _Exchange) -> None:
        exchange.is_heard = True
        if exchange.is_complete():
            exchange.done.set()

    def _reject(self, ecu: int, data: bytes, why: str) -> None:
        self.stats.malformed += 1
        count = self.stats.malformed
        # Another tester on the bus could flood the log: warn at 1, 2, 4, 8 ... ignored frames.
        level = logging.WARNING if count & (count - 1) == 0 else logging.DEBUG
        log.log(level, "OBD frame from 0x%03X ignored (%s, %d so far): %s", ecu, why, count, data.hex(" "))

    # -- requests out ----------------------------------------------------------------------

    async def _request(self, pid: int, expected: frozenset[int] = frozenset()) -> _Exchange:
        """Ask every ECU for one PID and collect answers until complete or the window closes."""
        async with self._lock:
            exchange = self._exchange = _Exchange(pid, expected)
            try:
                await self._send_frame(pid)
                now = asyncio.get_running_loop().time()
                exchange.deadline = max(exchange.deadline, now + self._timeout)
                await self._wait(exchange)
            finally:
                self._exchange = None
            return exchange

    async def _send_frame(self, pid: int) -> None:
        data = bytes([0x02, SERVICE_CURRENT_DATA, pid] + [self._padding] * 5)
        msg = can.Message(arbitration_id=FUNCTIONAL_ID, is_extended_id=False, data=data)
        try:
            await self._send(msg)
        except (DriverOperationError, DriverTimeout):
            self.stats.send_errors += 1
            raise
        self.stats.requests += 1

    @staticmethod
    async def _wait(exchange: _Exchange) -> None:
        """Wait for completion; a responsePending may push the deadline out while we wait.

        asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
        that arrives as the answer does.
        """
        loop = asyncio.get_running_loop()
        while not exchange.done.is_set() and exchange.deadline > loop.time():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(exchange.deadline):
                    await exchange.done.wait()

    # -- discovery -------------------------------------------------------------------------

    async def discover(self) -> set[int]:
        """Ask PID 0x00, 0x20, ... while any ECU says the next range exists; the union of all answers.

        Raises DriverOperationError or DriverTimeout if ``send`` does.
        """
        claims: dict[int, set[int]] = {}
        for base in SUPPORT_PIDS:
            exchange = await self._request(base)
            for ecu, bitmap in exchange.answers.items():
                claims.setdefault(ecu, set()).update(supported_in_bitmap(base, bitmap))
            if not any(base + 0x20 in claims[ecu] for ecu in exchange.answers):
                break
        self._ecus = {ecu: frozenset(pids) for ecu, pids in sorted(claims.items())}
        found: set[int] = set().union(*claims.values())
        self.supported = frozenset(found)
        return found

    async def _discover_until_answered(self) -> None:
        """Discover, retrying with backoff while nobody answers (ignition off) or the bus is down."""
        while True:
            try:
                found = await self.discover()
            except (DriverOperationError, DriverTimeout) as exc:
                log.warning("OBD discovery could not send: %s", exc)
                found = set()
            if found:
                break
            await asyncio.sleep(self._backoff.next_delay())
        self._backoff.reset()
        self.stats.discoveries += 1
        skipped = [f"0x{pid:02X}" for pid in self._pids if pid not in found]
        log.info("OBD ECUs %s support %d PIDs", [f"0x{ecu:03X}" for ecu in self._ecus], len(found))
        if skipped:
            log.warning("OBD PIDs not supported by this car, not polled: %s", ", ".join(skipped))

    # -- polling ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: discover, poll until the car goes silent, and start over."""
        while True:
            await self._discover_until_answered()
            await self._poll_until_silent()
            log.info("OBD: no ECU answered %d rounds in a row (ignition off?); rediscovering",
                     self._silent_rounds)
            self.supported = frozenset()
            self._ecus = {}

    async def _poll_until_silent(self) -> None:
        """Poll a round every ``interval`` until ``silent_rounds`` full rounds in a row got no reply."""
        loop = asyncio.get_running_loop()
        silent = 0
        while silent < self._silent_rounds:
            started = loop.time()
            try:
                is_heard = await self._poll_round()
            except (DriverOperationError, DriverTimeout) as exc:
                log.warning("OBD poll could not send: %s", exc)
                await asyncio.sleep(self._backoff.next_delay())
                continue
            self._backoff.reset()
            asked = any(pid in self.supported for pid in self._pids)
            silent = silent + 1 if asked and not is_heard else 0
            await asyncio.sleep(max(0.0, started + self._interval - loop.time()))

    async def _poll_round(self) -> bool:
        """Request each supported configured PID once; True if any ECU said anything."""
        is_heard = False
        for pid in self._pids:
            if pid not in self.supported:
                self.stats.unsupported_skipped += 1
                continue
            claimed_by = frozenset(ecu for ecu, pids in self._ecus.items() if pid in pids)
            exchange = await self._request(pid, claimed_by)
            is_heard |= exchange.is_heard
            self._deliver(exchange)
        return is_heard

    def _deliver(self, exchange: _Exchange) -> None:
        """Decode the lowest-id ECU's answer (0x7E8, the engine ECU, if it answered) and hand it on."""
        if not exchange.answers:
            if not exchange.refused:
                self.stats.no_answer += 1
                log.debug("OBD PID 0x%02X: no answer", exchange.pid)
            return
        self.stats.answers += 1
        value = DECODERS[exchange.pid](exchange.answers[min(exchange.answers)])
        try:
            self._on_value(exchange.pid, value)
        except Exception:
            log.exception("OBD on_value failed for PID 0x%02X = %s", exchange.pid, value)


# What the bus owner must let through to ``feed``.
FRAME_FILTER = FrameFilter(ids=frozenset((ecu, False) for ecu in ObdPoller.RESPONSE_IDS))


def _single_frame_problem(data: bytes) -> str:
    """Why ``data`` is not an ISO-TP single frame ("" if it is); padding may be any value or absent."""
    if not data:
        return "empty frame"
    frame_type, length = data[0] >> 4, data[0] & 0x0F
    if frame_type != 0:
        return f"ISO-TP frame type {frame_type}, only single frames are used"
    if not 1 <= length <= 7 or len(data) < 1 + length:
        return f"single-frame length {length} does not fit {len(data)} bytes"
    return ""


def _check_config(pids: Iterable[int], interval: float, timeout: float, padding: int,
                  silent_rounds: int) -> None:
    """Refuse a configuration the poller could not honour, naming what is wrong."""
    unknown = [f"0x{pid:02X}" if isinstance(pid, int) else repr(pid)
               for pid in pids if pid not in DECODERS]
    if unknown:
        raise DriverInitError(f"OBD PIDs without a formula: {', '.join(unknown)}")
    if not interval > 0 or not timeout > 0:
        raise DriverInitError(f"OBD interval and timeout must be > 0, got {interval} and {timeout}")
    if not 0 <= padding <= 0xFF:
        raise DriverInitError(f"OBD padding must be a byte, got {padding}")
    if silent_rounds < 1:
        raise DriverInitError(f"OBD silent_rounds must be >= 1, got {silent_rounds}")
