"""Fixes from a gpsd daemon over its JSON protocol (``?WATCH``), for boards where gpsd owns the receiver.

One TPV report with mode 2 or 3 becomes one Fix. gpsd may report one epoch
several times while it learns the receiver's cycle (2D, then 3D); a repeat of
the same time is dropped unless its mode is better. SKY reports supply
satellites and DOPs.
Malformed lines are counted and skipped; a lost daemon is reconnected with
backoff by the base run loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from drivers.backoff import Backoff
from drivers.errors import DriverInitError, DriverOperationError
from drivers.gnss.base import Fix, FixCallback, GnssSource, SkipLog, SkipReason
from drivers.gnss.nmea import TRUSTED_SINCE

log = logging.getLogger(__name__)

WATCH = b'?WATCH={"enable":true,"json":true}\n'
_LINE_LIMIT = 1 << 18  # a SKY report with every satellite of four constellations fits easily
_QUALITY = {0: 1, 1: 1, 2: 2, 3: 4, 4: 5, 5: 6, 6: 6, 8: 8}  # TPV status -> GGA quality
_FIX_TYPES = {2: "TWO_D", 3: "THREE_D"}
# gpsd's housekeeping and reports we do not use: accepted quietly, not "unsupported"
_QUIET = frozenset({"VERSION", "DEVICES", "DEVICE", "WATCH", "POLL", "PPS", "TOFF", "GST", "ATT", "IMU", "OSC"})


class _Bad(Exception):
    """Internal: drop this report, counted under ``reason``."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class _Sky:
    """The latest SKY values, carried into each Fix."""

    satellites_used: int | None = None
    satellites_in_view: int | None = None
    hdop: float | None = None
    pdop: float | None = None
    vdop: float | None = None


def _number(report: dict[str, Any], key: str) -> float | None:
    value = report.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Bad("parse_error", f"{key}={value!r} is not a number")
    return float(value)


def _utc(report: dict[str, Any]) -> datetime | None:
    text = report.get("time")
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        raise _Bad("parse_error", f"time {text!r} is not ISO 8601") from None
    if when.date() < TRUSTED_SINCE:
        raise _Bad("rollover", f"time {text} is before {TRUSTED_SINCE.isoformat()}")
    return when


class GpsdSource(GnssSource):
    """A gpsd daemon at ``host``:``port`` (loopback by default)."""

    def __init__(
        self,
        on_fix: FixCallback,
        host: str = "127.0.0.1",
        port: int = 2947,
        backoff: Backoff | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise DriverInitError(f"gpsd port must be 1-65535, got {port!r}")
        super().__init__(on_fix, name=f"gpsd {host}:{port}", backoff=backoff)
        self.host = host
        self.port = port
        self._skip = SkipLog(self.stats, self.name, logger=log)
        self._sky = _Sky()
        self._last: tuple[datetime, int] | None = None  # time and mode of the last emitted fix

    async def _session(self) -> None:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=_LINE_LIMIT)
        except OSError as exc:
            raise DriverInitError(f"cannot connect to gpsd at {self.host}:{self.port}: {exc}") from exc
        try:
            writer.write(WATCH)
            await writer.drain()
            self._connected()
            self._last = None
            while True:
                self._handle(await self._readline(reader))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _readline(self, reader: asyncio.StreamReader) -> bytes:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # longer than the limit: asyncio has dropped it
                self._skip("too_long", f"report over {_LINE_LIMIT} bytes", b"")
                continue
            if not line.endswith(b"\n"):
                raise DriverOperationError(f"gpsd at {self.host}:{self.port} closed the connection")
            self._alive()
            return line

    def _handle(self, line: bytes) -> None:
        """One JSON report: counted as accepted or skipped, never raising."""
        try:
            fix = self._report(line)
        except _Bad as bad:
            self._skip(bad.reason, str(bad), line)
            return
        self.stats.sentences += 1
        self.stats.accepted += 1
        if fix is not None:
            self.stats.fixes += 1
            self._deliver([fix])

    def _report(self, line: bytes) -> Fix | None:
        try:
            report = json.loads(line)
        except ValueError as exc:  # also UnicodeDecodeError
            raise _Bad("parse_error", f"not JSON: {exc}") from None
        if not isinstance(report, dict):
            raise _Bad("parse_error", "not a JSON object")
        kind = report.get("class")
        if kind == "TPV":
            return self._tpv(report)
        if kind == "SKY":
            self._read_sky(report)
            return None
        if kind in _QUIET:
            return None
        raise _Bad("unsupported", f"unused report class {kind!r}")

    def _tpv(self, report: dict[str, Any]) -> Fix | None:
        mode = report.get("mode")
        if mode not in _FIX_TYPES:
            raise _Bad("invalid_fix", f"TPV mode {mode!r}")
        lat, lon = _number(report, "lat"), _number(report, "lon")
        if lat is None or lon is None:
            raise _Bad("empty_fields", "TPV without lat/lon")
        if abs(lat) > 90 or abs(lon) > 180:
            raise _Bad("parse_error", f"TPV position {lat},{lon} out of range")
        when = _utc(report)
        if when is not None:
            if self._last is not None and self._last[0] == when and self._last[1] >= mode:
                return None
            self._last = (when, mode)
        return self._fix(report, lat, lon, when)

    def _fix(self, report: dict[str, Any], lat: float, lon: float, when: datetime | None) -> Fix:
        altitude = _number(report, "altMSL")
        speed = _number(report, "speed")
        status = report.get("status", 1)
        sky = self._sky
        return Fix(
            latitude=lat,
            longitude=lon,
            time=when,
            altitude=altitude if altitude is not None else _number(report, "alt"),
            speed=None if speed is None else speed * 3.6,
            course=_number(report, "track"),
            fix_type=_FIX_TYPES[report["mode"]],
            quality=_QUALITY.get(status, 1) if isinstance(status, int) else 1,
            satellites_used=sky.satellites_used,
            satellites_in_view=sky.satellites_in_view,
            hdop=sky.hdop,
            pdop=sky.pdop,
            vdop=sky.vdop,
            talker="GN",  # gpsd merges every constellation
        )

    def _read_sky(self, report: dict[str, Any]) -> None:
        dops = {key: _number(report, key) for key in ("hdop", "pdop", "vdop")}
        in_view, used = _number(report, "nSat"), _number(report, "uSat")
        satellites = report.get("satellites")
        if isinstance(satellites, list):
            in_view = float(len(satellites)) if in_view is None else in_view
            if used is None:
                used = float(sum(1 for s in satellites if isinstance(s, dict) and s.get("used") is True))
        sky = self._sky
        for key, value in dops.items():
            if value is not None:
                setattr(sky, key, value)
        if in_view is not None:
            sky.satellites_in_view = int(in_view)
        if used is not None:
            sky.satellites_used = int(used)
