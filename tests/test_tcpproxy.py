"""The test-controlled TCP proxy: against an echo server on loopback and the real Prosody.

Each test drives the proxy the way the robustness tests will (cut, refuse, stall,
slow) and checks what a client and the server on the far side actually saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import socket
import socketserver
import ssl
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from slixmpp import ClientXMPP
from slixmpp.exceptions import IqTimeout

from devserver.prosody import AccountFactory, ServerInfo
from tests.harness.tcpproxy import HOLD_LIMIT, TcpProxy, ThreadedTcpProxy

HOST = "127.0.0.1"
WAIT = 10.0  # generous: only there so a broken proxy cannot hang the suite
QUIET = 0.3  # how long "nothing arrives" is watched for


# -- an echo server that records how each connection ended -----------------


@dataclass
class Echo:
    """Where the echo server listens, and what it saw."""

    port: int = 0
    received: int = 0
    endings: list[str] = field(default_factory=list)  # "eof" or the error's class name
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for_endings(self, n: int) -> list[str]:
        async with asyncio.timeout(WAIT):
            while len(self.endings) < n:
                self.ended.clear()
                await self.ended.wait()
        return self.endings


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    """An echo server on loopback; on EOF it closes its side too."""
    record = Echo()
    writers: set[asyncio.StreamWriter] = set()
    handlers: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        writers.add(writer)
        try:
            while data := await reader.read(65536):
                record.received += len(data)
                writer.write(data)
                await writer.drain()
            record.endings.append("eof")
        except ConnectionError as exc:
            record.endings.append(type(exc).__name__)
        finally:
            writer.close()
            record.ended.set()

    server = await asyncio.start_server(handle, HOST, 0)
    record.port = server.sockets[0].getsockname()[1]
    try:
        yield record
    finally:
        server.close()
        for writer in writers:
            writer.transport.abort()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


@pytest.fixture
async def proxy(echo: Echo) -> AsyncIterator[TcpProxy]:
    """A proxy in front of the echo server."""
    async with TcpProxy(HOST, echo.port) as running:
        yield running


@contextlib.asynccontextmanager
async def connection(proxy: TcpProxy) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A client connection through the proxy, closed on exit whatever state it is in."""
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    async with asyncio.timeout(WAIT):
        return await reader.readexactly(len(data))


async def nothing_arrives(reader: asyncio.StreamReader) -> bool:
    """True if no byte (and no EOF or error) reaches ``reader`` within QUIET seconds."""
    try:
        await asyncio.wait_for(reader.read(1), QUIET)
    except TimeoutError:
        return True
    return False


async def eventually(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not check():
            await asyncio.sleep(0.01)


# -- bytes and counts ------------------------------------------------------


async def test_bytes_flow_both_ways_and_are_counted(proxy: TcpProxy, echo: Echo) -> None:
    payload = bytes(range(256)) * 40
    async with connection(proxy) as (reader, writer):
        assert await round_trip(reader, writer, payload) == payload
        assert await round_trip(reader, writer, b"again") == b"again"
        assert (proxy.bytes_up, proxy.bytes_down) == (len(payload) + 5, len(payload) + 5)
        assert (proxy.accepted, proxy.connections) == (1, 1)
        assert echo.received == len(payload) + 5


async def test_a_half_close_is_forwarded_and_the_connection_ends_cleanly(proxy: TcpProxy, echo: Echo) -> None:
    async with connection(proxy) as (reader, writer):
        writer.write(b"last words")
        writer.write_eof()
        async with asyncio.timeout(WAIT):
            assert await reader.read() == b"last words"  # then EOF: the server's FIN came through
        assert await echo.wait_for_endings(1) == ["eof"]
        await proxy.wait_for_connections(0, WAIT)


async def test_an_unreachable_upstream_resets_the_client(echo: Echo) -> None:
    with socket.socket() as placeholder:  # a port with nobody listening
        placeholder.bind((HOST, 0))
        dead_port = placeholder.getsockname()[1]
        async with TcpProxy(HOST, dead_port) as proxy, connection(proxy) as (reader, _):
            with pytest.raises(ConnectionResetError):
                async with asyncio.timeout(WAIT):
                    await reader.read(1)
            assert (proxy.accepted, proxy.connections) == (1, 0)


# -- cut ---------------------------------------------------------------------


async def test_cut_with_reset_resets_both_ends_and_new_connections_work(proxy: TcpProxy, echo: Echo) -> None:
    async with connection(proxy) as (reader, writer):
        assert await round_trip(reader, writer, b"before") == b"before"
        await proxy.cut(reset=True)
        assert proxy.connections == 0
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(WAIT):
                await reader.read(1)
    assert await echo.wait_for_endings(1) == ["ConnectionResetError"]
    async with connection(proxy) as (reader, writer):
        assert await round_trip(reader, writer, b"after") == b"after"
        assert (proxy.accepted, proxy.connections) == (2, 1)


async def test_cut_without_reset_closes_with_a_fin(proxy: TcpProxy, echo: Echo) -> None:
    async with connection(proxy) as (reader, writer):
        assert await round_trip(reader, writer, b"before") == b"before"
        await proxy.cut(reset=False)
        async with asyncio.timeout(WAIT):
            assert await reader.read() == b""
    assert await echo.wait_for_endings(1) == ["eof"]


# -- refuse ----------------------------------------------------------------


async def test_refuse_fails_connects_until_lifted_and_spares_open_connections(proxy: TcpProxy) -> None:
    async with connection(proxy) as (reader, writer):
        proxy.refuse(True)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(proxy.host, proxy.port)
        assert await round_trip(reader, writer, b"still here") == b"still here"
        proxy.refuse(False)  # re-listens on the same port while a connection on it is open
        async with connection(proxy) as (reader2, writer2):
            assert await round_trip(reader2, writer2, b"back") == b"back"
        assert proxy.accepted == 2


# -- stall -------------------------------------------------------------------


async def test_stall_leaves_a_request_unanswered_on_an_open_socket_until_unstalled(proxy: TcpProxy,
                                                                                    echo: Echo) -> None:
    async with connection(proxy) as (reader, writer):
        assert await round_trip(reader, writer, b"hello") == b"hello"
        proxy.stall(True)
        writer.write(b"anyone?")
        await writer.drain()
        assert await nothing_arrives(reader)
        assert echo.received == 5 and echo.endings == []  # the server never got it, nothing closed
        assert proxy.connections == 1 and not writer.is_closing()
        assert proxy.bytes_held == 7
        proxy.stall(False)
        async with asyncio.timeout(WAIT):
            assert await reader.readexactly(7) == b"anyone?"
        assert proxy.bytes_held == 0


async def test_unstall_with_drop_discards_what_was_held(proxy: TcpProxy, echo: Echo) -> None:
    async with connection(proxy) as (reader, writer):
        proxy.stall(True)
        writer.write(b"lost")
        await writer.drain()
        await eventually(lambda: proxy.bytes_held == 4)
        proxy.stall(False, drop=True)
        assert await round_trip(reader, writer, b"kept") == b"kept"  # "lost" would have come first
        assert echo.received == 4 and proxy.bytes_up == 4


async def write_until_blocked(writer: asyncio.StreamWriter, limit: int) -> bytes:
    """Write numbered 64 KiB chunks until a drain blocks for QUIET seconds; return what was written."""
    written = bytearray()
    for number in range(limit // 65536):
        chunk = number.to_bytes(4, "big") * 16384
        writer.write(chunk)
        written += chunk
        try:
            await asyncio.wait_for(writer.drain(), QUIET)
        except TimeoutError:
            return bytes(written)
    raise AssertionError(f"{limit} bytes written on a stalled link and the writer never blocked")


async def test_a_stalled_link_pushes_back_on_the_writer_and_loses_nothing(proxy: TcpProxy) -> None:
    async with connection(proxy) as (reader, writer):
        proxy.stall(True)
        written = await write_until_blocked(writer, 128 * HOLD_LIMIT)
        assert 0 < proxy.bytes_held <= HOLD_LIMIT and proxy.bytes_up == 0
        echoed = asyncio.create_task(reader.readexactly(len(written)))
        proxy.stall(False)
        async with asyncio.timeout(WAIT):
            await writer.drain()
            back = await echoed
    assert back == written
    assert proxy.bytes_up == proxy.bytes_down == len(written)


async def test_new_connections_while_stalled_reach_the_server_only_once_unstalled(proxy: TcpProxy,
                                                                                  echo: Echo) -> None:
    proxy.stall(True)
    async with connection(proxy) as (reader, writer):
        writer.write(b"knock")
        await proxy.wait_for_accepted(1, WAIT)
        assert await nothing_arrives(reader)
        assert proxy.connections == 0 and echo.received == 0
        proxy.stall(False)
        async with asyncio.timeout(WAIT):
            assert await reader.readexactly(5) == b"knock"


# -- slow ------------------------------------------------------------------


async def test_slow_throttles_and_delays_but_delivers(proxy: TcpProxy) -> None:
    rate, latency = 4000, 0.1
    payload = b"x" * 1000
    async with connection(proxy) as (reader, writer):
        proxy.slow(rate, latency)
        started = time.monotonic()
        assert await round_trip(reader, writer, payload) == payload
        elapsed = time.monotonic() - started
        # Each direction paces the bytes it delivers and adds the latency once: a lower
        # bound from the throttle itself, whatever the machine's speed.
        assert elapsed >= len(payload) / rate + 2 * latency - 0.001
        proxy.slow(None)
        assert await round_trip(reader, writer, b"quick") == b"quick"
    with pytest.raises(ValueError):
        proxy.slow(0)


# -- stop --------------------------------------------------------------------


def sockets_on(port: int) -> list[Any]:
    """This process's TCP sockets bound to or connected to ``port``."""
    return [c for c in psutil.Process().net_connections(kind="tcp")
            if c.laddr.port == port or (c.raddr and c.raddr.port == port)]


async def use_and_stop(proxy: TcpProxy, echo: Echo) -> None:
    """One connection holding data and one waiting to be connected upstream, then stop()."""
    await proxy.start()
    port = proxy.port
    async with connection(proxy) as (reader1, writer1):
        assert await round_trip(reader1, writer1, b"flowing") == b"flowing"
        proxy.stall(True)
        writer1.write(b"held")
        async with connection(proxy) as (reader2, _):
            await proxy.wait_for_accepted(2, WAIT)
            await eventually(lambda: proxy.bytes_held == 4)
            # listener + 2 accepted + 2 test clients; 1 upstream socket, its echo peer, the echo listener
            assert len(sockets_on(port)) == 5 and len(sockets_on(echo.port)) == 3
            await proxy.stop()
            await proxy.stop()
            async with asyncio.timeout(WAIT):
                assert await reader1.read() == b"" and await reader2.read() == b""
    assert sockets_on(port) == []
    assert [c for c in sockets_on(echo.port) if c.raddr and c.raddr.port == echo.port] == []


async def test_stop_closes_every_socket_and_ends_every_task(echo: Echo) -> None:
    before = asyncio.all_tasks()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        proxy = TcpProxy(HOST, echo.port)
        await use_and_stop(proxy, echo)
        assert asyncio.all_tasks() - before == {asyncio.current_task()} - before
        with pytest.raises(RuntimeError):
            proxy.refuse(True)
        del proxy
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


# -- the threaded wrapper ----------------------------------------------------


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.request.recv(65536):
                self.request.sendall(data)


@contextlib.contextmanager
def threaded_echo() -> Iterator[int]:
    """A blocking echo server in a thread: no event loop anywhere in this test's thread."""
    with socketserver.ThreadingTCPServer((HOST, 0), EchoHandler) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            thread.join(WAIT)


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def test_threaded_proxy_forwards_while_the_callers_thread_blocks() -> None:
    with threaded_echo() as port, ThreadedTcpProxy(HOST, port) as proxy:
        with socket.create_connection((proxy.host, proxy.port), timeout=WAIT) as client:
            client.sendall(b"x" * 1000)
            assert recv_exactly(client, 1000) == b"x" * 1000  # this thread blocked in recv meanwhile
            wait_until(lambda: (proxy.bytes_up, proxy.bytes_down) == (1000, 1000))
            proxy.stall(True)
            client.sendall(b"held")
            wait_until(lambda: proxy.bytes_held == 4)
            proxy.cut(reset=True)
            with pytest.raises(ConnectionResetError):
                client.recv(1)
        proxy.stall(False)
        with socket.create_connection((proxy.host, proxy.port), timeout=WAIT) as client:
            client.sendall(b"again")
            assert recv_exactly(client, 5) == b"again"
        proxy.wait_for_accepted(2, WAIT)
        assert proxy.accepted == 2
    assert not [t for t in threading.enumerate() if t.name == "tcpproxy"]
    proxy.stop()  # a second stop is harmless


# -- through the real Prosody ------------------------------------------------


class Probe:
    """A slixmpp client on verified STARTTLS that connects through the proxy, recording events."""

    EVENTS = ("tls_success", "session_start", "disconnected", "connection_failed")

    def __init__(self, jid: str, password: str, server: ServerInfo, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.xmpp = ClientXMPP(f"{jid}/proxytest", password)
        self.xmpp.enable_direct_tls = False
        self.xmpp.enable_plaintext = False
        self.xmpp.ca_certs = Path(server.ca_file)
        self.xmpp.register_plugin("xep_0199")
        self.seen: list[str] = []
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        for name in self.EVENTS:
            self.xmpp.add_event_handler(name, functools.partial(self._record, name))

    def _record(self, name: str, data: Any = None) -> None:
        self.seen.append(name)
        self._queue.put_nowait((name, data))

    def connect(self) -> None:
        self.xmpp.connect(self.proxy.host, self.proxy.port)

    async def wait_for(self, name: str) -> Any:
        """Consume recorded events until ``name``; return its data."""
        async with asyncio.timeout(WAIT):
            while True:
                event, data = await self._queue.get()
                if event == name:
                    return data

    async def ping(self, timeout: float = WAIT) -> float:
        """XEP-0199 ping of our own server; the round trip in seconds."""
        return float(await self.xmpp.plugin["xep_0199"].ping(timeout=timeout))

    async def close(self) -> None:
        """Stop reconnecting, close the stream, and end slixmpp's send task."""
        self.xmpp.cancel_connection_attempt()
        if self.xmpp.transport is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.xmpp.disconnect(wait=1.0), WAIT)
        self.xmpp.abort()
        task = self.xmpp._run_out_filters  # slixmpp only cancels it in __del__
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def xmpp_proxy(prosody_server: ServerInfo) -> AsyncIterator[TcpProxy]:
    """A proxy in front of the session's Prosody c2s port."""
    async with TcpProxy(prosody_server.host, prosody_server.port) as running:
        yield running


@pytest.fixture
async def probe(xmpp_proxy: TcpProxy, prosody_server: ServerInfo,
                xmpp_account: AccountFactory) -> AsyncIterator[Probe]:
    jid, password = xmpp_account("proxy")
    client = Probe(jid, password, prosody_server, xmpp_proxy)
    try:
        yield client
    finally:
        await client.close()


async def test_xmpp_session_runs_through_the_proxy_with_verified_starttls(probe: Probe,
                                                                          xmpp_proxy: TcpProxy) -> None:
    probe.connect()
    await probe.wait_for("session_start")
    assert probe.seen.index("tls_success") < probe.seen.index("session_start")
    up, down = xmpp_proxy.bytes_up, xmpp_proxy.bytes_down
    assert up > 0 and down > 0
    await probe.ping()
    assert xmpp_proxy.bytes_up > up and xmpp_proxy.bytes_down > down
    assert (xmpp_proxy.accepted, xmpp_proxy.connections) == (1, 1)


async def test_xmpp_cut_resets_the_client_and_a_new_session_follows(probe: Probe, xmpp_proxy: TcpProxy) -> None:
    probe.connect()
    await probe.wait_for("session_start")
    await xmpp_proxy.cut(reset=True)
    reason = await probe.wait_for("disconnected")
    assert isinstance(reason, ConnectionResetError), reason
    probe.connect()
    await probe.wait_for("session_start")
    await probe.ping()
    assert (xmpp_proxy.accepted, xmpp_proxy.connections) == (2, 1)


async def test_xmpp_ping_goes_unanswered_while_stalled_and_the_link_stays_up(probe: Probe,
                                                                             xmpp_proxy: TcpProxy) -> None:
    probe.connect()
    await probe.wait_for("session_start")
    xmpp_proxy.stall(True)
    with pytest.raises(IqTimeout):
        await probe.ping(timeout=1)
    assert xmpp_proxy.bytes_held > 0  # the ping is held, not lost
    assert "disconnected" not in probe.seen and probe.xmpp.is_connected() and xmpp_proxy.connections == 1
    xmpp_proxy.stall(False)
    await probe.ping()
    assert "disconnected" not in probe.seen and xmpp_proxy.accepted == 1


async def test_xmpp_connects_fail_while_refused_and_succeed_once_lifted(probe: Probe,
                                                                        xmpp_proxy: TcpProxy) -> None:
    xmpp_proxy.refuse(True)
    probe.connect()
    reason = await probe.wait_for("connection_failed")
    assert isinstance(reason, ConnectionRefusedError), reason
    assert xmpp_proxy.accepted == 0
    xmpp_proxy.refuse(False)
    probe.connect()  # slixmpp's own retry would wait seconds; a new connect starts now
    await probe.wait_for("session_start")
    assert xmpp_proxy.accepted == 1


async def test_xmpp_logs_in_over_a_slow_link_no_faster_than_the_throttle(probe: Probe,
                                                                         xmpp_proxy: TcpProxy) -> None:
    rate = 20_000
    xmpp_proxy.slow(rate, latency=0.02)
    started = time.monotonic()
    probe.connect()
    await probe.wait_for("session_start")
    elapsed = time.monotonic() - started
    delivered = max(xmpp_proxy.bytes_up, xmpp_proxy.bytes_down)
    assert delivered > 0 and elapsed >= delivered / rate - 0.001
    await probe.ping()


async def test_direct_tls_passes_through_untouched_and_verified(prosody_server: ServerInfo) -> None:
    context = ssl.create_default_context(cafile=str(prosody_server.ca_file))
    header = (f"<?xml version='1.0'?><stream:stream to='{prosody_server.domain}' xmlns='jabber:client' "
              "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>").encode()
    async with TcpProxy(prosody_server.host, prosody_server.direct_tls_port) as proxy:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port, ssl=context,
                                                       server_hostname=prosody_server.domain)
        try:
            writer.write(header)
            async with asyncio.timeout(WAIT):
                features = await reader.readuntil(b"</stream:features>")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        assert b"mechanisms" in features
        # TLS records and the certificate chain are bigger than the plaintext that went through.
        assert proxy.bytes_up > len(header) and proxy.bytes_down > len(features)
