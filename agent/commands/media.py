"""The ``photo`` and ``logs`` commands: a still or a log bundle, uploaded with XEP-0363, given as a URL.

Each step that can fail (finding the upload service, the camera, the bundle, the
upload) fails with a Result that names the step, so the operator knows whether to
call a mechanic or the server's admin. The upload service is found first: nothing
is photographed or bundled for an upload that cannot happen. Everything slow runs
off the event loop (ffmpeg and file reads in the camera driver, the bundle in a
thread, the upload streamed by aiohttp).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol
from datetime import UTC, datetime

from agent.commands.registry import Command, CommandContext, Result
from agent.errors import HeadunitError
from agent.logbook import LogBundle, Logbook, LogbookError
from agent.profile.model import CameraConfig
from drivers.camera import Camera, Still, create_camera
from drivers.errors import DriverError

log = logging.getLogger(__name__)


class UploadService(Protocol):
    @property
    def max_file_size(self) -> int | None:
        """The largest file the service takes (None: no limit announced)."""


class Uploader(Protocol):
    """Shares a file by HTTP upload (the XMPP side: :class:`agent.xmpp.plugins.upload.UploadPlugin`).

    Its failures are :class:`~agent.errors.HeadunitError` whose message names the step.
    """

    async def discover(self) -> UploadService:
        """Find the upload service (cached); raises if there is none."""

    async def upload(self, source: Path | str | bytes, filename: str, content_type: str = ...) -> str:
        """Upload ``source``; returns the URL to share."""

CameraFactory = Callable[[], Camera]
Extra = Callable[[], Mapping[str, str]]
JPEG = "image/jpeg"
GZIP = "application/gzip"


def camera_factory(config: CameraConfig | None) -> CameraFactory | None:
    """How to open the profile's camera for one photo; None when the profile has no camera."""
    if config is None:
        return None
    if config.backend == "file":
        return lambda: create_camera("file", path=config.path, timeout=config.timeout)
    return lambda: create_camera(config.backend, device=config.device, width=config.width,
                                 height=config.height, timeout=config.timeout)


def _no_extra() -> Mapping[str, str]:
    return {}


# -- photo -----------------------------------------------------------------------------------


def photo_command(camera_factory: CameraFactory | None, uploader: Uploader | None) -> Command:
    """``photo``: one still from the car's camera, uploaded as image/jpeg; the URL comes back."""

    async def photo(ctx: CommandContext) -> Result:
        return await take_photo(camera_factory, uploader)

    return Command("photo", "Take a photo", (), photo,
                   description="One still from the car's camera, uploaded; you get its URL.")


async def take_photo(camera_factory: CameraFactory | None, uploader: Uploader | None) -> Result:
    """Find the upload service, take one still, upload it; a failure names its step."""
    if camera_factory is None:
        return Result("No camera in this car's profile: no photo was taken.", ok=False)
    service = await _service(uploader, "no photo was taken")
    if isinstance(service, Result):
        return service
    assert uploader is not None
    try:
        still = await capture(camera_factory)
    except DriverError as exc:
        log.warning("photo: camera failed: %s", exc)
        return Result(f"The camera failed: {exc}. No photo was taken.", ok=False)
    name = f"photo-{_stamp(still.taken_at)}.jpg"
    try:
        url = await uploader.upload(still.jpeg, name, JPEG)
    except HeadunitError as exc:
        log.warning("photo: upload of %s failed: %s", name, exc)
        return Result(f"The photo was taken but its upload failed: {exc}", ok=False)
    return Result(url, (
        ("URL", url),
        ("Size", f"{len(still.jpeg)} bytes, {still.width}×{still.height}"),
        ("Taken at", still.taken_at.isoformat(timespec="seconds")),
    ))


async def capture(camera_factory: CameraFactory) -> Still:
    """Open the camera, take one still, close it whatever happens; DriverError on failure."""
    camera = camera_factory()
    try:
        return await camera.capture()
    finally:
        await camera.close()


# -- logs ------------------------------------------------------------------------------------


def logs_command(logbook: Logbook, uploader: Uploader | None, extra: Extra = _no_extra) -> Command:
    """``logs``: the agent's rotated log files (and ``extra()`` text files) as one .tar.gz URL."""

    async def logs(ctx: CommandContext) -> Result:
        return await send_logs(logbook, uploader, extra)

    return Command("logs", "Send the agent's logs", (), logs,
                   description="The agent's recent log files as a .tar.gz, uploaded; you get its URL.")


async def send_logs(logbook: Logbook, uploader: Uploader | None, extra: Extra = _no_extra) -> Result:
    """Find the upload service, bundle the logs to fit it, upload, discard the bundle."""
    service = await _service(uploader, "no logs were sent")
    if isinstance(service, Result):
        return service
    assert uploader is not None
    try:
        bundle = await logbook.bundle(_gather(extra), limit=service.max_file_size)
    except LogbookError as exc:
        log.warning("logs: bundle failed: %s", exc)
        return Result(f"Bundling the logs failed: {exc}. No logs were sent.", ok=False)
    try:
        url = await uploader.upload(bundle.path, bundle.name, GZIP)
    except HeadunitError as exc:
        log.warning("logs: upload of %s failed: %s", bundle.name, exc)
        return Result(f"The logs were bundled but their upload failed: {exc}", ok=False)
    finally:
        logbook.discard(bundle)
    return Result(url, _bundle_rows(url, bundle))


def _bundle_rows(url: str, bundle: LogBundle) -> tuple[tuple[str, str], ...]:
    rows = [("URL", url), ("Size", f"{bundle.size} bytes"),
            ("Log files", ", ".join(bundle.files) or "none yet")]
    if bundle.cut:
        rows.append(("Left out", bundle.cut))
    return tuple(rows)


def _gather(extra: Extra) -> Mapping[str, str]:
    """The caller's extra files; if gathering them fails, the logs still go (and say why)."""
    try:
        return extra()
    except Exception:
        log.exception("logs: the extra files could not be gathered; sending the logs without them")
        return {}


# -- shared ----------------------------------------------------------------------------------


async def _service(uploader: Uploader | None, nothing_done: str) -> UploadService | Result:
    """The upload service, or a failed Result that says the upload step is what failed."""
    if uploader is None:
        return Result(f"This car has no file upload: {nothing_done}.", ok=False)
    try:
        return await uploader.discover()
    except HeadunitError as exc:
        log.warning("upload service not found: %s", exc)
        return Result(f"The upload service is not available: {exc}; {nothing_done}.", ok=False)


def _stamp(moment: datetime) -> str:
    """20261121T101500Z: a UTC time fit for a file name."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
