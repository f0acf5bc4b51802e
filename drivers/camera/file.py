"""A camera that serves JPEG files: one file, or every JPEG of a folder in turn.

The fake for tests and the demo, chosen by the profile like any backend.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

from drivers.camera.base import DEFAULT_TIMEOUT, MAX_JPEG_BYTES, Camera
from drivers.errors import DriverInitError, DriverOperationError

JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})


def list_jpegs(path: Path) -> list[Path]:
    """``path`` itself, or the JPEG files of the folder ``path`` sorted by name."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix.lower() in JPEG_SUFFIXES and p.is_file()]
        if not files:
            raise DriverInitError(f"camera folder {path} holds no .jpg/.jpeg file")
        return sorted(files, key=lambda p: p.name)
    raise DriverInitError(f"camera file {path} does not exist")


class FileCamera(Camera):
    """Each ``capture()`` returns the next JPEG file, cycling; the file is read at capture."""

    def __init__(self, path: str | Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = Path(path)
        super().__init__(name=f"file:{self.path}", timeout=timeout)
        self.files = list_jpegs(self.path)
        self._next: Iterator[Path] = itertools.cycle(self.files)

    async def _grab(self) -> bytes:
        return await asyncio.to_thread(read_jpeg, next(self._next))


def read_jpeg(path: Path) -> bytes:
    """The bytes of ``path``; DriverOperationError when it is gone, unreadable or too large."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_JPEG_BYTES + 1)
    except OSError as exc:
        raise DriverOperationError(f"camera file {path} cannot be read: {exc}") from exc
    if len(data) > MAX_JPEG_BYTES:
        raise DriverOperationError(f"camera file {path} is larger than {MAX_JPEG_BYTES} bytes")
    return data
