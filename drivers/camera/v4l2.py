"""One still from a V4L2 device (``/dev/videoN``) through an ``ffmpeg`` subprocess.

ffmpeg opens the device, negotiates the format, drops the first frames while the
sensor settles its exposure, and writes one JPEG to stdout. The device is open
only while a still is taken, so a call can reuse the camera in between; the
subprocess is killed on timeout or cancellation, never left behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
from pathlib import Path

from drivers.camera.base import DEFAULT_TIMEOUT, MAX_JPEG_BYTES, Camera
from drivers.errors import DriverInitError, DriverOperationError

log = logging.getLogger(__name__)

STDERR_TAIL = 400  # characters of ffmpeg's complaint kept in an error message


def ffmpeg_command(
    ffmpeg: str,
    device: str,
    width: int,
    height: int,
    input_format: str | None,
    skip_frames: int,
    quality: int,
) -> list[str]:
    """The ffmpeg argv that writes one JPEG of ``device`` to stdout."""
    command = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "v4l2"]
    if input_format:
        command += ["-input_format", input_format]
    command += ["-video_size", f"{width}x{height}", "-i", device]
    if skip_frames:
        command += ["-vf", f"select=gte(n\\,{skip_frames})"]
    return command + ["-frames:v", "1", "-q:v", str(quality), "-f", "mjpeg", "pipe:1"]


def check_device(device: str) -> None:
    """DriverInitError unless ``device`` is a character device we may read."""
    try:
        mode = os.stat(device).st_mode
    except OSError as exc:
        raise DriverInitError(f"camera device {device} is missing: {exc.strerror}") from exc
    if not stat.S_ISCHR(mode):
        raise DriverInitError(f"camera device {device} is not a character device")
    if not os.access(device, os.R_OK | os.W_OK):
        raise DriverInitError(f"camera device {device} is not readable and writable by us")


class V4l2Camera(Camera):
    """A UVC/CSI camera on ``device``; each capture runs ffmpeg once."""

    def __init__(
        self,
        device: str = "/dev/video0",
        *,
        width: int = 1280,
        height: int = 720,
        input_format: str | None = "mjpeg",
        skip_frames: int = 5,
        quality: int = 4,
        ffmpeg: str = "ffmpeg",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(name=f"v4l2:{device}", timeout=timeout)
        if width <= 0 or height <= 0 or skip_frames < 0 or not 2 <= quality <= 31:
            raise ValueError(f"bad picture options {width}x{height} skip={skip_frames} q={quality}")
        binary = shutil.which(ffmpeg)
        if binary is None:
            raise DriverInitError(f"{ffmpeg} not found on PATH (Debian package 'ffmpeg')")
        check_device(device)
        self.device = device
        self.command = ffmpeg_command(
            binary, device, width, height, input_format, skip_frames, quality
        )

    async def _grab(self) -> bytes:
        if not Path(self.device).exists():
            raise DriverOperationError(f"camera device {self.device} vanished")
        process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await process.communicate()
        finally:
            await _reap(process)
        if process.returncode != 0 or not out:
            tail = err.decode(errors="replace").strip()[-STDERR_TAIL:]
            raise DriverOperationError(
                f"ffmpeg on {self.device} failed (exit {process.returncode}): {tail or 'no output'}"
            )
        if len(out) > MAX_JPEG_BYTES:
            raise DriverOperationError(f"ffmpeg on {self.device} gave {len(out)} bytes for one still")
        return out


async def _reap(process: asyncio.subprocess.Process) -> None:
    """Kill ``process`` if it still runs (timeout, cancellation) and wait for it."""
    if process.returncode is None:
        log.debug("killing ffmpeg pid %d", process.pid)
        try:
            process.kill()
        except ProcessLookupError:
            pass
    await process.wait()
