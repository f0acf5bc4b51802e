"""The camera driver: the file backend (the fake), the V4L2 backend without a camera, the registry.

There is no /dev/video* here: the V4L2 tests check the clear errors for a missing
or wrong device, the ffmpeg command line, real ffmpeg refusing a device that is
not a camera, and (with a stand-in executable where ffmpeg would be) the
subprocess being killed on timeout and its output parsed.
"""

from __future__ import annotations

import os
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drivers.camera import BACKENDS, create_camera, jpeg_size
from drivers.camera.file import FileCamera
from drivers.camera.v4l2 import V4l2Camera, ffmpeg_command
from drivers.errors import DriverInitError, DriverOperationError, DriverTimeout, UnknownBackend

DEMO = Path(__file__).resolve().parent.parent / "profiles" / "demo" / "camera"
CABIN, ROAD = DEMO / "cabin-1.jpg", DEMO / "road-2.jpg"
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="Debian's ffmpeg is not installed")


def stand_in(tmp_path: Path, script: str) -> Path:
    """An executable shell script to put where ffmpeg would be."""
    path = tmp_path / "fake-ffmpeg"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_demo_stills_are_small_jpegs() -> None:
    for path in (CABIN, ROAD):
        assert path.stat().st_size < 100_000
        assert jpeg_size(path.read_bytes()) == (640, 360)


async def test_file_camera_serves_one_file() -> None:
    before = datetime.now(UTC)
    async with create_camera("file", path=str(CABIN)) as camera:
        first, second = await camera.capture(), await camera.capture()
    assert first.jpeg == second.jpeg == CABIN.read_bytes()
    assert (first.width, first.height) == (640, 360)
    assert before <= first.taken_at <= datetime.now(UTC) + timedelta(seconds=1)


async def test_file_camera_cycles_through_a_folder_in_name_order(tmp_path: Path) -> None:
    shutil.copy(ROAD, tmp_path / "b.JPEG")
    shutil.copy(CABIN, tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not a picture")
    camera = FileCamera(tmp_path)
    stills = [await camera.capture() for _ in range(3)]
    await camera.close()
    assert [s.jpeg for s in stills] == [CABIN.read_bytes(), ROAD.read_bytes(), CABIN.read_bytes()]


@pytest.mark.parametrize("where", ["missing.jpg", "empty-folder"])
def test_file_camera_without_pictures_fails_at_init(tmp_path: Path, where: str) -> None:
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(DriverInitError, match=str(tmp_path / where)):
        create_camera("file", path=tmp_path / where)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"GIF89a not a jpeg at all", "no JPEG start-of-image"),
        (CABIN.read_bytes()[:5000], "truncated"),
        (b"", "no JPEG start-of-image"),
    ],
)
async def test_corrupt_file_is_a_clear_operation_error(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    async with FileCamera(path) as camera:
        with pytest.raises(DriverOperationError, match=why):
            await camera.capture()


async def test_file_removed_after_start_is_an_operation_error(tmp_path: Path) -> None:
    path = tmp_path / "gone.jpg"
    shutil.copy(CABIN, path)
    async with FileCamera(path) as camera:
        assert (await camera.capture()).jpeg == CABIN.read_bytes()
        path.unlink()
        with pytest.raises(DriverOperationError, match="cannot be read"):
            await camera.capture()


async def test_closed_camera_refuses_and_close_is_idempotent() -> None:
    camera = FileCamera(CABIN)
    await camera.close()
    await camera.close()
    assert camera.is_closed
    with pytest.raises(DriverOperationError, match="closed"):
        await camera.capture()


def test_registry_names_the_known_backends() -> None:
    assert set(BACKENDS) == {"file", "v4l2"}
    with pytest.raises(UnknownBackend, match=r"'webcam'.*file, v4l2"):
        create_camera("webcam")
    with pytest.raises(DriverInitError, match="bad options"):
        create_camera("file", path=CABIN, brightness=3)


def test_ffmpeg_command_from_options() -> None:
    assert ffmpeg_command("/usr/bin/ffmpeg", "/dev/video2", 640, 480, "yuyv422", 3, 5) == [
        "/usr/bin/ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "v4l2",
        "-input_format", "yuyv422", "-video_size", "640x480", "-i", "/dev/video2",
        "-vf", "select=gte(n\\,3)", "-frames:v", "1", "-q:v", "5", "-f", "mjpeg", "pipe:1",
    ]  # fmt: skip
    minimal = ffmpeg_command("ffmpeg", "/dev/video0", 1280, 720, None, 0, 4)
    assert "-input_format" not in minimal and "-vf" not in minimal


@needs_ffmpeg
def test_v4l2_missing_device_fails_at_init(tmp_path: Path) -> None:
    with pytest.raises(DriverInitError, match=r"/dev/video57 is missing"):
        create_camera("v4l2", device="/dev/video57")
    regular = tmp_path / "video0"
    regular.write_bytes(b"")
    with pytest.raises(DriverInitError, match="not a character device"):
        create_camera("v4l2", device=str(regular))


def test_v4l2_without_ffmpeg_fails_at_init() -> None:
    with pytest.raises(DriverInitError, match="no-such-ffmpeg not found"):
        create_camera("v4l2", device="/dev/null", ffmpeg="no-such-ffmpeg")


@pytest.mark.parametrize("options", [{"width": 0}, {"quality": 1}, {"skip_frames": -1}])
def test_v4l2_bad_options(options: dict[str, int]) -> None:
    with pytest.raises(DriverInitError, match="bad picture options"):
        create_camera("v4l2", device="/dev/null", **options)


@needs_ffmpeg
async def test_v4l2_device_that_is_not_a_camera_reports_ffmpeg_error() -> None:
    """/dev/null is a character device but no V4L2 camera: real ffmpeg refuses, we say so."""
    async with create_camera("v4l2", device="/dev/null", timeout=20.0) as camera:
        with pytest.raises(DriverOperationError, match=r"ffmpeg on /dev/null failed \(exit [1-9]"):
            await camera.capture()


async def test_v4l2_timeout_kills_the_subprocess(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    fake = stand_in(tmp_path, f'echo $$ > "{pidfile}"\nexec sleep 60\n')
    async with V4l2Camera("/dev/null", ffmpeg=str(fake), timeout=0.5) as camera:
        with pytest.raises(DriverTimeout, match="no still within 0.5s"):
            await camera.capture()
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left sleeping


async def test_v4l2_reads_the_jpeg_ffmpeg_writes(tmp_path: Path) -> None:
    argv = tmp_path / "argv"
    fake = stand_in(tmp_path, f'echo "$@" > "{argv}"\ncat "{ROAD}"\n')
    async with V4l2Camera("/dev/null", ffmpeg=str(fake), width=320, height=240) as camera:
        still = await camera.capture()
    assert still.jpeg == ROAD.read_bytes()
    assert "-video_size 320x240 -i /dev/null" in argv.read_text()
