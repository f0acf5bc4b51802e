"""``photo`` and ``logs`` run by an operator over XEP-0050 on a real Prosody, uploaded with XEP-0363.

Every URL a command returns is downloaded back over TLS verified against the
test CA and its bytes are checked: the demo camera's JPEG, a .tar.gz holding a
line the test logged. The car records the slot requests it sends, so a failing
command can be shown to have uploaded nothing.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import secrets
import ssl
import tarfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import slixmpp

from agent.commands.audit import AuditLog
from agent.commands.media import camera_factory, logs_command, photo_command
from agent.commands.registry import AgentFacade, Command, RateLimiter, Registry
from agent.logbook import Logbook
from agent.profile.model import CameraConfig
from agent.vehicle.state import VehicleState
from agent.xmpp.plugins.base import enable
from agent.xmpp.plugins.commands import CommandsPlugin
from agent.xmpp.plugins.upload import UploadPlugin
from drivers.camera import Camera, create_camera
from devserver.clients import WAIT, close_client, log_in, verified_client
from devserver.prosody import AccountFactory, ServerInfo

DEMO_CAMERA = Path(__file__).resolve().parent.parent / "profiles" / "demo" / "camera"
DEMO_STILLS = {p.read_bytes() for p in DEMO_CAMERA.glob("*.jpg")}
CommandsFor = Callable[[UploadPlugin], list[Command]]


@dataclass
class Rig:
    """A car offering some commands, and an operator allowed to run them."""

    car: slixmpp.ClientXMPP
    operator: slixmpp.ClientXMPP
    audit: AuditLog
    slot_requests: list[dict[str, str]] = field(default_factory=list)

    def record(self, stanza: Any) -> Any:
        """Outgoing filter on the car: note every XEP-0363 slot request."""
        request = stanza.xml.find("{urn:xmpp:http:upload:0}request")
        if request is not None:
            self.slot_requests.append(dict(request.attrib))
        return stanza

    async def run(self, node: str) -> tuple[str, str, dict[str, str]]:
        """Run ``node`` as the operator: (note type, note text, result fields by label)."""
        async with asyncio.timeout(WAIT):
            iq = await self.operator.plugin["xep_0050"].send_command(str(self.car.boundjid.full), node)
        assert iq["command"]["status"] == "completed"
        kind, text = iq["command"]["notes"][0]
        shown = {f["label"]: str(f["value"]) for f in iq["command"]["form"].get_fields().values()}
        return kind, text, shown

    async def results(self) -> list[tuple[str, str]]:
        return [(e.command, e.result) for e in await self.audit.tail(20)]


@asynccontextmanager
async def rig_on(server: ServerInfo, account: AccountFactory, tmp_path: Path,
                 commands: CommandsFor) -> AsyncIterator[Rig]:
    """Car and operator logged in to ``server``; the car serves ``commands(its uploader)``."""
    (car_jid, car_pw), (op_jid, op_pw) = account("car"), account("operator")
    car = verified_client(car_jid, car_pw, server, resource="car")
    operator = verified_client(op_jid, op_pw, server, plugins=["xep_0030", "xep_0004", "xep_0050"])
    audit = AuditLog(tmp_path / "audit.db")
    rig = Rig(car, operator, audit)
    car.add_filter("out", rig.record)
    uploader = enable(car, UploadPlugin, ca_file=server.ca_file)
    service: CommandsPlugin | None = None
    try:
        for client in (car, operator):
            await log_in(client, server)
        service = enable(car, CommandsPlugin, registry=Registry(commands(uploader)), operators=[op_jid], audit=audit,
                         agent=AgentFacade(VehicleState(), audit=audit),
                         limiter=RateLimiter(per_minute=60, burst=30))
        yield rig
    finally:
        if service is not None:
            await service.stop()
        for client in (car, operator):
            await close_client(client)
        audit.close()


@pytest.fixture
def logbook(tmp_path: Path) -> Iterator[Logbook]:
    book = Logbook.in_dir(tmp_path)
    book.install()
    yield book
    book.uninstall()


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger that passes INFO whatever the root's level (pytest leaves it at WARNING)."""
    test_logger = logging.getLogger("tests.media")
    test_logger.setLevel(logging.INFO)
    yield test_logger
    test_logger.setLevel(logging.NOTSET)


def demo_camera() -> Camera:
    return create_camera("file", path=DEMO_CAMERA)


async def download(url: str, ca_file: Path) -> tuple[bytes, str]:
    """GET ``url`` trusting only ``ca_file``; the body and its Content-Type."""
    context = ssl.create_default_context(cafile=str(ca_file))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.get(url) as response:
            assert response.status == 200, f"GET {url} -> {response.status}"
            return await response.read(), response.headers.get("Content-Type", "")


# -- photo -------------------------------------------------------------------------------------


async def test_photo_returns_a_url_serving_the_camera_still(upload_server: ServerInfo,
                                                           upload_account: AccountFactory,
                                                           tmp_path: Path) -> None:
    factory = camera_factory(CameraConfig("file", path=DEMO_CAMERA))
    async with rig_on(upload_server, upload_account, tmp_path,
                      lambda up: [photo_command(factory, up)]) as rig:
        kind, url, shown = await rig.run("photo")
        assert kind == "info" and shown["URL"] == url
        assert re.fullmatch(r"/.+/photo-\d{8}T\d{6}Z\.jpg", urlsplit(url).path)
        body, content_type = await download(url, upload_server.ca_file)
        assert body in DEMO_STILLS and content_type == "image/jpeg"
        assert shown["Size"] == f"{len(body)} bytes, 640×360"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", shown["Taken at"])
        assert [r["content-type"] for r in rig.slot_requests] == ["image/jpeg"]
        assert await rig.results() == [("photo", "ok")]


async def test_photo_without_a_camera_fails_clearly(upload_server: ServerInfo, upload_account: AccountFactory,
                                                    tmp_path: Path) -> None:
    async with rig_on(upload_server, upload_account, tmp_path, lambda up: [photo_command(None, up)]) as rig:
        kind, text, _ = await rig.run("photo")
        assert kind == "error" and text == "No camera in this car's profile: no photo was taken."
        assert rig.slot_requests == []
        assert await rig.results() == [("photo", "failed")]


@pytest.mark.parametrize("backend", ["file", "v4l2"])
async def test_a_camera_failure_says_the_camera_failed(backend: str, upload_server: ServerInfo,
                                                       upload_account: AccountFactory, tmp_path: Path) -> None:
    """A file whose picture is not a JPEG, a V4L2 device that is not there: the camera step is
    named, nothing is uploaded."""
    (tmp_path / "broken.jpg").write_bytes(b"not a picture")
    config = (CameraConfig("file", path=tmp_path / "broken.jpg") if backend == "file"
              else CameraConfig("v4l2", device=str(tmp_path / "video9")))
    broken = camera_factory(config)
    async with rig_on(upload_server, upload_account, tmp_path, lambda up: [photo_command(broken, up)]) as rig:
        kind, text, _ = await rig.run("photo")
        assert kind == "error" and text.startswith("The camera failed:")
        assert ("bad JPEG" in text) if backend == "file" else ("video9" in text or "ffmpeg" in text)
        assert text.endswith("No photo was taken.")
        assert rig.slot_requests == []
        assert await rig.results() == [("photo", "failed")]


async def test_photo_without_an_upload_service_fails_before_the_camera(prosody_server: ServerInfo,
                                                                       xmpp_account: AccountFactory,
                                                                       tmp_path: Path) -> None:
    """The session's Prosody has no upload component: the camera is not even opened."""
    opened: list[Camera] = []

    def counting_camera() -> Camera:
        camera = demo_camera()
        opened.append(camera)
        return camera

    async with rig_on(prosody_server, xmpp_account, tmp_path,
                      lambda up: [photo_command(counting_camera, up)]) as rig:
        kind, text, _ = await rig.run("photo")
        assert kind == "error" and text.startswith("The upload service is not available:")
        assert "offers no HTTP upload service" in text and text.endswith("no photo was taken.")
        assert opened == [] and rig.slot_requests == []
        assert await rig.results() == [("photo", "failed")]


async def test_each_photo_opens_and_closes_the_camera(upload_server: ServerInfo, upload_account: AccountFactory,
                                                      tmp_path: Path) -> None:
    opened: list[Camera] = []

    def counting_camera() -> Camera:
        camera = demo_camera()
        opened.append(camera)
        return camera

    async with rig_on(upload_server, upload_account, tmp_path,
                      lambda up: [photo_command(counting_camera, up)]) as rig:
        await rig.run("photo")
        await rig.run("photo")
    assert len(opened) == 2 and all(camera.is_closed for camera in opened)


# -- logs --------------------------------------------------------------------------------------


def bundle_files(body: bytes) -> dict[str, bytes]:
    """The files of a downloaded .tar.gz, by name below its top folder."""
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        out = {}
        for info in tar.getmembers():
            data = tar.extractfile(info)
            assert data is not None
            out[info.name.partition("/")[2]] = data.read()
        return out


async def test_logs_returns_a_url_serving_a_bundle_with_our_line(upload_server: ServerInfo,
                                                                 upload_account: AccountFactory,
                                                                 tmp_path: Path, logbook: Logbook,
                                                                 logger: logging.Logger) -> None:
    marker = f"marker {secrets.token_hex(8)}"
    logger.info("before the logs command: %s", marker)
    extra = lambda: {"status.txt": "Mode: parked\n"}  # noqa: E731
    async with rig_on(upload_server, upload_account, tmp_path,
                      lambda up: [logs_command(logbook, up, extra)]) as rig:
        kind, url, shown = await rig.run("logs")
        assert kind == "info" and shown["URL"] == url
        assert re.fullmatch(r"/.+/headunit-logs-\d{8}T\d{6}Z\.tar\.gz", urlsplit(url).path)
        body, content_type = await download(url, upload_server.ca_file)
        files = bundle_files(body)
        assert f"INFO    tests.media: before the logs command: {marker}".encode() in files["headunit.log"]
        assert files["status.txt"] == b"Mode: parked\n"
        assert content_type == "application/gzip"
        assert shown["Size"] == f"{len(body)} bytes" and shown["Log files"] == "headunit.log"
        assert "Left out" not in shown
        assert list(logbook.bundles.iterdir()) == []  # discarded once uploaded
        assert await rig.results() == [("logs", "ok")]


async def test_logs_still_go_when_the_extra_files_fail(upload_server: ServerInfo, upload_account: AccountFactory,
                                                       tmp_path: Path, logbook: Logbook) -> None:
    def broken_status() -> dict[str, str]:
        raise RuntimeError("vehicle state unavailable")

    async with rig_on(upload_server, upload_account, tmp_path,
                      lambda up: [logs_command(logbook, up, broken_status)]) as rig:
        kind, url, _ = await rig.run("logs")
        assert kind == "info"
        files = bundle_files((await download(url, upload_server.ca_file))[0])
        assert "status.txt" not in files
        assert b"the extra files could not be gathered" in files["headunit.log"]
        assert b"RuntimeError: vehicle state unavailable" in files["headunit.log"]


async def test_logs_without_an_upload_service_fails_clearly(prosody_server: ServerInfo,
                                                            xmpp_account: AccountFactory,
                                                            tmp_path: Path, logbook: Logbook) -> None:
    async with rig_on(prosody_server, xmpp_account, tmp_path, lambda up: [logs_command(logbook, up)]) as rig:
        kind, text, _ = await rig.run("logs")
        assert kind == "error" and text.startswith("The upload service is not available:")
        assert text.endswith("no logs were sent.")
        assert not logbook.bundles.exists() and rig.slot_requests == []
        assert await rig.results() == [("logs", "failed")]
