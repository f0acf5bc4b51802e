"""NMEA 0183 byte stream → fixes, tolerant of everything a real receiver line does.

Framing: a sentence starts at ``$`` and ends at CR, LF or the next ``$``. NUL
bytes are dropped (XOR with 0 leaves the checksum unchanged, so padded
sentences survive). A segment longer than ``max_length`` is dropped as it grows,
so a stream with no line ends cannot eat memory. Every other segment is checked
(checksum required, as pynmea2 ``check=True``), parsed with pynmea2 and turned
into values with strict converters of our own (pynmea2 returns 0.0 for an empty
latitude). Each dropped segment is counted under exactly one reason in
``NmeaStats``, logged at debug, and summarised in a warning at most every
``warn_interval`` seconds. The reasons, in the order they are tested:
too_long / garbage (non-ASCII), truncated (no leading ``$``, checksum cut, or
fewer fields than the type has and no checksum), spliced (a ``$``-ended
segment that does not check; one that checks is a whole sentence whose line
end was lost, and is kept), no_checksum, bad_checksum, proprietary, unsupported
(talker or type), parse_error, then per type empty_fields, invalid_fix and
rollover (a date before 2024: that sentence's date is not trusted).

Epochs: a Fix is emitted on the first valid position sentence (GGA quality > 0,
RMC status A, GLL status A) whose UTC time of day differs from the last emitted
one. Its position and time come from that sentence; altitude, speed, course,
DOPs, satellites and fix type are the latest known from any sentence, so when
a receiver sends RMC before GGA, the altitude is the previous epoch's. This
costs no latency and needs no knowledge of the receiver's sentence order.
"""

from __future__ import annotations

import logging
import math
import re
import time as _time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import pynmea2

from drivers.gnss.base import Fix, NmeaStats, SkipLog, SkipReason

__all__ = ["MAX_LENGTH", "NmeaStream", "NmeaStats", "TALKERS", "TRUSTED_SINCE", "checksum"]

log = logging.getLogger(__name__)

MAX_LENGTH = 82  # NMEA 0183 limit; counted here from "$" to the checksum, without CR LF
TALKERS = frozenset({"GP", "GN", "GL", "GA", "GB", "GQ", "BD", "GI"})
TRUSTED_SINCE = date(2024, 1, 1)  # earlier dates are the GPS week-number rollover symptom
WARN_INTERVAL = 30.0
MIN_FIELDS = {"GGA": 14, "RMC": 11, "VTG": 8, "GSA": 17, "GSV": 3, "GLL": 6, "ZDA": 6}
FIX_TYPES = {2: "TWO_D", 3: "THREE_D"}

_DELIMITER = re.compile(rb"[$\r\n]")
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")
_TIME = re.compile(r"(\d\d)(\d\d)(\d\d(?:\.\d+)?)")
_DATE = re.compile(r"(\d\d)(\d\d)(\d\d)")
_LAT = re.compile(r"(\d{1,2})(\d\d(?:\.\d*)?)")
_LON = re.compile(r"(\d{1,3})(\d\d(?:\.\d*)?)")


def checksum(body: str) -> int:
    """XOR of the characters between ``$`` and ``*``."""
    value = 0
    for char in body.encode("ascii"):
        value ^= char
    return value


class _Skip(Exception):
    """Internal: drop this segment, counted under ``reason``."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# -- strict field converters --------------------------------------------------


def _float(text: str, what: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _Skip("parse_error", f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise _Skip("parse_error", f"{what} {text!r} is not finite")
    return value


def _int(text: str, what: str) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise _Skip("parse_error", f"{what} {text!r} is not an integer")
    return int(text)


def _angle(text: str, hemisphere: str, pattern: re.Pattern[str], signs: str, limit: int) -> float:
    match = pattern.fullmatch(text)
    if match is None or hemisphere not in signs:
        raise _Skip("parse_error", f"bad coordinate {text!r},{hemisphere!r}")
    degrees, minutes = int(match[1]), float(match[2])
    value = degrees + minutes / 60.0
    if minutes >= 60.0 or value > limit:
        raise _Skip("parse_error", f"coordinate {text!r} out of range")
    return -value if hemisphere == signs[1] else value


def _position(data: list[str], at: int) -> tuple[float, float]:
    """Latitude and longitude from the four fields starting at ``at``."""
    lat, ns, lon, ew = (_field(data, at + i) for i in range(4))
    if not (lat and ns and lon and ew):
        raise _Skip("empty_fields", "position fields are empty")
    return _angle(lat, ns, _LAT, "NS", 90), _angle(lon, ew, _LON, "EW", 180)


def _time_of_day(text: str) -> time | None:
    if not text:
        return None
    match = _TIME.fullmatch(text)
    if match is None:
        raise _Skip("parse_error", f"bad time {text!r}")
    hour, minute, seconds = int(match[1]), int(match[2]), float(match[3])
    if hour > 23 or minute > 59 or seconds >= 61.0:
        raise _Skip("parse_error", f"time {text!r} out of range")
    seconds = min(seconds, 59.999999)  # a leap second is not representable
    return time(hour, minute, int(seconds), round((seconds % 1) * 1e6) % 1_000_000)


def _trusted(day: date) -> date:
    if day < TRUSTED_SINCE:
        raise _Skip("rollover", f"date {day.isoformat()} is before {TRUSTED_SINCE.isoformat()}")
    return day


def _ddmmyy(text: str) -> date | None:
    if not text:
        return None
    match = _DATE.fullmatch(text)
    if match is None:
        raise _Skip("parse_error", f"bad date {text!r}")
    year = int(match[3])
    year += 1900 if year >= 69 else 2000  # as strptime's %y
    return _trusted(_date(year, int(match[2]), int(match[1]), text))


def _date(year: int, month: int, day: int, text: str) -> date:
    try:
        return date(year, month, day)
    except ValueError:
        raise _Skip("parse_error", f"bad date {text!r}") from None


def _field(data: list[str], index: int) -> str:
    return data[index].strip() if index < len(data) else ""


# -- epoch state ----------------------------------------------------------------


@dataclass
class _Epoch:
    """What the stream knows now: merged from every accepted sentence."""

    day: date | None = None
    last_time: datetime | None = None
    last_emitted: time | None = None
    altitude: float | None = None
    quality: int | None = None
    satellites_used: int | None = None
    hdop: float | None = None
    pdop: float | None = None
    vdop: float | None = None
    speed: float | None = None
    course: float | None = None
    gsa_fix: int | None = None
    in_view: dict[str, int] = field(default_factory=dict)

    def timestamp(self, tod: time | None, day: date | None) -> datetime | None:
        """UTC time of a sentence: its own date, or the last known one (rolled over midnight)."""
        if tod is None or (day is None and self.day is None):
            return None
        when = datetime.combine(day or self.day or TRUSTED_SINCE, tod, tzinfo=timezone.utc)
        if day is None and self.last_time is not None and when < self.last_time - timedelta(hours=12):
            when += timedelta(days=1)
        self.day = when.date()
        self.last_time = when
        return when

    def fix_type(self) -> str:
        """GSA's fix type when it reports a fix, else inferred from GGA's altitude."""
        if self.gsa_fix in FIX_TYPES:
            return FIX_TYPES[self.gsa_fix]
        return "THREE_D" if self.altitude is not None else "TWO_D"


# -- the stream -------------------------------------------------------------------


class NmeaStream:
    """Feed bytes as they arrive; get back the fixes they completed. Never raises on data."""

    def __init__(
        self,
        stats: NmeaStats | None = None,
        *,
        name: str = "nmea",
        max_length: int = MAX_LENGTH,
        warn_interval: float = WARN_INTERVAL,
        clock: Callable[[], float] = _time.monotonic,
    ) -> None:
        self.stats = stats if stats is not None else NmeaStats()
        self.name = name
        self._max_length = max_length
        self._skip = SkipLog(self.stats, name, warn_interval, clock, log)
        self._pending = bytearray()
        self._discarding = False
        self._epoch = _Epoch()

    def feed(self, data: bytes) -> list[Fix]:
        """Consume ``data`` (any split of the stream); return the fixes it completed, in order."""
        nul = data.count(0)
        if nul:
            self.stats.nul_bytes += nul
            data = data.replace(b"\x00", b"")
        fixes = []
        for segment, ended_by_dollar in self._segments(data):
            fix = self._handle(segment, ended_by_dollar)
            if fix is not None:
                fixes.append(fix)
        return fixes

    def flush(self) -> list[Fix]:
        """Treat the unterminated tail as a complete line (end of a log file)."""
        tail = self._take()
        fix = self._handle(tail, False) if tail is not None else None
        return [fix] if fix is not None else []

    def reset(self) -> None:
        """Forget the partial line and the epoch state (new connection, replay loop); keep stats."""
        self._pending.clear()
        self._discarding = False
        self._epoch = _Epoch()

    # -- framing ------------------------------------------------------------------

    def _segments(self, data: bytes) -> Iterator[tuple[bytes, bool]]:
        start = 0
        for match in _DELIMITER.finditer(data):
            self._append(data[start : match.start()])
            segment = self._take()
            is_dollar = match.group() == b"$"
            if segment is not None:
                yield segment, is_dollar
            if is_dollar:
                self._pending += b"$"
            start = match.end()
        self._append(data[start:])

    def _append(self, chunk: bytes) -> None:
        if self._discarding or not chunk:
            return
        self._pending += chunk
        if len(self._pending) > self._max_length:
            is_text = _PRINTABLE.fullmatch(self._pending) is not None
            reason: SkipReason = "too_long" if is_text else "garbage"
            self._skip(reason, f"over {self._max_length} bytes without a line end", bytes(self._pending))
            self._pending.clear()
            self._discarding = True

    def _take(self) -> bytes | None:
        """The segment just ended, or None if it was already dropped as too long."""
        if self._discarding:
            self._discarding = False
            return None
        segment = bytes(self._pending)
        self._pending.clear()
        return segment

    # -- one segment ------------------------------------------------------------------

    def _handle(self, segment: bytes, ended_by_dollar: bool) -> Fix | None:
        text = segment.strip()
        if not text:
            return None
        try:
            fix = self._interpret(self._body(text, ended_by_dollar))
        except _Skip as skip:
            self._skip(skip.reason, str(skip), text)
            return None
        self.stats.sentences += 1
        self.stats.accepted += 1
        if fix is not None:
            self.stats.fixes += 1
        return fix

    def _body(self, raw: bytes, ended_by_dollar: bool) -> str:
        """The checked text between ``$`` and ``*``; a ``$``-ended segment must be whole to survive."""
        if _PRINTABLE.fullmatch(raw) is None:
            raise _Skip("garbage", "non-ASCII bytes")
        text = raw.decode("ascii")
        if text.startswith("!"):
            raise _Skip("unsupported", "encapsulated (!) sentence")
        if not text.startswith("$"):
            raise _Skip("truncated", "no '$': the start of the sentence was lost")
        try:
            return self._checked(text)
        except _Skip as skip:
            if ended_by_dollar:
                raise _Skip("spliced", f"cut by the next '$' ({skip})") from None
            raise

    @staticmethod
    def _checked(text: str) -> str:
        body, star, given = text[1:].partition("*")
        if not star:
            address = body.split(",", 1)[0]
            is_short = len(address) < 5 or body.count(",") < MIN_FIELDS.get(address[2:], 1)
            if is_short and not address.startswith("P"):
                raise _Skip("truncated", "too few fields and no checksum")
            raise _Skip("no_checksum", "no '*hh' checksum")
        if len(given) < 2:
            raise _Skip("truncated", "checksum cut short")
        if _HEX2.fullmatch(given) is None:
            raise _Skip("bad_checksum", f"checksum field {given!r} is not two hex digits")
        if int(given, 16) != checksum(body):
            raise _Skip("bad_checksum", f"checksum {given} != {checksum(body):02X}")
        return body

    def _interpret(self, body: str) -> Fix | None:
        address = body.split(",", 1)[0]
        if address.startswith("P"):
            raise _Skip("proprietary", f"proprietary sentence {address}")
        handler = _HANDLERS.get(address[2:]) if len(address) == 5 else None
        if handler is None or address[:2] not in TALKERS:
            raise _Skip("unsupported", f"unused sentence {address}")
        try:
            message = pynmea2.parse(f"${body}*{checksum(body):02X}", check=True)
        except ValueError as exc:
            raise _Skip("parse_error", f"pynmea2: {exc}") from exc
        return handler(self, message)

    # -- sentences --------------------------------------------------------------------

    def _gga(self, msg: Any) -> Fix | None:
        data = msg.data
        quality = _int(_field(data, 5), "GGA quality")
        if quality is None:
            raise _Skip("empty_fields", "GGA without quality")
        if quality == 0:
            raise _Skip("invalid_fix", "GGA quality 0")
        lat, lon = _position(data, 1)
        tod = _time_of_day(_field(data, 0))
        used = _int(_field(data, 6), "GGA satellites")
        hdop = _float(_field(data, 7), "GGA HDOP")
        altitude = _float(_field(data, 8), "GGA altitude")
        epoch = self._epoch  # changed only once the whole sentence has been read
        epoch.quality, epoch.satellites_used, epoch.altitude = quality, used, altitude
        if hdop is not None:
            epoch.hdop = hdop
        return self._fix(msg.talker, lat, lon, tod, None)

    def _rmc(self, msg: Any) -> Fix | None:
        data = msg.data
        status = _field(data, 1)
        if status == "V" or _field(data, 11) == "N":
            raise _Skip("invalid_fix", "RMC status V")
        if status != "A":
            raise _Skip("empty_fields" if not status else "parse_error", f"RMC status {status!r}")
        lat, lon = _position(data, 2)
        tod = _time_of_day(_field(data, 0))
        day = _ddmmyy(_field(data, 8))
        knots = _float(_field(data, 6), "RMC speed")
        course = _float(_field(data, 7), "RMC course")
        self._motion(None if knots is None else knots * 1.852, course)
        return self._fix(msg.talker, lat, lon, tod, day)

    def _gll(self, msg: Any) -> Fix | None:
        data = msg.data
        status = _field(data, 5)
        if status == "V" or _field(data, 6) == "N":
            raise _Skip("invalid_fix", "GLL status V")
        if status != "A":
            raise _Skip("empty_fields" if not status else "parse_error", f"GLL status {status!r}")
        lat, lon = _position(data, 0)
        return self._fix(msg.talker, lat, lon, _time_of_day(_field(data, 4)), None)

    def _vtg(self, msg: Any) -> None:
        data = msg.data
        course = _float(_field(data, 0), "VTG course")
        kmh = _float(_field(data, 6), "VTG speed")
        knots = _float(_field(data, 4), "VTG speed")
        if kmh is None and knots is not None:
            kmh = knots * 1.852
        if course is None and kmh is None:
            raise _Skip("empty_fields", "VTG without course or speed")
        self._motion(kmh, course)

    def _gsa(self, msg: Any) -> None:
        data = msg.data
        kind = _int(_field(data, 1), "GSA fix type")
        if kind is None:
            raise _Skip("empty_fields", "GSA without fix type")
        pdop, hdop, vdop = (_float(_field(data, i), "GSA DOP") for i in (14, 15, 16))
        epoch = self._epoch
        epoch.gsa_fix, epoch.pdop, epoch.vdop = kind, pdop, vdop
        if hdop is not None:
            epoch.hdop = hdop

    def _gsv(self, msg: Any) -> None:
        in_view = _int(_field(msg.data, 2), "GSV satellites in view")
        if in_view is None:
            raise _Skip("empty_fields", "GSV without satellites in view")
        self._epoch.in_view[msg.talker] = in_view

    def _zda(self, msg: Any) -> None:
        data = msg.data
        tod = _time_of_day(_field(data, 0))
        parts = [_int(_field(data, i), "ZDA date") for i in (1, 2, 3)]
        if tod is None or None in parts:
            raise _Skip("empty_fields", "ZDA without date or time")
        day, month, year = (p or 0 for p in parts)
        self._epoch.timestamp(tod, _trusted(_date(year, month, day, ",".join(data[1:4]))))

    def _motion(self, kmh: float | None, course: float | None) -> None:
        if kmh is not None:
            self._epoch.speed = kmh
        if course is not None:
            self._epoch.course = course

    def _fix(self, talker: str, lat: float, lon: float, tod: time | None, day: date | None) -> Fix | None:
        """Emit a Fix if this valid position opens a new epoch."""
        epoch = self._epoch
        when = epoch.timestamp(tod, day)
        if tod is not None and tod == epoch.last_emitted:
            return None
        epoch.last_emitted = tod
        return Fix(
            latitude=lat,
            longitude=lon,
            time=when,
            altitude=epoch.altitude,
            speed=epoch.speed,
            course=epoch.course,
            fix_type=epoch.fix_type(),
            quality=epoch.quality,
            satellites_used=epoch.satellites_used,
            satellites_in_view=sum(epoch.in_view.values()) if epoch.in_view else None,
            hdop=epoch.hdop,
            pdop=epoch.pdop,
            vdop=epoch.vdop,
            talker=talker,
        )


_HANDLERS: dict[str, Callable[[NmeaStream, Any], Fix | None]] = {
    "GGA": NmeaStream._gga,
    "RMC": NmeaStream._rmc,
    "GLL": NmeaStream._gll,
    "VTG": NmeaStream._vtg,
    "GSA": NmeaStream._gsa,
    "GSV": NmeaStream._gsv,
    "ZDA": NmeaStream._zda,
}
