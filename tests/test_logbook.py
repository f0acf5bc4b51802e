"""The agent's log files: written with the date, rotated, bundled whole, cut to fit, never with secrets.

Lines are numbered (``seq 000042``) so a bundle can be checked for what matters:
the lines it holds are consecutive (nothing lost or repeated, even while the
file rotates under it) and end with the newest one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.logbook import MANIFEST, MAX_LIVE_BUNDLES, Logbook, LogbookError

REPO = Path(__file__).resolve().parent.parent
SEQ = re.compile(rb"seq (\d{6})")
FILLER = "x" * 60


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger that passes INFO whatever the root's level (pytest leaves it at WARNING)."""
    test_logger = logging.getLogger("tests.logbook")
    test_logger.setLevel(logging.INFO)
    yield test_logger
    test_logger.setLevel(logging.NOTSET)


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Logbook]:
    logbook = Logbook.in_dir(tmp_path, max_bytes=4096, backups=2, redact=["hunter2-secret"])
    logbook.install()
    yield logbook
    logbook.uninstall()


def write_lines(logger: logging.Logger, first: int, count: int) -> None:
    for i in range(first, first + count):
        logger.info("seq %06d %s", i, FILLER)


def members(path: Path) -> list[tuple[str, bytes]]:
    """(name below the bundle's top folder, content) of each member, in archive order."""
    with tarfile.open(path, "r:gz") as tar:
        out = []
        for info in tar.getmembers():
            top, _, name = info.name.partition("/")
            assert top.startswith("headunit-logs-") and name and "/" not in name
            data = tar.extractfile(info)
            assert data is not None
            out.append((name, data.read()))
        return out


def logged_numbers(files: list[tuple[str, bytes]]) -> list[int]:
    """The sequence numbers in the log files of a bundle, in bundle order."""
    text = b"".join(data for name, data in files if name.startswith("headunit.log"))
    return [int(m) for m in SEQ.findall(text)]


def test_lines_carry_date_level_and_logger(book: Logbook, logger: logging.Logger) -> None:
    logger.warning("engine %s", "hot")
    line = book.path.read_text().splitlines()[-1]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d{4} WARNING tests\.logbook: engine hot", line)
    assert book.path.parent == book.folder and book.folder.name == "logs"


def test_install_and_uninstall_are_idempotent(tmp_path: Path, logger: logging.Logger) -> None:
    logbook = Logbook(tmp_path / "logs")
    logbook.install()
    logbook.install()
    try:
        logger.info("once")
    finally:
        logbook.uninstall()
        logbook.uninstall()
    logger.info("after uninstall")
    assert logbook.path.read_text().count("once") == 1
    assert "after uninstall" not in logbook.path.read_text()
    assert not logbook.is_installed


def test_a_folder_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(LogbookError, match="cannot keep the agent's logs"):
        Logbook(tmp_path / "file" / "logs").install()


async def test_rotation_keeps_backups_and_the_bundle_holds_every_line_oldest_first(
        book: Logbook, logger: logging.Logger) -> None:
    write_lines(logger, 0, 400)  # about 40 kB through 4 kB files: many rotations
    names = sorted(p.name for p in book.folder.iterdir() if p.is_file())
    assert names == ["headunit.log", "headunit.log.1", "headunit.log.2"]
    bundle = await book.bundle({"status.txt": "Mode: parked\n"})
    files = members(bundle.path)
    assert [n for n, _ in files] == [MANIFEST, "headunit.log.2", "headunit.log.1", "headunit.log", "status.txt"]
    numbers = logged_numbers(files)
    assert numbers == list(range(numbers[0], 400))  # consecutive, up to the newest
    assert 399 - numbers[0] + 1 < 400  # the oldest ones rotated away, as they should
    assert dict(files)["status.txt"] == b"Mode: parked\n"
    assert bundle.files == ("headunit.log.2", "headunit.log.1", "headunit.log")
    assert bundle.size == bundle.path.stat().st_size and bundle.cut == ""
    assert re.fullmatch(r"headunit-logs-\d{8}T\d{6}Z\.tar\.gz", bundle.name)


async def test_a_bundle_during_rotations_loses_and_repeats_nothing(tmp_path: Path, logger: logging.Logger) -> None:
    """A thread logs long lines (the file rotates every two) while bundles are built."""
    book = Logbook(tmp_path / "logs", max_bytes=1024, backups=3)
    book.install()
    stop = threading.Event()

    def chatter() -> None:
        i = 0
        while not stop.is_set():
            logger.info("seq %06d %s", i, FILLER * 8)
            i += 1

    thread = threading.Thread(target=chatter)
    thread.start()
    try:
        for _ in range(200):
            bundle = await book.bundle()
            files = members(bundle.path)
            numbers = logged_numbers(files)
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
            assert all(data.endswith(b"\n") for name, data in files if name.startswith("headunit.log"))
            book.discard(bundle)
    finally:
        stop.set()
        thread.join()
        book.uninstall()


async def test_a_bundle_over_the_limit_keeps_the_newest_whole_lines(book: Logbook, logger: logging.Logger) -> None:
    for i in range(200):  # random hex: gzip cannot shrink it much, so the cut must do the work
        logger.info("seq %06d %s", i, os.urandom(50).hex())
    whole = await book.bundle()
    limit = 5000
    bundle = await book.bundle(limit=limit)
    assert whole.size > limit >= bundle.size
    files = members(bundle.path)
    numbers = logged_numbers(files)
    assert numbers[-1] == 199 and numbers == list(range(numbers[0], 200))
    assert numbers[0] > logged_numbers(members(whole.path))[0]
    for name, data in files:
        if name.startswith("headunit.log"):
            assert SEQ.match(data[data.index(b" tests.logbook: ") + 16:])  # starts at a whole line
    assert "left out to fit the limit of 5000 bytes" in bundle.cut
    assert bundle.cut.encode() in dict(files)[MANIFEST]


async def test_a_limit_too_small_for_any_bundle_is_refused_cleanly(book: Logbook, logger: logging.Logger) -> None:
    write_lines(logger, 0, 50)
    with pytest.raises(LogbookError, match="does not fit the upload limit of 100 bytes"):
        await book.bundle({"status.txt": "Mode: parked"}, limit=100)
    assert list(book.bundles.iterdir()) == []


async def test_no_secret_and_no_other_file_goes_into_a_bundle(tmp_path: Path, book: Logbook,
                                                              logger: logging.Logger) -> None:
    """The password is redacted if it ever reaches a log line; files beside the logs stay out."""
    logger.warning("login with hunter2-secret failed")
    for folder in (tmp_path, book.folder):
        (folder / "car.password").write_text("hunter2-secret\n")
        (folder / "demo.toml").write_text('[account]\npassword = "hunter2-secret"\n')
    (book.folder / "headunit.log.bak").write_text("hunter2-secret")
    bundle = await book.bundle({"status.txt": "ok"})
    files = members(bundle.path)
    assert [n for n, _ in files] == [MANIFEST, "headunit.log", "status.txt"]
    assert b"login with [redacted] failed" in dict(files)["headunit.log"]
    assert all(b"hunter2" not in data for _, data in files)


async def test_extra_files_are_named_safely(book: Logbook) -> None:
    for bad in ("../profile.toml", "a/b.txt", "headunit.log.1", MANIFEST, ".hidden", ""):
        with pytest.raises(ValueError):
            await book.bundle({bad: "x"})
    assert not book.bundles.exists()  # refused before anything was written


async def test_bundles_left_behind_are_removed_and_live_ones_bounded(book: Logbook, logger: logging.Logger) -> None:
    write_lines(logger, 0, 5)
    book.bundles.mkdir(parents=True, exist_ok=True)
    crashed = book.bundles / ".bundle-x.partial"
    crashed.write_bytes(b"half")
    first = await book.bundle()
    assert not crashed.exists() and first.path.exists()
    second = await book.bundle()
    assert first.path.exists()  # still held by its caller: the next bundle leaves it
    book.discard(first)
    book.discard(first)
    assert not first.path.exists()
    held = [second] + [await book.bundle() for _ in range(MAX_LIVE_BUNDLES)]
    assert not held[0].path.exists()  # never discarded: removed beyond the bound
    assert sorted(book.bundles.iterdir()) == sorted(b.path for b in held[1:])


async def test_a_bundle_with_nothing_logged_yet(tmp_path: Path) -> None:
    logbook = Logbook(tmp_path / "logs")
    bundle = await logbook.bundle({"status.txt": "Mode: off"})
    files = dict(members(bundle.path))
    assert b"none (nothing logged yet)" in files[MANIFEST] and files["status.txt"] == b"Mode: off"
    assert bundle.files == ()


# -- a full disk: a real tmpfs, mounted in a private user and mount namespace ------------------

FULL_DISK_SCRIPT = r"""
import asyncio, json, logging, os, sys
from pathlib import Path
from agent.logbook import Logbook, LogbookError

disk = Path(sys.argv[1])
book = Logbook(disk / "logs", max_bytes=20_000, backups=2)
book.install()
logger = logging.getLogger("fill")
logger.setLevel(logging.INFO)
for i in range(300):
    logger.info("seq %06d %s", i, os.urandom(30).hex())
filler = disk / "filler"
fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
try:  # fill the disk to the last block
    while True:
        os.write(fd, b"\0" * 4096)
except OSError:
    os.close(fd)
result = {}
try:
    asyncio.run(book.bundle())
    result["full"] = "bundled"
except LogbookError as exc:
    result["full"] = str(exc)
result["left"] = sorted(p.name for p in book.bundles.iterdir())
for i in range(300):  # more than the free room left in the log file's last page
    logger.info("lost %d %s", i, "y" * 80)
filler.unlink()
logger.info("back")
bundle = asyncio.run(book.bundle())
result["after"] = bundle.size
book.uninstall()
print(json.dumps(result))
"""


def test_a_full_disk_is_a_clear_error_and_leaves_nothing_behind(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    unshare = shutil.which("unshare")
    mount = f'mount -t tmpfs -o size=256k tmpfs "$0" && exec "$1" -c "$2" "$0"'
    command = [unshare or "unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount,
               str(disk), sys.executable, FULL_DISK_SCRIPT]
    if unshare is None or subprocess.run([unshare, "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no unprivileged user and mount namespaces here: cannot mount a small tmpfs")
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "no space left on the car's disk" in result["full"] and "nothing was kept" in result["full"]
    assert result["left"] == []  # no half-written bundle
    assert result["after"] > 0  # once there is room again, bundles work
    complaints = [line for line in done.stderr.splitlines() if "cannot write" in line]
    assert len(complaints) == 1, done.stderr  # one line on stderr, not one per lost record
    assert "writing" in done.stderr and "again" in done.stderr
