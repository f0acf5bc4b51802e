"""A TCP proxy that tests put between a client and a server to play the road.

A car's link fails in a few ways, and each has a control here:

- a tunnel: the link goes quiet without a FIN or RST, so both ends think the
  connection is up (``stall``: nothing is forwarded, nothing is closed);
- a dead zone: new connections fail (``refuse``: the listener is closed, so a
  connect gets ECONNREFUSED at once);
- a cell hand-over: the connection is reset (``cut``: RST to both ends);
- a slow or far link (``slow``: a byte rate and a one-way latency).

It forwards bytes only, so STARTTLS and Direct TLS pass through untouched and
stay verified end to end; ``bytes_up`` and ``bytes_down`` are what went over
the wire, TLS included. ``TcpProxy`` runs in the caller's event loop::

    async with TcpProxy(server.host, server.port) as proxy:
        client.connect(proxy.host, proxy.port)
        ...
        await proxy.cut()  # a hand-over: both ends see ECONNRESET

``ThreadedTcpProxy`` runs one on an event loop in a thread of its own, behind a
blocking API, for tests whose own loop blocks (waiting on a subprocess) or that
have no loop.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import socket
import struct
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
CHUNK = 65536
# Bytes one direction reads ahead of what it delivered; beyond this it stops reading,
# so the sender's kernel buffers fill and its writes block, as on a link that is down.
HOLD_LIMIT = 1 << 20
BACKLOG = 64
PIECES_PER_SECOND = 50  # a throttled direction sends this many small pieces a second
LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST

T = TypeVar("T")


class _End(enum.Enum):
    """How one direction of a connection ended; queued behind the data sent before it."""

    EOF = "eof"  # the sender closed its side: forward a FIN
    RESET = "reset"  # the sender reset, or a socket failed: reset both ends


def close_socket(sock: socket.socket, *, reset: bool) -> None:
    """Close ``sock``; with ``reset``, abortively (RST, no TIME_WAIT) instead of with a FIN."""
    if reset:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        except OSError:
            pass  # already dead: close() below is all there is to do
    sock.close()


class _Pipe:
    """One direction of a connection: reads ahead from ``src``, delivers to ``dst`` as the controls allow."""

    def __init__(self, proxy: TcpProxy, src: socket.socket, dst: socket.socket, *, is_upstream: bool) -> None:
        self._proxy = proxy
        self._src = src
        self._dst = dst
        self._is_upstream = is_upstream
        self._queue: deque[tuple[float, bytes | _End]] = deque()  # (arrival time, data or end)
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._drops = 0  # bumped by drop(), so a delivery in progress knows its data is gone
        self._busy_until = 0.0  # when the throttled link is free again (loop time)
        self.held = 0  # bytes read and not yet delivered

    async def receive(self) -> None:
        """Read ``src`` until EOF or an error, queueing each chunk with its arrival time."""
        loop = asyncio.get_running_loop()
        while True:
            while self.held >= HOLD_LIMIT:
                self._room.clear()
                await self._room.wait()
            try:
                data = await loop.sock_recv(self._src, min(CHUNK, HOLD_LIMIT - self.held))
            except OSError as exc:
                log.debug("proxy :%d: %s read failed: %s", self._proxy.port, self._name, exc)
                self._put(loop.time(), _End.RESET)
                return
            if not data:
                self._put(loop.time(), _End.EOF)
                return
            self.held += len(data)
            self._put(loop.time(), data)

    async def deliver(self) -> _End:
        """Send queued data to ``dst`` while the proxy flows, paced by ``slow``; return how it ended."""
        loop = asyncio.get_running_loop()
        while True:
            arrival, item = await self._head()
            if isinstance(item, _End):
                self._queue.popleft()
                return self._finish(item)
            drops = self._drops
            size = self._piece_size(len(item))
            await self._pace(arrival, size)
            if drops != self._drops or not self._proxy.is_flowing:
                continue  # dropped or stalled while it waited: start again from the queue
            piece, rest = item[:size], item[size:]
            if rest:
                self._queue[0] = (arrival, rest)
            else:
                self._queue.popleft()
            try:
                await loop.sock_sendall(self._dst, piece)
            except OSError as exc:
                log.debug("proxy :%d: %s write failed: %s", self._proxy.port, self._name, exc)
                return _End.RESET
            self.held -= size
            self._room.set()
            self._proxy._count(size, is_upstream=self._is_upstream)

    def drop(self) -> None:
        """Forget the data held; an end stays queued (a closed side stays closed)."""
        ends = [(at, item) for at, item in self._queue if isinstance(item, _End)]
        self.held -= sum(len(item) for _, item in self._queue if isinstance(item, bytes))
        self._queue = deque(ends)
        self._drops += 1
        self._room.set()

    @property
    def _name(self) -> str:
        return "client→server" if self._is_upstream else "server→client"

    def _put(self, arrival: float, item: bytes | _End) -> None:
        self._queue.append((arrival, item))
        self._arrived.set()

    async def _head(self) -> tuple[float, bytes | _End]:
        """The oldest queued item, once the proxy flows and there is one; left in the queue."""
        while True:
            await self._proxy._flowing.wait()
            if self._queue:
                return self._queue[0]
            self._arrived.clear()
            await self._arrived.wait()

    def _piece_size(self, available: int) -> int:
        """All of it on a free link; small pieces on a throttled one, so data trickles as it would."""
        rate = self._proxy.bytes_per_second
        if rate is None:
            return available
        return max(1, min(available, rate // PIECES_PER_SECOND))

    async def _pace(self, arrival: float, size: int) -> None:
        """Wait until the piece has crossed the link: latency after arrival, then size/rate on a busy line."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = max(now, arrival + self._proxy.latency, self._busy_until)
        rate = self._proxy.bytes_per_second
        if rate is not None:
            due += size / rate
            self._busy_until = due
        if due > now:
            await asyncio.sleep(due - now)

    def _finish(self, end: _End) -> _End:
        """Forward an EOF as a FIN (half-close); a failure to do so is a reset."""
        if end is _End.EOF:
            try:
                self._dst.shutdown(socket.SHUT_WR)
            except OSError as exc:
                log.debug("proxy :%d: %s FIN failed: %s", self._proxy.port, self._name, exc)
                return _End.RESET
        return end


class _Connection:
    """One accepted client and its upstream socket; owned by the proxy, ended by cancelling ``task``."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, number: int) -> None:
        self._proxy = proxy
        self._client = client
        self.number = number
        self.pipes: tuple[_Pipe, ...] = ()
        self.reset_on_close = True  # a failure resets; a clean end or cut() says otherwise
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Connect upstream (not while stalled: a tunnel reaches nobody), forward, then close both sockets."""
        upstream: socket.socket | None = None
        is_open = False
        try:
            await self._proxy._flowing.wait()
            upstream = await self._connect()
            is_open = True
            self._proxy._count_open(+1)
            end = await self._forward(upstream)
            self.reset_on_close = end is _End.RESET
        except OSError as exc:
            log.info("proxy :%d: #%d upstream %s:%d unreachable: %s", self._proxy.port, self.number,
                     self._proxy.upstream_host, self._proxy.upstream_port, exc)
        except Exception:
            log.exception("proxy :%d: #%d failed", self._proxy.port, self.number)
        finally:
            close_socket(self._client, reset=self.reset_on_close)
            if upstream is not None:
                close_socket(upstream, reset=self.reset_on_close)
            if is_open:
                self._proxy._count_open(-1)
            log.debug("proxy :%d: #%d closed (%s)", self._proxy.port, self.number,
                      "RST" if self.reset_on_close else "FIN")

    async def _connect(self) -> socket.socket:
        """A socket connected to the proxy's upstream, trying each address it resolves to."""
        loop = asyncio.get_running_loop()
        host, port = self._proxy.upstream_host, self._proxy.upstream_port
        error = OSError(f"no address for {host}")
        for family, kind, proto, _, address in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise error

    async def _forward(self, upstream: socket.socket) -> _End:
        """Pump both directions until both have ended cleanly (EOF) or either has reset."""
        up = _Pipe(self._proxy, self._client, upstream, is_upstream=True)
        down = _Pipe(self._proxy, upstream, self._client, is_upstream=False)
        self.pipes = (up, down)
        readers = [asyncio.create_task(pipe.receive()) for pipe in self.pipes]
        pending = {asyncio.create_task(pipe.deliver()) for pipe in self.pipes}
        deliveries = set(pending)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(task.result() is _End.RESET for task in done):
                    return _End.RESET
            return _End.EOF
        finally:
            tasks = [*readers, *deliveries]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class TcpProxy:
    """Forwards each connection made to ``host:port`` (127.0.0.1, a free port) to the upstream server.

    Controls apply to every connection, current and new; counters add up over all
    of them. Use ``async with`` or ``start()``/``stop()``.
    """

    def __init__(self, upstream_host: str, upstream_port: int, listen_port: int = 0) -> None:
        self.upstream_host = upstream_host  # read at each new connection: may be re-pointed
        self.upstream_port = upstream_port
        self.host = HOST
        self.port = listen_port  # the real port once started
        self.bytes_up = 0  # client→server, delivered
        self.bytes_down = 0  # server→client, delivered
        self.connections = 0  # open now (connected upstream)
        self.accepted = 0  # accepted since start
        self.bytes_per_second: int | None = None
        self.latency = 0.0
        self.is_refusing = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._changed = asyncio.Event()
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._live: set[_Connection] = set()
        self._is_stopped = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.stop()

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Listen; ``port`` is then where clients connect."""
        if self._loop is not None or self._is_stopped:
            raise RuntimeError("a TcpProxy starts once")
        self._loop = asyncio.get_running_loop()
        self._open_listener()
        log.debug("proxy :%d → %s:%d", self.port, self.upstream_host, self.upstream_port)

    async def stop(self) -> None:
        """Stop listening and close every connection with a FIN; safe to call twice."""
        if self._is_stopped:
            return
        self._is_stopped = True
        self._close_listener()
        await self.cut(reset=False)

    # -- controls ----------------------------------------------------------

    async def cut(self, *, reset: bool = True) -> None:
        """Close every current connection at both ends, with RST (``reset``) or FIN; keep accepting.

        Data held by the proxy is dropped. Returns once every socket is closed.
        """
        live = list(self._live)
        for connection in live:
            connection.reset_on_close = reset
            if connection.task is not None:
                connection.task.cancel()
        await asyncio.gather(*(c.task for c in live if c.task is not None), return_exceptions=True)
        if live:
            log.info("proxy :%d: cut %d connection(s) with %s", self.port, len(live),
                     "RST" if reset else "FIN")

    def refuse(self, refusing: bool) -> None:
        """While refusing, the listener is closed: a connect fails at once with ECONNREFUSED.

        That is a dead zone as a client sees it when its connects fail fast; open
        connections are left alone (add ``stall`` or ``cut`` for those). Lifting it
        listens again on the same port (SO_REUSEADDR; racy like any free port).
        """
        self._require_running()
        if refusing:
            self._close_listener()
        elif self._listener is None:
            self._open_listener()
        self.is_refusing = refusing
        log.info("proxy :%d: %s", self.port, "refusing connections" if refusing else "accepting connections")

    def stall(self, stalled: bool, *, drop: bool = False) -> None:
        """Stop forwarding both ways without closing anything, as in a tunnel (a half-open link).

        While stalled the proxy reads ahead up to HOLD_LIMIT bytes per direction and
        then stops reading, so a sender's writes pile up and then block; nothing
        comes back; new connections are accepted but not connected upstream.
        Unstalling delivers what was held, in order, unless ``drop``: then the held
        bytes are discarded (a TLS stream so cut short is broken for good: the peers
        see a protocol error, not a reset).
        """
        if stalled:
            self._flowing.clear()
        else:
            if drop:
                for connection in self._live:
                    for pipe in connection.pipes:
                        pipe.drop()
            self._flowing.set()
        state = "stalled" if stalled else "flowing, held data dropped" if drop else "flowing"
        log.info("proxy :%d: %s", self.port, state)

    def slow(self, bytes_per_second: int | None, latency: float = 0.0) -> None:
        """Throttle each direction of each connection to ``bytes_per_second`` (None: no limit),
        and deliver every byte no earlier than ``latency`` seconds after it arrived."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError(f"bytes_per_second must be positive or None, not {bytes_per_second}")
        if latency < 0:
            raise ValueError(f"latency must be >= 0, not {latency}")
        self.bytes_per_second = bytes_per_second
        self.latency = latency

    # -- observations ------------------------------------------------------

    @property
    def is_flowing(self) -> bool:
        """False while stalled."""
        return self._flowing.is_set()

    @property
    def bytes_held(self) -> int:
        """Bytes read from one end and not yet delivered to the other, over all connections."""
        return sum(pipe.held for connection in self._live for pipe in connection.pipes)

    async def wait_for_connections(self, n: int, timeout: float) -> None:
        """Wait until exactly ``n`` connections are open (connected upstream)."""
        await self._wait_until(lambda: self.connections == n, timeout, f"{n} open connection(s)")

    wait_connections = wait_for_connections  # the name the issue-3 brief used

    async def wait_for_accepted(self, n: int, timeout: float) -> None:
        """Wait until at least ``n`` connections have been accepted since start."""
        await self._wait_until(lambda: self.accepted >= n, timeout, f"{n} accepted connection(s)")

    # -- internals ---------------------------------------------------------

    def _require_running(self) -> None:
        if self._loop is None or self._is_stopped:
            raise RuntimeError("the proxy is not running")

    def _open_listener(self) -> None:
        assert self._loop is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._loop.add_reader(sock.fileno(), self._on_acceptable)

    def _close_listener(self) -> None:
        """Stop accepting at once (clients queued in the backlog get a reset from the kernel)."""
        if self._listener is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._listener.fileno())
        self._listener.close()
        self._listener = None

    def _on_acceptable(self) -> None:
        """Accept every pending client and give each a connection task."""
        while self._listener is not None:
            try:
                client, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("proxy :%d: accept failed: %s", self.port, exc)
                return
            client.setblocking(False)
            self.accepted += 1
            connection = _Connection(self, client, self.accepted)
            connection.task = asyncio.create_task(connection.run(), name=f"proxy:{self.port}#{self.accepted}")
            self._live.add(connection)
            connection.task.add_done_callback(functools.partial(self._forget, connection))
            self._changed.set()
            log.debug("proxy :%d: #%d accepted from %s:%d", self.port, self.accepted, *peer)

    def _forget(self, connection: _Connection, _: asyncio.Task[None]) -> None:
        self._live.discard(connection)

    def _count(self, size: int, *, is_upstream: bool) -> None:
        if is_upstream:
            self.bytes_up += size
        else:
            self.bytes_down += size

    def _count_open(self, delta: int) -> None:
        self.connections += delta
        self._changed.set()

    async def _wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not ready():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"proxy :{self.port}: no {what} within {timeout} s "
                               f"(open {self.connections}, accepted {self.accepted})") from None


class ThreadedTcpProxy:
    """A TcpProxy on an event loop in a daemon thread of its own, driven by blocking calls.

    It keeps forwarding while the caller's thread or loop is blocked. Calls return
    once done in the proxy's thread; from async code, wrap the waits in
    ``asyncio.to_thread``. Use ``with`` or ``start()``/``stop()``.
    """

    def __init__(self, upstream_host: str, upstream_port: int, listen_port: int = 0, *,
                 call_timeout: float = 10.0) -> None:
        self._args = (upstream_host, upstream_port, listen_port)
        self._call_timeout = call_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._proxy: TcpProxy | None = None
        self._is_stopped = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Start the thread and the proxy in it; ``port`` is then where clients connect."""
        if self._loop is not None:
            raise RuntimeError("a ThreadedTcpProxy starts once")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, args=(self._loop,), name="tcpproxy",
                                        daemon=True)
        self._thread.start()
        self._proxy = self._call(self._start_proxy)

    def stop(self) -> None:
        """Stop the proxy (FIN to every connection), then its loop and thread; safe to call twice."""
        loop, thread, proxy = self._loop, self._thread, self._proxy
        if loop is None or thread is None or self._is_stopped:
            return
        self._is_stopped = True
        try:
            if proxy is not None:
                self._call(proxy.stop)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(self._call_timeout)

    # -- controls, as TcpProxy's ----------------------------------------------

    def cut(self, *, reset: bool = True) -> None:
        self._call(functools.partial(self.proxy.cut, reset=reset))

    def refuse(self, refusing: bool) -> None:
        self._call_sync(self.proxy.refuse, refusing)

    def stall(self, stalled: bool, *, drop: bool = False) -> None:
        self._call_sync(functools.partial(self.proxy.stall, stalled, drop=drop))

    def slow(self, bytes_per_second: int | None, latency: float = 0.0) -> None:
        self._call_sync(self.proxy.slow, bytes_per_second, latency)

    def wait_for_connections(self, n: int, timeout: float) -> None:
        wait = functools.partial(self.proxy.wait_for_connections, n, timeout)
        self._call(wait, timeout + self._call_timeout)

    def wait_for_accepted(self, n: int, timeout: float) -> None:
        wait = functools.partial(self.proxy.wait_for_accepted, n, timeout)
        self._call(wait, timeout + self._call_timeout)

    # -- observations (plain ints, safe to read from any thread) -------------

    @property
    def proxy(self) -> TcpProxy:
        """The TcpProxy itself: touch it only from its own loop's thread."""
        if self._proxy is None:
            raise RuntimeError("the proxy is not started")
        return self._proxy

    @property
    def host(self) -> str:
        return self.proxy.host

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def bytes_up(self) -> int:
        return self.proxy.bytes_up

    @property
    def bytes_down(self) -> int:
        return self.proxy.bytes_down

    @property
    def connections(self) -> int:
        return self.proxy.connections

    @property
    def accepted(self) -> int:
        return self.proxy.accepted

    @property
    def bytes_held(self) -> int:
        return self._call_sync(lambda: self.proxy.bytes_held)

    # -- internals ---------------------------------------------------------

    async def _start_proxy(self) -> TcpProxy:
        proxy = TcpProxy(*self._args)
        await proxy.start()
        return proxy

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _call(self, make: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run the awaitable ``make()`` returns on the proxy's loop; block until its result."""
        if self._loop is None:
            raise RuntimeError("the proxy is not started")

        async def run() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(self._call_timeout if timeout is None else timeout)

    def _call_sync(self, function: Callable[..., T], *args: Any) -> T:
        """Run a plain function on the proxy's loop (its state belongs to that thread)."""

        async def run() -> T:
            return function(*args)

        return self._call(run)


__all__ = ["HOLD_LIMIT", "TcpProxy", "ThreadedTcpProxy", "close_socket"]
