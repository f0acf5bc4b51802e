"""The dashboard's own HTTP/1.1 and WebSocket server (agent.dashboard.web), through real sockets.

A WebServer on a free loopback port with a small route of its own (an echoing WebSocket, the
files of a temporary folder); the other side is written by hand on asyncio.open_connection, so
that each test can send exactly the bytes it means to, broken ones included.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.dashboard.web import (CloseCode, MessageType, Request, Response, Upgrade, WebServer, WebSocket,
                                 static_file)

WAIT = 10.0  # only there so that a broken server cannot hang a test
LIMIT = 1024  # bytes of a message for the test server
HEADERS = {"X-Frame-Options": "DENY"}
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


async def echo(ws: WebSocket) -> None:
    """Sends every text message back; "close" makes the server close with 1001."""
    async for message in ws:
        if message.type is MessageType.TEXT and message.data == "close":
            await ws.close(CloseCode.GOING_AWAY, "bye")
        elif isinstance(message.data, str):
            await ws.send_str(message.data)
        else:
            await ws.send_str(f"binary {len(message.data)}")


def routes(folder: Path, heartbeat: float) -> WebServer:
    async def route(request: Request) -> Response | Upgrade:
        if request.path == "/ws":
            return Upgrade(echo, max_message=LIMIT, heartbeat=heartbeat)
        if request.path.startswith("/static/"):
            found = static_file(folder, request.path.removeprefix("/static/"))
            if found is not None:
                return found
        return Response.text(404, "not found\n")
    return WebServer(route, headers=HEADERS)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """static/ with two files, a subfolder, and symlinks; a secret next to it."""
    static = tmp_path / "static"
    (static / "sub").mkdir(parents=True)
    (static / "app.js").write_text("export const answer = 42;\n")
    (static / "sub" / "look.css").write_text("body { color: red }\n")
    (tmp_path / "secret.txt").write_text("TOP-SECRET\n")
    (static / "link.txt").symlink_to(tmp_path / "secret.txt")
    (static / "inner.js").symlink_to(static / "app.js")  # inside, but a symlink all the same
    (static / "out").symlink_to(tmp_path, target_is_directory=True)
    return static


@pytest.fixture
async def port(folder: Path) -> AsyncIterator[int]:
    server = routes(folder, heartbeat=0)
    await server.start("127.0.0.1", 0)
    try:
        yield server.port
    finally:
        await server.stop(2.0)


# -- a hand-written client -------------------------------------------------------------------------


class Client:
    """One TCP connection to the server, written and read byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, head: str) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(head.encode())
        return await self.response()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (names in lower case), body (by Content-Length)."""
        async with asyncio.timeout(WAIT):
            head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status_line, *lines = head.split("\r\n")[:-2]
            headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split(" ")[1]), headers, body

    async def upgrade(self, port: int, key: str | None = None) -> tuple[int, dict[str, str], bytes]:
        key = key or base64.b64encode(secrets.token_bytes(16)).decode()
        return await self.request(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                                  "Sec-WebSocket-Version: 13\r\n\r\n")

    def send(self, opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True) -> None:
        """One frame as a browser writes it (masked), or not."""
        n = len(payload)
        length = bytes([n]) if n < 126 else (bytes([126]) + n.to_bytes(2, "big") if n < 65536
                                              else bytes([127]) + n.to_bytes(8, "big"))
        head = bytes([(0x80 if fin else 0) | opcode]) + bytes([length[0] | (0x80 if mask else 0)]) + length[1:]
        if mask:
            key = secrets.token_bytes(4)
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            head += key
        self.writer.write(head + payload)

    async def frame(self) -> tuple[int, bytes]:
        """The server's next frame: opcode and payload (a server's frames are whole and unmasked)."""
        async with asyncio.timeout(WAIT):
            first, second = await self.reader.readexactly(2)
            assert first & 0x80 and not first & 0x70 and not second & 0x80, (first, second)
            n = second & 0x7F
            if n >= 126:
                n = int.from_bytes(await self.reader.readexactly(2 if n == 126 else 8), "big")
            return first & 0x0F, await self.reader.readexactly(n)

    async def close_frame(self) -> tuple[int, str]:
        opcode, payload = await self.frame()
        assert opcode == CLOSE, (opcode, payload)
        return int.from_bytes(payload[:2], "big"), payload[2:].decode()

    async def is_closed(self) -> bool:
        """Whether the server ends the connection (what is still sent, dropped)."""
        try:
            async with asyncio.timeout(WAIT):
                while await self.reader.read(65536):
                    pass
        except ConnectionResetError:
            pass  # dropped rather than closed
        return True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def ws(port: int) -> AsyncIterator[Client]:
    """A client past the opening handshake."""
    client = await Client.open(port)
    status, _, _ = await client.upgrade(port)
    assert status == 101
    yield client
    client.close()


# -- the WebSocket ---------------------------------------------------------------------------------


async def test_the_handshake_answers_the_key_and_refuses_what_is_no_websocket(port: int) -> None:
    """Tried: RFC 6455's sample key; a request without a key, one with version 8, one without Upgrade.
    Kept: 101 with the RFC's Sec-WebSocket-Accept; 400, 426 (naming version 13), 400, never upgraded."""
    client = await Client.open(port)
    status, headers, _ = await client.upgrade(port, "dGhlIHNhbXBsZSBub25jZQ==")
    assert status == 101 and headers["upgrade"] == "websocket" and headers["connection"] == "Upgrade"
    assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert headers["x-frame-options"] == "DENY"
    client.close()

    base = f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    for head, expected in ((base + "Sec-WebSocket-Version: 13\r\n\r\n", 400),
                           (base + key + "Sec-WebSocket-Version: 8\r\n\r\n", 426),
                           (f"GET /ws HTTP/1.1\r\nHost: x\r\n{key}Sec-WebSocket-Version: 13\r\n\r\n", 400)):
        client = await Client.open(port)
        status, headers, body = await client.request(head)
        assert status == expected and body.count(b"\n") == 1, (head, status, body)
        assert "sec-websocket-accept" not in headers
        if status == 426:
            assert headers["sec-websocket-version"] == "13"
        client.close()


async def test_a_fragmented_text_message_is_reassembled(ws: Client) -> None:
    """Tried: "Hello wörld" in three fragments, the "ö" split between two of them, a ping between the
    fragments; then a binary message in two. Kept: the pong first, then the one whole message echoed;
    the binary one seen whole (its length)."""
    text = "Hello wörld".encode()
    split = text.index(b"\xc3") + 1  # inside the two bytes of "ö"
    ws.send(TEXT, text[:5], fin=False)
    ws.send(PING, b"mid")
    ws.send(CONTINUATION, text[5:split], fin=False)
    ws.send(CONTINUATION, text[split:])
    assert await ws.frame() == (PONG, b"mid")
    assert await ws.frame() == (TEXT, "Hello wörld".encode())
    ws.send(BINARY, b"\x00" * 10, fin=False)
    ws.send(CONTINUATION, b"\x01" * 5)
    assert await ws.frame() == (TEXT, b"binary 15")


async def test_a_ping_is_answered_with_a_pong_carrying_its_payload(ws: Client) -> None:
    """Tried: two pings with payloads, an unanswered pong, then a text. Kept: two pongs with the same
    payloads, in order; the text still echoed (the pong changed nothing)."""
    ws.send(PING, b"are you there?")
    ws.send(PING, b"")
    ws.send(PONG, b"unasked")
    ws.send(TEXT, b"still here")
    assert [await ws.frame() for _ in range(3)] == [(PONG, b"are you there?"), (PONG, b""), (TEXT, b"still here")]


async def test_an_unmasked_frame_is_closed_with_1002(ws: Client) -> None:
    """Tried: a text frame without the mask a browser must set. Kept: close 1002 naming the mask,
    then the connection ends; nothing echoed."""
    ws.send(TEXT, b"not masked", mask=False)
    code, reason = await ws.close_frame()
    assert code == CloseCode.PROTOCOL_ERROR and "masked" in reason
    assert await ws.is_closed()


async def test_a_message_over_the_limit_is_closed_with_1009_without_being_read(port: int) -> None:
    """Tried: a frame header announcing LIMIT + 1 bytes, and nothing after it; then, on a new
    connection, fragments that only together pass the limit. Kept: close 1009 at once (the payload
    was never awaited), each time; the connection ends."""
    client = await Client.open(port)
    assert (await client.upgrade(port))[0] == 101
    n = LIMIT + 1
    client.writer.write(bytes([0x80 | TEXT, 0x80 | 126]) + n.to_bytes(2, "big"))  # no key, no payload
    code, reason = await client.close_frame()
    assert code == CloseCode.MESSAGE_TOO_BIG and str(LIMIT) in reason
    assert await client.is_closed()
    client.close()

    client = await Client.open(port)
    assert (await client.upgrade(port))[0] == 101
    client.send(TEXT, b"x" * (LIMIT // 2), fin=False)
    client.send(CONTINUATION, b"x" * (LIMIT // 2 + 1))
    assert (await client.close_frame())[0] == CloseCode.MESSAGE_TOO_BIG
    assert await client.is_closed()
    client.close()


@pytest.mark.parametrize("payload", [b"caf\xc3", b"\xff\xfe", b"\xed\xa0\x80"])  # cut, never UTF-8, a surrogate
async def test_a_text_message_that_is_not_utf8_is_closed_with_1007(ws: Client, payload: bytes) -> None:
    """Tried: a text frame whose bytes are not UTF-8. Kept: close 1007, the connection ends."""
    ws.send(TEXT, payload)
    assert (await ws.close_frame())[0] == CloseCode.INVALID_TEXT
    assert await ws.is_closed()


async def test_other_protocol_errors_are_closed_with_1002(port: int) -> None:
    """Tried: a continuation with no message, reserved bits, an unknown opcode, a fragmented ping, a
    ping over 125 bytes, a close frame with a reserved code. Kept: 1002 for each."""
    broken = [bytes([0x80 | CONTINUATION, 0x80, 0, 0, 0, 0]), bytes([0x80 | 0x40 | TEXT, 0x80, 0, 0, 0, 0]),
              bytes([0x80 | 0x3, 0x80, 0, 0, 0, 0]), bytes([PING, 0x80, 0, 0, 0, 0]),
              bytes([0x80 | PING, 0x80 | 126]) + (126).to_bytes(2, "big") + bytes(4 + 126),
              bytes([0x80 | CLOSE, 0x82, 0, 0, 0, 0]) + (1005).to_bytes(2, "big")]
    for frame in broken:
        client = await Client.open(port)
        assert (await client.upgrade(port))[0] == 101
        client.writer.write(frame)
        assert (await client.close_frame())[0] == CloseCode.PROTOCOL_ERROR, frame
        client.close()


async def test_the_close_handshake_both_ways(port: int) -> None:
    """Tried: the page closes with 1000 "done"; on another connection the server closes (1001 "bye").
    Kept: the server echoes 1000 and ends the connection; the page gets 1001 with the reason, answers,
    and the connection ends."""
    client = await Client.open(port)
    assert (await client.upgrade(port))[0] == 101
    client.send(CLOSE, (1000).to_bytes(2, "big") + b"done")
    assert (await client.close_frame())[0] == CloseCode.NORMAL
    assert await client.is_closed()
    client.close()

    client = await Client.open(port)
    assert (await client.upgrade(port))[0] == 101
    client.send(TEXT, b"close")
    assert await client.close_frame() == (CloseCode.GOING_AWAY, "bye")
    client.send(CLOSE, (1001).to_bytes(2, "big"))
    assert await client.is_closed()
    client.close()


async def test_the_heartbeat_drops_a_page_that_does_not_answer_pings(folder: Path) -> None:
    """Tried: a server pinging every 0.2 s; one page answers each ping, another reads them and never
    answers. Kept: the silent one is dropped (no close frame: it would not read one) within a few
    beats; the answering one is still served after as many beats."""
    server = routes(folder, heartbeat=0.2)
    await server.start("127.0.0.1", 0)
    answering, silent = await Client.open(server.port), await Client.open(server.port)
    try:
        for client in (answering, silent):
            assert (await client.upgrade(server.port))[0] == 101

        async def answer_pings() -> None:
            while True:
                opcode, payload = await answering.frame()
                if opcode == PING:
                    answering.send(PONG, payload)

        keeper = asyncio.create_task(answer_pings())
        pings = 0
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
            async with asyncio.timeout(WAIT):
                while True:
                    pings += await silent.reader.readexactly(2) == bytes([0x80 | PING, 0])
        assert pings >= 1
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        answering.send(TEXT, b"alive")
        while (frame := await answering.frame())[0] == PING:
            answering.send(PONG, frame[1])
        assert frame == (TEXT, b"alive")
    finally:
        answering.close()
        silent.close()
        await server.stop(2.0)


async def test_stop_ends_a_websocket_still_open(folder: Path) -> None:
    """Tried: the server stopped under an open WebSocket whose page never answers the close.
    Kept: stop returns within its bound; the connection is ended; nothing listens any more."""
    server = routes(folder, heartbeat=0)
    await server.start("127.0.0.1", 0)
    client = await Client.open(server.port)
    assert (await client.upgrade(server.port))[0] == 101
    async with asyncio.timeout(5):
        await server.stop(0.5)
    assert await client.is_closed()
    with pytest.raises(OSError):
        await Client.open(server.port)
    client.close()


# -- HTTP -------------------------------------------------------------------------------------------


async def test_a_header_block_too_large_is_refused_with_431(port: int) -> None:
    """Tried: 9 kB of headers; a 9 kB request line; a header line without a colon. Kept: 431, 414 and
    400, each with the server's headers and "Connection: close", and the connection ended."""
    cases = [(f"GET /static/app.js HTTP/1.1\r\nHost: h\r\nX-Big: {'a' * 9000}\r\n\r\n", 431),
             (f"GET /{'a' * 9000} HTTP/1.1\r\nHost: h\r\n\r\n", 414),
             ("GET / HTTP/1.1\r\nHost: h\r\nno colon here\r\n\r\n", 400)]
    for head, expected in cases:
        client = await Client.open(port)
        status, headers, _ = await client.request(head)
        assert status == expected, head[:60]
        assert headers["x-frame-options"] == "DENY" and headers["connection"] == "close"
        assert headers["cache-control"] == "no-store"
        assert await client.is_closed()
        client.close()


async def test_keep_alive_serves_requests_one_after_the_other(port: int) -> None:
    """Tried: two requests written at once on one HTTP/1.1 connection, then "Connection: close";
    an HTTP/1.0 request; a POST. Kept: each answered in order on the same connection; closed after
    the one asking; HTTP/1.0 closed after its answer; 405 with Allow."""
    client = await Client.open(port)
    client.writer.write(b"GET /static/app.js HTTP/1.1\r\nHost: h\r\n\r\nGET /nothing HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (await client.response())[0] == 200
    assert (await client.response())[0] == 404
    status, headers, _ = await client.request("GET /static/app.js HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert status == 200 and headers["connection"] == "close" and await client.is_closed()
    client.close()

    client = await Client.open(port)
    status, headers, _ = await client.request("GET /static/app.js HTTP/1.0\r\n\r\n")
    assert status == 200 and headers["connection"] == "close" and await client.is_closed()
    client.close()

    client = await Client.open(port)
    status, headers, _ = await client.request("POST /static/app.js HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    client.close()


async def test_static_files_are_served_and_a_path_cannot_escape_the_folder(port: int, folder: Path) -> None:
    """Tried: a file and one in a subfolder (GET and HEAD); then ways out: ``..`` plain and
    percent-encoded, an encoded slash or backslash, a NUL, a symlink to the secret, a symlinked
    folder, a symlink inside the folder, the folder and a subfolder themselves. Kept: the files with
    their Content-Type (HEAD: the length, no body); 404 for every other, never the secret or a listing."""
    client = await Client.open(port)
    status, headers, body = await client.request("GET /static/app.js HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (status, body) == (200, b"export const answer = 42;\n")
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    status, headers, body = await client.request("GET /static/sub/look.css HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 200 and headers["content-type"] == "text/css; charset=utf-8"
    client.writer.write(b"HEAD /static/app.js HTTP/1.1\r\nHost: h\r\n\r\n")
    async with asyncio.timeout(WAIT):
        head = await client.reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head and b"Content-Length: 26\r\n" in head
    for target in ("/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/%2E%2E%2Fsecret.txt",
                   "/static/..%2fsecret.txt", "/static/sub/..%2f..%2fsecret.txt", "/static/..%5csecret.txt",
                   "/static/app.js%00", "/static/link.txt", "/static/out/secret.txt", "/static/inner.js",
                   "/static/", "/static/sub/", "/static/sub", "/static/./app.js", "/static//app.js"):
        status, _, body = await client.request(f"GET {target} HTTP/1.1\r\nHost: h\r\n\r\n")
        assert status == 404, target  # and the connection still serves the next one
        assert b"TOP-SECRET" not in body and b"app.js" not in body and b"look.css" not in body, target
    assert os.path.exists(folder / "link.txt")  # the links were there to be refused
    client.close()
