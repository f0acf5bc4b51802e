"""XEP-0363 uploads on a real Prosody with mod_http_file_share, over verified TLS.

The car is a slixmpp client with the upload plugin; every URL it returns is
downloaded back with aiohttp trusting only the test CA and compared byte for
byte. An outgoing-stanza filter records each slot request the client sends,
so a test can check what was asked for (and that nothing was, when refused).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import slixmpp

from agent.xmpp.plugins.base import enable
from agent.xmpp.plugins.upload.upload import (
    MAX_FILENAME,
    FileTooLarge,
    NoUploadService,
    PutFailed,
    Slot,
    SlotRefused,
    UploadPlugin,
    UploadTimeout,
    sanitize_filename,
)
from drivers.camera import create_camera
from devserver.clients import close_client, log_in, verified_client
from devserver.pki import make_pki
from devserver.prosody import UPLOAD_SIZE_LIMIT, AccountFactory, ServerInfo

DEMO_CAMERA = Path(__file__).resolve().parent.parent / "profiles" / "demo" / "camera"
BIG = 5 * 1024 * 1024


@dataclass
class Car:
    """A logged-in client, its uploader, and the slot requests it sent."""

    client: slixmpp.ClientXMPP
    uploader: UploadPlugin
    slot_requests: list[dict[str, str]] = field(default_factory=list)

    def record(self, stanza: Any) -> Any:
        """Outgoing filter: note every XEP-0363 slot request (filename, size, type)."""
        request = stanza.xml.find("{urn:xmpp:http:upload:0}request")
        if request is not None:
            self.slot_requests.append(dict(request.attrib))
        return stanza


async def connect_car(server: ServerInfo, jid: str, password: str, ca_file: Path | None) -> Car:
    client = verified_client(jid, password, server, resource="car")
    car = Car(client, enable(client, UploadPlugin, ca_file=ca_file))
    client.add_filter("out", car.record)
    await log_in(client, server, presence=False)
    return car


@pytest.fixture
async def car(upload_server: ServerInfo, upload_account: AccountFactory) -> AsyncIterator[Car]:
    jid, password = upload_account()
    car = await connect_car(upload_server, jid, password, upload_server.ca_file)
    yield car
    await close_client(car.client)


async def download(url: str, ca_file: Path) -> tuple[bytes, str]:
    """GET ``url`` trusting only ``ca_file``; the body and its Content-Type."""
    context = ssl.create_default_context(cafile=str(ca_file))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.get(url) as response:
            assert response.status == 200, f"GET {url} -> {response.status}"
            return await response.read(), response.headers.get("Content-Type", "")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def test_large_file_is_streamed_and_downloads_back(car: Car, tmp_path: Path,
                                                         upload_server: ServerInfo) -> None:
    """5 MB from disk: Python's allocations stay far below the file size, the bytes come back."""
    path = tmp_path / "big.bin"
    with path.open("wb") as file:
        for _ in range(BIG // (1 << 20)):
            file.write(os.urandom(1 << 20))
    await car.uploader.discover()  # warm up: disco's allocations are not the upload's

    tracemalloc.start()
    try:
        url = await car.uploader.upload(path, "big.bin", "application/octet-stream")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    # Streaming peaks near 1 MB whatever the size (TLS and socket buffers); reading the
    # file whole would peak above its 5 MB.
    assert peak < BIG * 2 // 5, f"upload allocated {peak} bytes at peak for a {BIG}-byte file"
    assert car.slot_requests == [
        {"filename": "big.bin", "size": str(BIG), "content-type": "application/octet-stream"}
    ]
    parts = urlsplit(url)
    assert (parts.scheme, parts.hostname, parts.port) == ("https", "localhost", upload_server.https_port)
    assert parts.path.endswith("/big.bin")
    body, _ = await download(url, upload_server.ca_file)
    assert hashlib.sha256(body).hexdigest() == sha256_of(path)


async def test_camera_still_uploads_from_memory(car: Car, upload_server: ServerInfo) -> None:
    """A still from the demo camera, as bytes, comes back identical and typed image/jpeg."""
    async with create_camera("file", path=DEMO_CAMERA) as camera:
        still = await camera.capture()
    url = await car.uploader.upload(still.jpeg, "photo.jpg", "image/jpeg")
    body, content_type = await download(url, upload_server.ca_file)
    assert body == still.jpeg
    assert content_type.startswith("image/jpeg")


async def test_too_large_file_is_refused_before_any_slot_request(car: Car, tmp_path: Path) -> None:
    """One byte over the announced max-file-size: FileTooLarge, and no slot IQ went out."""
    path = tmp_path / "huge.bin"
    with path.open("wb") as file:
        file.truncate(UPLOAD_SIZE_LIMIT + 1)  # sparse: nothing is written
    with pytest.raises(FileTooLarge) as refused:
        await car.uploader.upload(path, "huge.bin")
    assert (refused.value.size, refused.value.limit) == (UPLOAD_SIZE_LIMIT + 1, UPLOAD_SIZE_LIMIT)
    assert car.slot_requests == []


async def test_hostile_filename_is_sanitized(car: Car, upload_server: ServerInfo) -> None:
    """Traversal, a NUL and 300 characters: the slot asks for a short plain name; upload works."""
    hostile = "../../etc/passwd\x00" + "é" * 3 + "x" * 300 + ".txt"
    url = await car.uploader.upload(b"hello", hostile, "text/plain")
    [request] = car.slot_requests
    name = request["filename"]
    assert name == sanitize_filename(hostile)
    assert name.startswith("passwd_eee") and name.endswith(".txt") and len(name) == MAX_FILENAME
    assert urlsplit(url).path.endswith("/" + name)
    body, _ = await download(url, upload_server.ca_file)
    assert body == b"hello"


@pytest.mark.parametrize(
    ("hostile", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("..", "file"),
        ("", "file"),
        ("C:\\Users\\x\\report.pdf", "report.pdf"),
        ("a\x00b\nc;rm -rf.log", "a_b_c_rm_-rf.log"),
        (".hidden", "hidden"),
        ("photo 2024-05-01.jpg", "photo_2024-05-01.jpg"),
    ],
)
def test_sanitize_filename(hostile: str, safe: str) -> None:
    assert sanitize_filename(hostile) == safe


async def test_put_without_the_slot_headers_fails_with_its_status(car: Car) -> None:
    """A real slot, PUT without its Authorization header: the server's 401 is reported."""
    service = await car.uploader.discover()
    slot = await car.uploader.request_slot(service, "x.bin", 3, "application/octet-stream")
    assert "Authorization" in slot.headers
    unauthorised = Slot(slot.put_url, slot.get_url, {})
    with pytest.raises(PutFailed) as failed:
        await car.uploader.put(unauthorised, b"abc", 3, "application/octet-stream")
    assert failed.value.status == 401


async def test_slot_refusals_are_reported_with_their_condition(car: Car) -> None:
    """The server's own refusals: a name with '/' (bad-request), a size over its limit."""
    service = await car.uploader.discover()
    assert service.max_file_size == UPLOAD_SIZE_LIMIT
    with pytest.raises(SlotRefused, match="bad-request") as refused:
        await car.uploader.request_slot(service, "a/b.txt", 1, "text/plain")
    assert refused.value.condition == "bad-request"
    with pytest.raises(FileTooLarge):
        await car.uploader.request_slot(service, "big.bin", UPLOAD_SIZE_LIMIT + 1, "text/plain")
    assert [r["filename"] for r in car.slot_requests] == ["a/b.txt", "big.bin"]


async def test_put_to_a_silent_server_times_out(car: Car) -> None:
    """A PUT URL whose host accepts TCP and never answers: UploadTimeout, not a hang."""
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda _r, w: accepted.append(w), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    car.uploader.put_timeout = 0.5
    try:
        slot = Slot(f"https://localhost:{port}/put", f"https://localhost:{port}/get", {})
        with pytest.raises(UploadTimeout):
            await car.uploader.put(slot, b"abc", 3, "text/plain")
        assert len(accepted) == 1
    finally:
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_tls_is_verified_against_the_given_ca(upload_server: ServerInfo,
                                                    upload_account: AccountFactory,
                                                    tmp_path: Path) -> None:
    """An uploader trusting another CA gets a slot but refuses to PUT to our server."""
    other = make_pki(tmp_path / "other-pki").ca_cert
    jid, password = upload_account()
    car = await connect_car(upload_server, jid, password, other)
    try:
        with pytest.raises(PutFailed, match="certificate"):
            await car.uploader.upload(b"secret", "secret.txt", "text/plain")
        assert len(car.slot_requests) == 1
    finally:
        await close_client(car.client)


async def test_server_without_upload_service(prosody_server: ServerInfo,
                                             xmpp_account: AccountFactory) -> None:
    """The session's Prosody has no http_file_share: a clear NoUploadService, no slot request."""
    jid, password = xmpp_account("car")
    car = await connect_car(prosody_server, jid, password, prosody_server.ca_file)
    try:
        with pytest.raises(NoUploadService, match="no HTTP upload service"):
            await car.uploader.upload(b"x", "x.txt", "text/plain")
        assert car.slot_requests == []
    finally:
        await close_client(car.client)
