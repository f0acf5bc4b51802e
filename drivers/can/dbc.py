"""DBC decoding with cantools for the signals a profile maps, and nothing else.

The decoder knows which messages carry a wanted signal, routes frames to them
by frame id (or by PGN for J1939 messages, whatever the source address and
priority), and skips a frame whose wanted bits did not change since the last
frame of that message (rolling counters and checksums are outside those bits).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cantools
from cantools.database.can import Database, Message, Signal

from drivers.can.filters import FrameFilter, j1939_pgn
from drivers.errors import DriverInitError

log = logging.getLogger(__name__)

Value = bool | int | float | str
Converter = Callable[[Any], Value]


def _as_bool(value: Any) -> Value:
    return bool(getattr(value, "value", value))


def _as_int(value: Any) -> Value:
    return int(getattr(value, "value", value))


def _as_float(value: Any) -> Value:
    return float(getattr(value, "value", value))


def _as_str(value: Any) -> Value:
    return str(getattr(value, "name", value))


def _natural(value: Any) -> Value:
    """Choice names become strings, numbers stay numbers."""
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else value


CONVERTERS: dict[str | None, Converter] = {
    None: _natural, "boolean": _as_bool, "int": _as_int, "float": _as_float, "string": _as_str,
}


@dataclass(frozen=True)
class SignalSpec:
    """One wanted signal: where it is, the caller's opaque key, and a linear transform."""

    message: str | int
    signal: str
    key: Hashable
    scale: float = 1.0
    offset: float = 0.0
    datatype: str | None = None


@dataclass
class _Wanted:
    signal: str
    key: Hashable
    scale: float
    offset: float
    convert: Converter
    digits: int | None = None  # decimals that the signal's resolution supports


def _digits(*steps: float) -> int | None:
    """Decimals that show every value of a resolution (the product of ``steps``) exactly: 0.25 → 2."""
    step = abs(math.prod(steps))
    if step == 0 or not math.isfinite(step):
        return None
    for digits in range(10):
        scaled = step * 10**digits
        if abs(scaled - round(scaled)) < 1e-6 * scaled:
            return digits
    return None  # not a decimal resolution (1/3): leave the value as computed


@dataclass
class Route:
    """A mapped message: its cantools Message, the wanted signals, the masks for change detection."""

    message: Message
    wanted: list[_Wanted]
    keys: tuple[Hashable, ...]
    mask: int  # payload bits of the wanted signals and multiplexers
    selector: int  # payload bits of the multiplexers (0 if not multiplexed)


@dataclass
class DecoderStats:
    decoded: int = 0
    unchanged: int = 0
    unmapped: int = 0
    errors: int = 0


@dataclass
class DbcDecoder:
    """Decodes the frames of the wanted messages; built once from a DBC and the profile's mapping."""

    routes_by_id: dict[tuple[int, bool], Route]
    routes_by_pgn: dict[int, Route]
    stats: DecoderStats = field(default_factory=DecoderStats)
    _last: dict[tuple[int, int], int] = field(default_factory=dict)
    _cache: dict[tuple[int, bool], Route | None] = field(default_factory=dict)
    _last_error_log: float = 0.0

    @classmethod
    def from_file(cls, dbc: Path | str, specs: Sequence[SignalSpec]) -> DbcDecoder:
        try:
            db = cantools.database.load_file(str(dbc), strict=False)
        except Exception as exc:
            raise DriverInitError(f"cannot load DBC {dbc}: {exc}") from exc
        if not isinstance(db, Database):
            raise DriverInitError(f"{dbc} is not a CAN database")
        return cls.from_database(db, specs)

    @classmethod
    def from_database(cls, db: Database, specs: Sequence[SignalSpec]) -> DbcDecoder:
        by_message: dict[str, list[_Wanted]] = {}
        for spec in specs:
            message = _find_message(db, spec.message)
            if spec.signal not in {s.name for s in message.signals}:
                raise DriverInitError(f"signal {spec.signal!r} is not in message {message.name!r}")
            if spec.datatype not in CONVERTERS:
                raise DriverInitError(f"unknown datatype {spec.datatype!r} for {spec.signal!r}")
            by_message.setdefault(message.name, []).append(
                _Wanted(spec.signal, spec.key, spec.scale, spec.offset, CONVERTERS[spec.datatype]))
        routes_by_id: dict[tuple[int, bool], Route] = {}
        routes_by_pgn: dict[int, Route] = {}
        for name, wanted in by_message.items():
            route = _make_route(db.get_message_by_name(name), wanted)
            if route.message.protocol == "j1939":
                routes_by_pgn[j1939_pgn(route.message.frame_id)] = route
            else:
                routes_by_id[(route.message.frame_id, route.message.is_extended_frame)] = route
        return cls(routes_by_id, routes_by_pgn)

    @property
    def frame_filter(self) -> FrameFilter:
        """The frames this decoder needs: give it to the bus so the rest never reaches Python."""
        return FrameFilter(frozenset(self.routes_by_id), frozenset(self.routes_by_pgn))

    def route(self, arbitration_id: int, is_extended: bool) -> Route | None:
        """The route for a frame id, J1939 messages matched by PGN; cached per id."""
        key = (arbitration_id, is_extended)
        try:
            return self._cache[key]
        except KeyError:
            pass
        route = self.routes_by_id.get(key)
        if route is None and is_extended and self.routes_by_pgn:
            route = self.routes_by_pgn.get(j1939_pgn(arbitration_id))
        self._cache[key] = route
        return route

    def decode(self, arbitration_id: int, is_extended: bool, data: bytes | bytearray
               ) -> tuple[Route | None, list[tuple[Hashable, Value]] | None]:
        """Return (route, values); values is None when unmapped, unchanged or undecodable."""
        route = self.route(arbitration_id, is_extended)
        if route is None:
            self.stats.unmapped += 1
            return None, None
        raw = int.from_bytes(data, "little")
        slot = (arbitration_id, raw & route.selector)
        masked = raw & route.mask
        if self._last.get(slot) == masked:
            self.stats.unchanged += 1
            return route, None
        try:
            decoded = route.message.decode(bytes(data), decode_choices=True, scaling=True)
        except Exception as exc:
            self._log_error(route, data, exc)
            return route, None
        self._last[slot] = masked
        self.stats.decoded += 1
        values = []
        for w in route.wanted:
            if w.signal in decoded:  # a multiplexed signal is only in its own mux's frames
                value = decoded[w.signal]
                if isinstance(value, float) or (
                        isinstance(value, int) and (w.scale != 1.0 or w.offset != 0.0)):
                    value = value * w.scale + w.offset
                    if w.digits is not None:  # 0.4 * 156 is 62.400000000000006, not 62.4
                        value = round(value, w.digits)
                values.append((w.key, w.convert(value)))
        return route, values

    def _log_error(self, route: Route, data: bytes | bytearray, exc: Exception) -> None:
        self.stats.errors += 1
        now = time.monotonic()
        if now - self._last_error_log > 30.0:
            self._last_error_log = now
            log.warning("cannot decode %s from %s (%d undecodable frames so far): %s",
                        route.message.name, bytes(data).hex(), self.stats.errors, exc)


def _find_message(db: Database, ref: str | int) -> Message:
    try:
        if isinstance(ref, int):
            return db.get_message_by_frame_id(ref)
        return db.get_message_by_name(ref)
    except KeyError as exc:
        raise DriverInitError(f"message {ref!r} is not in the DBC") from exc


def _make_route(message: Message, wanted: list[_Wanted]) -> Route:
    length = max(message.length, 1)
    signals = {s.name: s for s in message.signals}
    for w in wanted:
        signal = signals[w.signal]
        parts = [_digits(signal.scale, w.scale), _digits(signal.offset * w.scale or 1), _digits(w.offset or 1)]
        w.digits = None if None in parts else max(d for d in parts if d is not None)
    mux_names = {s.name for s in message.signals if s.is_multiplexer}
    selector = _bits(length, (signals[n] for n in mux_names))
    mask = selector | _bits(length, (signals[w.signal] for w in wanted))
    keys = tuple(w.key for w in wanted)
    return Route(message, wanted, keys, mask, selector)


def _bits(length: int, signals: Iterable[Signal]) -> int:
    """Payload bits (as a little-endian integer over the bytes) covered by ``signals``."""
    mask = bytearray(length)
    for signal in signals:
        for bit in _signal_bits(signal):
            if bit // 8 < length:
                mask[bit // 8] |= 1 << (bit % 8)
    return int.from_bytes(mask, "little")


def _signal_bits(signal: Signal) -> Iterable[int]:
    """DBC bit positions of a signal: Intel counts up from start, Motorola zig-zags down from it."""
    bit = signal.start
    for _ in range(signal.length):
        yield bit
        if signal.byte_order == "little_endian":
            bit += 1
        elif bit % 8 == 0:
            bit += 15
        else:
            bit -= 1
