"""The ``headunit_upload`` plugin: XEP-0363 HTTP File Upload streaming the body from disk, TLS verified.

slixmpp's ``xep_0363.upload_file`` would do, but it trusts the system CAs only
and hands aiohttp an open file whose length may change under it. Here: discover
the service on our domain (disco items, then each item's disco#info for
``urn:xmpp:http:upload:0`` and its ``max-file-size``), refuse a too-large file
before asking for a slot, ask for a slot with a sanitised filename, PUT exactly
the announced number of bytes in chunks read off the event loop, and return the
GET URL. Only ``https`` slot URLs are used, and only the slot headers the XEP
allows are sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar
from urllib.parse import urlsplit

from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.jid import JID

from agent.errors import HeadunitError
from agent.xmpp.plugins.base import HeadunitPlugin

log = logging.getLogger(__name__)

NAMESPACE = "urn:xmpp:http:upload:0"
IQ_TIMEOUT = 20.0  # s for each disco or slot IQ
PUT_TIMEOUT = 300.0  # s for the whole PUT: a few MB over a slow cellular link
CHUNK_SIZE = 64 * 1024
MAX_FILENAME = 100  # characters of a sanitised filename
# XEP-0363 §5: the only headers a slot may ask for; anything else is dropped.
ALLOWED_HEADERS = frozenset({"authorization", "cookie", "expires"})
DEFAULT_CONTENT_TYPE = "application/octet-stream"
CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}$")
UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class UploadError(HeadunitError):
    """Base class of the upload's errors; the message says which step failed and why."""


class NoUploadService(UploadError):
    """Our server offers no XEP-0363 service (or did not answer disco)."""


class FileTooLarge(UploadError):
    """The file is larger than the service's ``max-file-size``."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"file of {size} bytes is larger than the upload limit of {limit} bytes")


class SlotRefused(UploadError):
    """The service answered the slot request with an error, or with an unusable slot."""

    def __init__(self, message: str, condition: str = "") -> None:
        self.condition = condition
        super().__init__(message)


class PutFailed(UploadError):
    """The HTTP PUT failed: ``status`` is the HTTP status (0 when there was no response)."""

    def __init__(self, message: str, status: int = 0) -> None:
        self.status = status
        super().__init__(message)


class UploadTimeout(UploadError, TimeoutError):
    """The service did not answer an IQ, or the PUT did not finish, in time."""


@dataclass(frozen=True, slots=True)
class UploadService:
    """Where to ask for slots, and the largest file it takes (None: no limit announced)."""

    jid: str
    max_file_size: int | None


@dataclass(frozen=True, slots=True)
class Slot:
    """Where to PUT, the headers to send with it, and the URL to share."""

    put_url: str
    get_url: str
    headers: dict[str, str]


def sanitize_filename(name: str) -> str:
    """A filename safe to announce and to put in a URL: last path part, ASCII, bounded.

    ``../../etc/passwd`` becomes ``passwd``; NULs, control and other characters
    become ``_``; leading dots go (no hidden or ``..`` names); long names keep
    their extension.
    """
    base = re.split(r"[/\\]", name)[-1]
    ascii_name = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    safe = UNSAFE_FILENAME_CHARS.sub("_", ascii_name).strip("._-")
    if not safe:
        return "file"
    if len(safe) <= MAX_FILENAME:
        return safe
    stem, dot, ext = safe.rpartition(".")
    if dot and 0 < len(ext) <= 10:
        return f"{stem[: MAX_FILENAME - len(ext) - 1]}.{ext}"
    return safe[:MAX_FILENAME]


def parse_max_file_size(info: Any) -> int | None:
    """``max-file-size`` from a disco#info result's XEP-0128 form, or None if absent/bad."""
    for form in info["disco_info"].iterables:
        try:
            values = form["values"]
        except (KeyError, TypeError):
            continue
        form_type = values.get("FORM_TYPE")
        if form_type != NAMESPACE and form_type != [NAMESPACE]:
            continue
        raw = values.get("max-file-size")
        raw = raw[0] if isinstance(raw, list) and raw else raw
        try:
            limit = int(str(raw))
        except ValueError:
            log.warning("upload service announces a bad max-file-size %r: ignored", raw)
            return None
        return limit if limit > 0 else None
    return None


def parse_slot(iq: Any) -> Slot:
    """The URLs and allowed headers of a slot result; SlotRefused if unusable."""
    slot = iq["http_upload_slot"]
    put_url, get_url = str(slot["put"]["url"]), str(slot["get"]["url"])
    for url in (put_url, get_url):
        if urlsplit(url).scheme != "https" or not urlsplit(url).hostname:
            raise SlotRefused(f"upload slot has a non-https URL {url[:200]!r}")
    headers: dict[str, str] = {}
    for header in slot["put"]["headers"]:
        name, value = str(header["name"]), str(header["value"] or "")
        if name.lower() not in ALLOWED_HEADERS or "\r" in value or "\n" in value:
            log.warning("upload slot header %r dropped (not allowed by XEP-0363)", name[:50])
            continue
        headers[name] = value
    return Slot(put_url, get_url, headers)


def tls_context(ca_file: str | Path | None) -> ssl.SSLContext:
    """Verify the upload host against ``ca_file`` (the profile's CA) or the system CAs."""
    if ca_file is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_file))


async def read_chunks(file: BinaryIO, size: int) -> AsyncIterator[bytes]:
    """Exactly ``size`` bytes of ``file`` in chunks read in a thread; UploadError if it shrank."""
    left = size
    while left > 0:
        chunk = await asyncio.to_thread(file.read, min(CHUNK_SIZE, left))
        if not chunk:
            raise UploadError(f"file ended {left} bytes short of the {size} announced")
        left -= len(chunk)
        yield chunk


class UploadPlugin(HeadunitPlugin):
    """Uploads files for our account with XEP-0363; reusable across reconnections.

    Configuration: ``ca_file`` (the CA the upload host is verified against; None: the system's),
    ``iq_timeout`` (s for each disco or slot IQ), ``put_timeout`` (s for the whole PUT).
    """

    name = "headunit_upload"
    description = "headunit: HTTP File Upload streamed from disk over verified TLS (XEP-0363)"
    # xep_0363 is registered at the first slot request: its module imports aiohttp (~10 MB),
    # which a car that never uploads and shows no dashboard should not carry.
    dependencies: ClassVar[set[str]] = {"xep_0030", "xep_0128"}
    default_config: ClassVar[dict[str, object]] = {"ca_file": None, "iq_timeout": IQ_TIMEOUT,
                                                    "put_timeout": PUT_TIMEOUT}

    def plugin_init(self) -> None:
        self._tls = tls_context(self.config["ca_file"])
        self._service: UploadService | None = None
        # A new session may be on another server (or the same one, reconfigured).
        self.on("session_start", self._forget_service)

    @property
    def _iq_timeout(self) -> float:
        return float(self.config["iq_timeout"])

    @property
    def _put_timeout(self) -> float:
        return float(self.config["put_timeout"])  # read at each PUT: setting ``put_timeout`` applies at once

    def _forget_service(self, _: object) -> None:
        self._service = None

    async def upload(
        self,
        source: Path | str | bytes,
        filename: str,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> str:
        """Upload ``source`` (a file path, or bytes already in memory); return its GET URL."""
        if not CONTENT_TYPE.match(content_type):
            log.warning("upload: bad content type %r, sending %s", content_type[:80], DEFAULT_CONTENT_TYPE)
            content_type = DEFAULT_CONTENT_TYPE
        name = sanitize_filename(filename)
        if isinstance(source, bytes):
            return await self._upload(source, len(source), name, content_type)
        path = Path(source)
        try:
            file = path.open("rb")
        except OSError as exc:
            raise UploadError(f"cannot read {path} for upload: {exc}") from exc
        with file:
            # The size of the file as opened: exactly that many bytes are announced and sent.
            size = os.fstat(file.fileno()).st_size
            return await self._upload(file, size, name, content_type)

    async def _upload(self, body: bytes | BinaryIO, size: int, name: str, content_type: str) -> str:
        """Check the size, get a slot, PUT the body; return the GET URL."""
        service = await self.discover()
        if service.max_file_size is not None and size > service.max_file_size:
            raise FileTooLarge(size, service.max_file_size)
        slot = await self.request_slot(service, name, size, content_type)
        data = body if isinstance(body, bytes) else read_chunks(body, size)
        await self.put(slot, data, size, content_type)
        log.info("uploaded %s (%d bytes) to %s", name, size, slot.get_url)
        return slot.get_url

    async def discover(self) -> UploadService:
        """The upload service of our domain (cached until the next session)."""
        if self._service is None:
            self._service = await self._find_service(self.xmpp.boundjid.domain)
            log.info("upload service %s, max file size %s", self._service.jid, self._service.max_file_size)
        return self._service

    async def _find_service(self, domain: str) -> UploadService:
        """Ask the domain, then each of its disco items, for the upload feature."""
        disco = self.xmpp.plugin["xep_0030"]
        try:
            items = await disco.get_items(jid=JID(domain), timeout=self._iq_timeout)
        except (IqError, IqTimeout) as exc:
            raise NoUploadService(f"{domain} did not list its services: {exc}") from exc
        candidates = [domain] + [str(item[0]) for item in items["disco_items"]["items"]]
        for jid in candidates:
            service = await self._probe(jid)
            if service is not None:
                return service
        raise NoUploadService(f"{domain} offers no HTTP upload service ({NAMESPACE})")

    async def _probe(self, jid: str) -> UploadService | None:
        """``jid`` as an upload service, or None if it is not one or does not answer."""
        try:
            info = await self.xmpp.plugin["xep_0030"].get_info(
                jid=JID(jid), timeout=self._iq_timeout, cached=False
            )
        except (IqError, IqTimeout) as exc:
            log.debug("upload discovery: %s did not answer disco#info: %s", jid, exc)
            return None
        if NAMESPACE not in info["disco_info"]["features"]:
            return None
        return UploadService(jid, parse_max_file_size(info))

    async def request_slot(
        self, service: UploadService, name: str, size: int, content_type: str
    ) -> Slot:
        """Ask ``service`` for a slot; SlotRefused or UploadTimeout when it will not give one."""
        self.xmpp.register_plugin("xep_0363")  # idempotent
        upload = self.xmpp.plugin["xep_0363"]
        try:
            iq = await upload.request_slot(
                JID(service.jid), name, size, content_type, timeout=self._iq_timeout
            )
        except IqTimeout as exc:
            raise UploadTimeout(f"{service.jid} did not answer the slot request") from exc
        except IqError as exc:
            error = exc.iq["error"]
            if error.xml.find(f"{{{NAMESPACE}}}file-too-large") is not None:
                raise FileTooLarge(size, service.max_file_size or 0) from exc
            condition, text = error["condition"], error["text"]
            raise SlotRefused(
                f"{service.jid} refused a slot for {name} ({size} bytes): {condition} {text}".strip(),
                condition,
            ) from exc
        return parse_slot(iq)

    async def put(
        self, slot: Slot, data: bytes | AsyncIterator[bytes], size: int, content_type: str
    ) -> None:
        """PUT ``size`` bytes to the slot over verified TLS; PutFailed or UploadTimeout."""
        import aiohttp  # here: ~10 MB of imports that an agent without the dashboard never needs otherwise

        headers = {**slot.headers, "Content-Length": str(size), "Content-Type": content_type}
        timeout = aiohttp.ClientTimeout(total=self._put_timeout, sock_connect=self._iq_timeout)
        connector = aiohttp.TCPConnector(ssl=self._tls)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                async with session.put(slot.put_url, data=data, headers=headers) as response:
                    if response.status not in (200, 201):
                        reason = (await response.text(errors="replace"))[:200].strip()
                        raise PutFailed(
                            f"PUT {slot.put_url} answered {response.status} {reason}".strip(),
                            response.status,
                        )
        except TimeoutError as exc:
            raise UploadTimeout(f"PUT {slot.put_url} did not finish in {self._put_timeout:g}s") from exc
        except aiohttp.ClientError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, UploadError) else exc
            raise PutFailed(f"PUT {slot.put_url} failed: {cause}") from exc
