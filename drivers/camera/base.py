"""Still pictures from a camera, and the work every camera backend shares.

A backend only knows how to fetch one JPEG (``_grab``); the base serialises
captures (a V4L2 device opens once at a time), bounds each one with a timeout,
checks that the bytes are a whole JPEG, reads its size, and closes idempotently.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from drivers.errors import DriverError, DriverOperationError, DriverTimeout

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0  # s for one still, device start-up included
MAX_JPEG_BYTES = 16 * 1024 * 1024  # a still larger than this is not a still

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
STANDALONE_MARKERS = frozenset(range(0xD0, 0xD8)) | {0x01}


@dataclass(frozen=True, slots=True)
class Still:
    """One JPEG picture and when it was taken (UTC, wall clock)."""

    jpeg: bytes
    width: int
    height: int
    taken_at: datetime


def jpeg_size(data: bytes) -> tuple[int, int]:
    """Width and height from a JPEG's start-of-frame; ValueError when it is not a whole JPEG."""
    if not data.startswith(SOI):
        raise ValueError("no JPEG start-of-image marker")
    if not data.rstrip(b"\0").endswith(EOI):
        raise ValueError("no JPEG end-of-image marker (truncated?)")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"bad JPEG segment at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in STANDALONE_MARKERS:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in SOF_MARKERS and pos + 9 <= len(data):
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            if width and height:
                return width, height
            raise ValueError("JPEG frame has no size")
        if length < 2:
            raise ValueError(f"bad JPEG segment length at byte {pos}")
        pos += 2 + length
    raise ValueError("no JPEG start-of-frame segment")


class Camera(ABC):
    """A source of stills: ``await capture()`` one at a time, ``close()`` once or twice."""

    def __init__(self, *, name: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        if timeout <= 0:
            raise ValueError(f"camera timeout must be positive, not {timeout}")
        self.name = name
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def is_closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    @abstractmethod
    async def _grab(self) -> bytes:
        """Fetch one JPEG's bytes from the device; raise a DriverError on failure."""

    async def _release(self) -> None:
        """Free the backend's resources; called once by ``close()``."""

    async def capture(self) -> Still:
        """Take one still, within ``timeout`` seconds; raise a DriverError saying why not."""
        if self._closed:
            raise DriverOperationError(f"camera {self.name} is closed")
        async with self._lock:
            data = await self._grab_in_time()
        taken_at = datetime.now(UTC)
        try:
            width, height = jpeg_size(data)
        except ValueError as exc:
            raise DriverOperationError(f"camera {self.name} gave a bad JPEG: {exc}") from exc
        log.debug("camera %s: %dx%d still, %d bytes", self.name, width, height, len(data))
        return Still(data, width, height, taken_at)

    async def _grab_in_time(self) -> bytes:
        """``_grab`` bounded by the timeout; a backend's own DriverErrors pass through."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._grab()
        except DriverError:
            raise
        except TimeoutError as exc:
            raise DriverTimeout(f"camera {self.name}: no still within {self.timeout:g}s") from exc

    async def close(self) -> None:
        """Release the device; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        async with self._lock:  # let a capture in progress finish first
            await self._release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
