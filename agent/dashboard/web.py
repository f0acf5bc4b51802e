"""A small HTTP/1.1 and WebSocket (RFC 6455) server on asyncio streams, for the dashboard's one page.

aiohttp's server would cost the agent about 9 MB of imports to serve a kiosk page on loopback.
This serves GET and HEAD with keep-alive, bounded request heads (414, 431), the files of one folder
(never following a symlink), and WebSocket text and binary messages (no extensions or subprotocols;
fragments reassembled, UTF-8 checked, a heartbeat). What is routed where, and who may upgrade, is
the caller's (:mod:`agent.dashboard.server`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import hashlib
import logging
import os
import re
import stat
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qsl, unquote_to_bytes

log = logging.getLogger(__name__)

MAX_HEAD = 8 * 1024  # bytes of the request line, and of the header lines together
MAX_HEADERS = 100
HEAD_TIMEOUT = 60.0  # s for a request head to arrive, idle keep-alive included
MAX_BODY = 64 * 1024  # a GET's body (which nothing reads) is skipped up to this size
MAX_FILE = 8 * 1024 * 1024  # bytes: a larger static file is not served
CLOSE_TIMEOUT = 2.0  # s for the page's answer to a close frame, or to finish sending after a failure
MAX_BUFFERED = 1024 * 1024  # bytes not taken by a page, beyond which pings and pongs are left out
WRITER_TIMEOUT = 1.0  # s for a closed connection's last bytes to leave
ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3

REASONS = {101: "Switching Protocols", 200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 413: "Content Too Large", 414: "URI Too Long", 426: "Upgrade Required",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
           505: "HTTP Version Not Supported"}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".json": "application/json", ".txt": "text/plain; charset=utf-8", ".png": "image/png",
                 ".svg": "image/svg+xml", ".ico": "image/x-icon", ".woff2": "font/woff2"}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass
class Response:
    """A whole answer: status, headers (the server adds Date, Content-Length, Connection), body."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
        return cls(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **(headers or {})})


class HttpError(Exception):
    """Raised by the server or a handler: answer ``status`` with a one-line text."""

    def __init__(self, status: int, text: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(text.strip())
        self.response = Response.text(status, text, headers)


@dataclass
class Request:
    """One request head. ``path`` is percent-decoded; header names are in lower case."""

    method: str
    target: str
    path: str
    query: Mapping[str, str]  # the first value of each name
    version: str
    headers: Mapping[str, str]
    remote: str  # the peer's address

    @property
    def host(self) -> str:
        return self.headers.get("host", "")

    @property
    def is_keep_alive(self) -> bool:
        tokens = _tokens(self.headers.get("connection", ""))
        return "keep-alive" in tokens if self.version == "HTTP/1.0" else "close" not in tokens

    @property
    def is_websocket_upgrade(self) -> bool:
        """Whether it asks for a WebSocket (RFC 6455 section 4.2.1)."""
        return (self.method == "GET" and "websocket" in _tokens(self.headers.get("upgrade", ""))
                and "upgrade" in _tokens(self.headers.get("connection", "")))


@dataclass(frozen=True)
class Upgrade:
    """A route's answer that makes the connection a WebSocket, given to ``serve`` until it ends."""

    serve: Callable[[WebSocket], Awaitable[None]]
    max_message: int  # bytes of a message, reassembled; a larger one is closed with 1009
    heartbeat: float  # s between pings (0: none)


Route = Callable[[Request], Awaitable["Response | Upgrade"]]


# -- the server -------------------------------------------------------------------------------


class WebServer:
    """Listens and answers each request with ``route``; ``headers`` go on every response, and
    ``Cache-Control: no-store`` on those that do not say otherwise."""

    def __init__(self, route: Route, *, headers: Mapping[str, str] | None = None) -> None:
        self.route = route
        self.headers = dict(headers or {})
        self._server: asyncio.Server | None = None
        self._port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle: set[asyncio.Task[None]] = set()  # connections between requests
        self.is_stopping = False

    @property
    def port(self) -> int:
        """The port listened on (the one picked, for port 0)."""
        return self._port

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (0: any free port); OSError if it cannot."""
        self.is_stopping = False
        self._server = await asyncio.start_server(self._accept, host, port, limit=MAX_HEAD)
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self, timeout: float) -> None:
        """Stop listening, end idle connections, give the others ``timeout`` s, then cancel them; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self.is_stopping = True
        server.close()
        for task in list(self._idle):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # our own task, owned here (asyncio's would log a cancelled one as an error)
        task = asyncio.create_task(_Connection(self, reader, writer).serve(), name="dashboard-http")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _waits(self, task: asyncio.Task[None], is_idle: bool) -> None:
        (self._idle.add if is_idle else self._idle.discard)(task)


class _Connection:
    """One client's socket: requests one after the other, until close or an upgrade."""

    def __init__(self, server: WebServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) else "?"
        self.websocket: WebSocket | None = None

    async def serve(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            while not self.server.is_stopping:
                self.server._waits(task, True)
                try:
                    request = await self._next_request()
                finally:
                    self.server._waits(task, False)
                if request is None:
                    return
                is_keep_alive = request.is_keep_alive and not self.server.is_stopping
                answer = await self._answer(request)
                if isinstance(answer, Upgrade):
                    await self._upgrade(request, answer)
                    return
                await self.write(answer, is_head=request.method == "HEAD", is_keep_alive=is_keep_alive)
                if not is_keep_alive:
                    return
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went, or stayed silent
        except Exception:
            log.exception("dashboard: the connection from %s failed", self.remote)
        finally:
            if self.websocket is not None:
                self.websocket._finish(graceful=False)
            await _close_writer(self.writer)

    async def _next_request(self) -> Request | None:
        """The next request (its body skipped); None when the client is done; errors answered here."""
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                return await _read_request(self.reader, self.remote)
        except HttpError as exc:
            await self.write(exc.response, is_keep_alive=False)
            await _linger(self.reader, self.writer)
            return None

    async def _answer(self, request: Request) -> Response | Upgrade:
        if request.method not in ("GET", "HEAD"):
            return Response.text(405, f"{request.method[:20]} is not served here\n", {"Allow": "GET, HEAD"})
        try:
            return await self.server.route(request)
        except HttpError as exc:
            return exc.response
        except Exception:
            log.exception("dashboard: %s %s failed", request.method, request.path[:80])
            return Response.text(500, "internal error (see the agent's log)\n")

    async def _upgrade(self, request: Request, upgrade: Upgrade) -> None:
        """The opening handshake (RFC 6455 section 4.2.2), then the route's WebSocket until it ends."""
        refusal = _handshake_refusal(request)
        if refusal is not None:
            await self.write(refusal, is_keep_alive=False)
            return
        key = request.headers["sec-websocket-key"]
        await self.write(Response(101, headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                                "Sec-WebSocket-Accept": websocket_accept(key)}))
        ws = self.websocket = WebSocket(self.reader, self.writer, remote=request.remote,
                                        heartbeat=upgrade.heartbeat, max_message=upgrade.max_message)
        try:
            await upgrade.serve(ws)
        except Exception:
            log.exception("dashboard: the WebSocket from %s failed", request.remote)
            await ws.close(CloseCode.INTERNAL_ERROR, "internal error")
            return
        await ws.close()  # when the route returns on an open one

    async def write(self, response: Response, *, is_head: bool = False, is_keep_alive: bool = True) -> None:
        headers = {"Date": formatdate(usegmt=True), **self.server.headers, "Cache-Control": "no-store",
                   **response.headers}
        if response.status not in (101, 204, 304):
            headers["Content-Length"] = str(len(response.body))
        headers.setdefault("Connection", "keep-alive" if is_keep_alive else "close")
        lines = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}",
                 *(f"{name}: {value}" for name, value in headers.items()), "", ""]
        self.writer.write("\r\n".join(lines).encode("latin-1") + (b"" if is_head else response.body))
        await self.writer.drain()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Stop sending and drop what the client still sends, a while: closing with unread bytes would
    reset the connection, and the client could lose the answer (RFC 9112 section 9.6)."""
    with contextlib.suppress(OSError, TimeoutError):
        if writer.can_write_eof() and not writer.transport.is_closing():
            writer.write_eof()
        async with asyncio.timeout(CLOSE_TIMEOUT):
            while await reader.read(64 * 1024):
                pass


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(WRITER_TIMEOUT):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        writer.transport.abort()


# -- reading a request --------------------------------------------------------------------------


async def _read_request(reader: asyncio.StreamReader, remote: str) -> Request | None:
    lines = await _read_head(reader)
    if lines is None:
        return None
    method, target, version = _request_line(lines[0])
    headers = _headers(lines[1:])
    if version == "HTTP/1.1" and "host" not in headers:
        raise HttpError(400, "no Host header\n")
    await _skip_body(reader, headers)
    if not target.startswith("/"):
        raise HttpError(400, "expected a path\n")
    raw_path, _, raw_query = target.partition("?")
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "the path is not UTF-8\n") from None
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        query.setdefault(name, value)
    return Request(method, target, path, query, version, headers, remote)


async def _read_head(reader: asyncio.StreamReader) -> list[bytes] | None:
    """The request line and header lines, without line ends; None at the end of the stream."""
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if not lines and not exc.partial.strip():
                return None
            raise
        except asyncio.LimitOverrunError:
            line = b""
            size = MAX_HEAD + 1
        size += len(line)
        if size > MAX_HEAD:
            if not lines:
                raise HttpError(414, f"request line over {MAX_HEAD} bytes\n")
            raise HttpError(431, f"headers over {MAX_HEAD} bytes\n")
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if not line:
            if lines:
                return lines
            continue  # RFC 9112 section 2.2: empty lines before a request are ignored
        lines.append(line)
        if len(lines) > MAX_HEADERS + 1:
            raise HttpError(431, f"more than {MAX_HEADERS} headers\n")


def _request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1] or not parts[1].isascii() \
            or _BAD_VALUE.search(parts[1]) or not re.fullmatch(rb"HTTP/\d\.\d", parts[2]):
        raise HttpError(400, "not an HTTP request line\n")
    method, target, version = (part.decode("ascii") for part in parts)
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(505, "HTTP/1.1 only\n")
    return method, target, version


def _headers(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):  # also a folded line, or space before the colon
            raise HttpError(400, "malformed header line\n")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise HttpError(400, "control character in a header\n")
        key, text = name.decode("ascii").lower(), value.decode("latin-1")
        if key in headers:
            if key in ("host", "content-length"):
                raise HttpError(400, f"repeated {key} header\n")
            text = f"{headers[key]}, {text}"
        headers[key] = text
    return headers


async def _skip_body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> None:
    """GET and HEAD have no use for a body: one of known, small length is read and dropped."""
    if "transfer-encoding" in headers:
        raise HttpError(501, "no request bodies here (Transfer-Encoding)\n")
    length = headers.get("content-length", "0")
    if not length.isdigit():
        raise HttpError(400, "bad Content-Length\n")
    if int(length) > MAX_BODY:
        raise HttpError(413, "no request bodies here\n")
    await reader.readexactly(int(length))


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


# -- static files ---------------------------------------------------------------------------------


def static_file(folder: Path, relative: str) -> Response | None:
    """A regular file inside ``folder`` (``a/b.js``), found without following any symlink; None if
    there is none (no ``..``, no directories, nothing outside)."""
    parts = relative.split("/")
    if any(part in ("", ".", "..") or "\\" in part or "\0" in part for part in parts):
        return None
    directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
            os.close(directory)
            directory = inner
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
    except OSError:  # missing, a symlink (ELOOP, ENOTDIR), not readable
        return None
    finally:
        os.close(directory)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE:
            return None
        body = _read_all(fd)
    finally:
        os.close(fd)
    content_type = CONTENT_TYPES.get(Path(parts[-1]).suffix.lower(), "application/octet-stream")
    return Response(200, body, {"Content-Type": content_type})


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 64 * 1024):
        chunks.append(chunk)
    return b"".join(chunks)


# -- WebSocket --------------------------------------------------------------------------------------


class MessageType(enum.IntEnum):
    """The kinds of message a page sends (RFC 6455 opcodes)."""

    TEXT = 0x1
    BINARY = 0x2


class CloseCode(enum.IntEnum):
    """RFC 6455 section 7.4.1 and IANA's registry."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never sent: a close frame without a code
    ABNORMAL = 1006  # never sent: the connection ended without a close frame
    INVALID_TEXT = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


_CONTINUATION, _CLOSE, _PING, _PONG = 0x0, 0x8, 0x9, 0xA


@dataclass(frozen=True)
class Message:
    """A whole message from the page: ``str`` for TEXT, ``bytes`` for BINARY."""

    type: MessageType
    data: str | bytes


class _Failure(Exception):
    """The page broke the protocol: close with ``code``."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def _handshake_refusal(request: Request) -> Response | None:
    """Why this cannot become a WebSocket (an answer to send instead), or None."""
    if not request.is_websocket_upgrade or request.version != "HTTP/1.1":
        return Response.text(400, "expected a WebSocket upgrade\n")
    if request.headers.get("sec-websocket-version") != "13":
        return Response.text(426, "WebSocket version 13 only\n", {"Sec-WebSocket-Version": "13"})
    try:
        is_key = len(base64.b64decode(request.headers.get("sec-websocket-key", ""), validate=True)) == 16
    except binascii.Error:
        is_key = False
    return None if is_key else Response.text(400, "Sec-WebSocket-Key: expected 16 bytes in base64\n")


def websocket_accept(key: str) -> str:
    """The Sec-WebSocket-Accept that answers a Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + ACCEPT_GUID).digest()).decode("ascii")


class WebSocket:
    """One page's WebSocket, server side: ``async for`` its messages, ``send_str``, ``close``.

    Pings are answered while messages are read; every ``heartbeat`` s a ping goes out, and a page
    whose answer is still missing one beat later, while nothing else is left to read, is dropped.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, remote: str,
                 heartbeat: float, max_message: int) -> None:
        self.remote = remote
        self.max_message = max_message
        self.close_code: int | None = None  # how it ended (or is ending): ours, or the page's
        self._reader, self._writer = reader, writer
        self._read_lock = asyncio.Lock()
        self._fragments: list[bytes] = []
        self._fragment_size = 0
        self._opcode: int | None = None  # of the message being reassembled
        self._is_close_sent = self._is_close_received = self._is_over = False
        self._is_waiting = False  # a reader waits for the page's bytes
        self._is_pong_due = False
        self._heartbeat = heartbeat
        self._beat: asyncio.TimerHandle | None = None
        if heartbeat > 0:
            self._beat = asyncio.get_running_loop().call_later(heartbeat, self._on_beat)

    @property
    def closed(self) -> bool:
        """True once closing began (either side) or the connection is gone."""
        return self._is_close_sent or self._is_close_received or self._is_over

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> Message:
        async with self._read_lock:
            while not self.closed:
                message = await self._receive()
                if message is not None and not self.closed:
                    return message
        raise StopAsyncIteration

    async def send_str(self, text: str) -> None:
        """Send one text message; ConnectionResetError once the connection is closing."""
        if self.closed:
            raise ConnectionResetError("the WebSocket is closing")
        self._send(MessageType.TEXT, text.encode("utf-8"))
        await self._writer.drain()

    async def close(self, code: int = CloseCode.NORMAL, message: str = "") -> None:
        """The closing handshake: send ``code``, wait (a bound) for the page's close; idempotent."""
        if self.closed:
            return
        self._send_close(code, message)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT), self._read_lock:
                while not self._is_close_received and not self._is_over:
                    await self._receive()  # what the page sent meanwhile is dropped
        except TimeoutError:
            log.debug("dashboard: WebSocket from %s: no answer to the close", self.remote)
        finally:
            self._finish(graceful=self._is_close_received)

    # -- reading ---------------------------------------------------------------------------------

    async def _receive(self) -> Message | None:
        """Read one frame; a message when it completes one, else None (a control frame, a fragment)."""
        try:
            return await self._frame()
        except _Failure as failure:
            await self._fail(failure.code, str(failure))
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close_code = self.close_code or CloseCode.ABNORMAL
            self._finish(graceful=False)
        return None

    async def _read(self, n: int) -> bytes:
        self._is_waiting = True
        try:
            return await self._reader.readexactly(n)
        finally:
            self._is_waiting = False

    async def _frame(self) -> Message | None:
        first, second = await self._read(2)
        is_fin, opcode, length = bool(first & 0x80), first & 0x0F, second & 0x7F
        if first & 0x70:
            raise _Failure(CloseCode.PROTOCOL_ERROR, "reserved bits set (no extension was agreed)")
        if not second & 0x80:
            raise _Failure(CloseCode.PROTOCOL_ERROR, "a page's frames must be masked")
        if opcode in (_CLOSE, _PING, _PONG):
            if not is_fin or length > 125:
                raise _Failure(CloseCode.PROTOCOL_ERROR, "a control frame is whole and at most 125 bytes")
        elif opcode not in (_CONTINUATION, MessageType.TEXT, MessageType.BINARY):
            raise _Failure(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        if length >= 126:
            length = int.from_bytes(await self._read(2 if length == 126 else 8), "big")
            if length >> 63:
                raise _Failure(CloseCode.PROTOCOL_ERROR, "frame length out of range")
        if opcode < _CLOSE and self._fragment_size + length > self.max_message:  # before reading it
            raise _Failure(CloseCode.MESSAGE_TOO_BIG, f"message over {self.max_message} bytes")
        mask = await self._read(4)
        payload = _unmask(await self._read(length), mask)
        self._is_pong_due = False  # whatever comes shows the page is there
        if opcode == _PING:
            self._send(_PING + 1, payload)  # the pong carries the ping's payload
        elif opcode == _CLOSE:
            self._on_close(payload)
        elif opcode != _PONG:
            return self._on_data(opcode, is_fin, payload)
        return None

    def _on_data(self, opcode: int, is_fin: bool, payload: bytes) -> Message | None:
        if opcode == _CONTINUATION and self._opcode is None:
            raise _Failure(CloseCode.PROTOCOL_ERROR, "a continuation frame without a message")
        if opcode != _CONTINUATION:
            if self._opcode is not None:
                raise _Failure(CloseCode.PROTOCOL_ERROR, "a new message inside a fragmented one")
            self._opcode = opcode
        self._fragments.append(payload)
        self._fragment_size += len(payload)
        if not is_fin:
            return None
        data, kind = b"".join(self._fragments), self._opcode
        self._fragments, self._fragment_size, self._opcode = [], 0, None
        if kind == MessageType.BINARY:
            return Message(MessageType.BINARY, data)
        try:
            return Message(MessageType.TEXT, data.decode("utf-8"))
        except UnicodeDecodeError:
            raise _Failure(CloseCode.INVALID_TEXT, "a text message that is not UTF-8") from None

    def _on_close(self, payload: bytes) -> None:
        code = int.from_bytes(payload[:2], "big") if payload else CloseCode.NO_STATUS
        if len(payload) == 1 or (payload and not _is_valid_close_code(code)):
            raise _Failure(CloseCode.PROTOCOL_ERROR, "a malformed close frame")
        try:
            payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise _Failure(CloseCode.INVALID_TEXT, "a close reason that is not UTF-8") from None
        self._is_close_received = True
        if not self._is_close_sent:
            self.close_code = code
            self._is_close_sent = True
            self._send(_CLOSE, payload[:2])  # echo the page's code (RFC 6455 section 5.5.1)
        self._finish(graceful=True)  # the server closes TCP first (section 7.1.1)

    async def _fail(self, code: CloseCode, reason: str) -> None:
        """Fail the connection (section 7.1.7): say why, stop sending, drop what still comes, close."""
        log.info("dashboard: WebSocket from %s closed (%d): %s", self.remote, code, reason)
        if not self._is_close_sent:
            self._send_close(code, reason)
        await _linger(self._reader, self._writer)  # so that our close is not lost to a reset
        self._finish(graceful=True)

    # -- writing ---------------------------------------------------------------------------------

    def _send_close(self, code: int, reason: str) -> None:
        self.close_code = code
        self._is_close_sent = True
        reason_bytes = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
        self._send(_CLOSE, code.to_bytes(2, "big") + reason_bytes)

    def _send(self, opcode: int, payload: bytes) -> bool:
        """Write one unmasked, whole frame (a server's, section 5.1); the caller drains. A ping or pong
        is left out while the page does not take what it is sent (a ping flood cannot fill memory)."""
        transport = self._writer.transport
        if transport.is_closing() or (opcode in (_PING, _PONG) and transport.get_write_buffer_size() > MAX_BUFFERED):
            return False
        n = len(payload)
        length = bytes([n]) if n < 126 else (bytes([126]) + n.to_bytes(2, "big") if n < 65536
                                              else bytes([127]) + n.to_bytes(8, "big"))
        self._writer.write(bytes([0x80 | opcode]) + length + payload)
        return True

    def _on_beat(self) -> None:
        self._beat = None
        if self.closed:
            return
        if self._is_pong_due and self._is_waiting:
            log.info("dashboard: WebSocket from %s did not answer a ping in %g s: dropping it",
                     self.remote, self._heartbeat)
            self.close_code = CloseCode.ABNORMAL
            self._finish(graceful=False)
            return
        if not self._is_pong_due:  # still due: the reader is busy elsewhere; judge at the next beat
            self._is_pong_due = self._send(_PING, b"")
        self._beat = asyncio.get_running_loop().call_later(self._heartbeat, self._on_beat)

    def _finish(self, *, graceful: bool) -> None:
        """The end: no more beats; the socket closed (after what is written, when ``graceful``)."""
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
        if self._is_over:
            return
        self._is_over = True
        if graceful:
            self._writer.close()
        else:
            self._writer.transport.abort()


def _unmask(data: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte key repeated (section 5.3), on whole integers: fast without C."""
    if not data:
        return data
    key = (mask * (len(data) // 4 + 1))[:len(data)]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(len(data), "little")


def _is_valid_close_code(code: int) -> bool:
    """A code a page may send (section 7.4): defined ones but 1004-1006 and 1015, or 3000-4999."""
    return 1000 <= code <= 1014 and code not in (1004, 1005, 1006) or 3000 <= code <= 4999
