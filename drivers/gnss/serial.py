"""NMEA from a receiver on a serial port (UART, USB CDC-ACM, USB-serial adapter).

pyserial opens and configures the port; reading needs no thread: the port is
non-blocking and its descriptor is watched by the event loop (``add_reader``),
as python-can's Notifier does for buses with a file descriptor. A vanished port
(USB unplug: EIO or hang-up, or the device node gone) ends the session; the base
reopens it with backoff until it is back.
"""

from __future__ import annotations

import asyncio
import errno
import os

import serial

from drivers.backoff import Backoff
from drivers.errors import DriverInitError, DriverOperationError
from drivers.gnss.base import FixCallback, GnssSource
from drivers.gnss.nmea import MAX_LENGTH, NmeaStream

_CHUNK = 4096


class SerialSource(GnssSource):
    """A GNSS receiver speaking NMEA 0183 on ``port`` (e.g. /dev/serial/by-id/...).

    ``max_length`` defaults to NMEA's 82 characters; raise it for receivers in
    high-precision mode, whose GGA is longer.
    """

    def __init__(
        self,
        on_fix: FixCallback,
        port: str,
        baudrate: int = 9600,
        backoff: Backoff | None = None,
        *,
        max_length: int = MAX_LENGTH,
    ) -> None:
        if not isinstance(port, str) or not port:
            raise DriverInitError(f"GNSS serial port must be a device path, got {port!r}")
        if isinstance(baudrate, bool) or not isinstance(baudrate, int) or baudrate <= 0:
            raise DriverInitError(f"GNSS baudrate must be a positive integer, got {baudrate!r}")
        super().__init__(on_fix, name=f"serial {port}", backoff=backoff)
        self.port = port
        self.baudrate = baudrate
        self._stream = NmeaStream(self.stats, name=self.name, max_length=max_length)

    async def _session(self) -> None:
        port = self._open()
        try:
            self._stream.reset()
            self._connected()
            await self._read_until_lost(port.fileno())
        finally:
            port.close()

    def _open(self) -> serial.Serial:
        try:
            return serial.Serial(self.port, self.baudrate, timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DriverInitError(f"cannot open {self.port} at {self.baudrate} baud: {exc}") from exc

    async def _read_until_lost(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, self._on_readable, fd, lost)
        try:
            await lost
        finally:
            loop.remove_reader(fd)

    def _on_readable(self, fd: int, lost: asyncio.Future[None]) -> None:
        """Runs in the loop when the port has data or has hung up."""
        if lost.done():
            return
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            error = DriverOperationError(f"{self.port}: read failed: {errno.errorcode.get(exc.errno or 0, exc)}")
            error.__cause__ = exc
            lost.set_exception(error)
            return
        if not data:
            lost.set_exception(DriverOperationError(f"{self.port}: hung up (device gone?)"))
            return
        self._alive()
        self._deliver(self._stream.feed(data))
