"""The live side of the dashboard: every connected page gets the full state, then every change.

The hub listens to the driver's API (vehicle state, link, presence, contacts, chat,
prompts, offers) and sends frames (:mod:`agent.dashboard.frames`) to each page through that
page's own queue, so one slow page never holds the others up (it is disconnected
instead, and reconnects to a fresh full state). Vehicle changes are batched (at most
one frame every 100 ms), the outbox and telemetry counts when they move (at most once a second).
Requests from a page are checked and done one at a time (:mod:`agent.dashboard.requests`),
each answered with a ``result``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from agent.cabin.api import DriverApi
from agent.dashboard import frames, requests
from agent.dashboard.frames import Frame
from agent.dashboard.limits import Budget, LogLimiter
from agent.dashboard.web import CloseCode, MessageType, WebSocket
from agent.errors import HeadunitError
from agent.messages.store import StoredMessage
from agent.profile.model import DashboardConfig
from agent.vehicle.state import StateEvent

log = logging.getLogger(__name__)

MAX_FRAME = 64 * 1024  # bytes of one request; larger ones are refused (the socket stays up)
REQUESTS_PER_SECOND = 20
REQUEST_TIMEOUT = 10.0  # s one request may take
MAX_QUEUED = 512  # frames waiting for one page; beyond, the page is too slow and is disconnected
VEHICLE_BATCH = 0.1  # s: vehicle changes go out at most this often
COALESCE = 0.05  # s: a burst of contact, presence, prompt or offer changes makes one frame
COUNTS_EVERY = 1.0  # s: changes of the telemetry queue and the chat outbox are looked at at most this often
THREADS, PER_THREAD = 20, 50  # messages on connect: the latest 50 of each of the 20 latest threads
CLOSE_TIMEOUT = 2.0  # s for the pages to take the close at stop


class Page:
    """One connected page: its WebSocket, the frames waiting for it, and its request budget."""

    def __init__(self, ws: WebSocket, peer: str) -> None:
        self.ws = ws
        self.peer = peer
        self.budget = Budget(REQUESTS_PER_SECOND, REQUESTS_PER_SECOND)
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(MAX_QUEUED)
        self._backlog: list[str] | None = []  # changes seen while the greeting is prepared
        self._is_given_up = False

    def push(self, frame: Frame) -> None:
        """Queue a frame; a page that fell ``MAX_QUEUED`` frames behind is closed instead."""
        self._put(frames.encode(frame))

    def greet(self, greeting: list[Frame]) -> None:
        """Queue the full state, then the changes seen while it was gathered; from now on, live."""
        backlog, self._backlog = self._backlog or [], None
        for text in [*map(frames.encode, greeting), *backlog]:
            self._put(text)

    def _put(self, text: str) -> None:
        if self._is_given_up:
            return
        if self._backlog is not None:
            self._backlog.append(text)
            if len(self._backlog) > MAX_QUEUED:
                self._give_up()
            return
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            self._give_up()

    def _give_up(self) -> None:
        log.warning("dashboard page %s is too slow (%d frames behind): disconnecting it", self.peer, MAX_QUEUED)
        self._is_given_up = True
        self._backlog = None
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def send_all(self) -> None:
        """Write queued frames until the page goes; None means: close it, it fell behind."""
        try:
            while (text := await self._queue.get()) is not None:
                await self.ws.send_str(text)
            await self.ws.close(CloseCode.TRY_AGAIN_LATER, "too slow: reconnect")
        except (ConnectionError, RuntimeError) as exc:
            log.debug("dashboard page %s: stopped sending: %s", self.peer, exc)


class Coalesced:
    """Runs ``flush`` once, ``delay`` seconds after the first request since the last run."""

    def __init__(self, delay: float, flush: Callable[[], None]) -> None:
        self.delay = delay
        self._flush = flush
        self._handle: asyncio.TimerHandle | None = None

    def request(self, *_: object) -> None:
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.delay, self._run)

    def _run(self) -> None:
        self._handle = None
        try:
            self._flush()
        except Exception:
            log.exception("dashboard: sending %r failed", self._flush)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Hub:
    """All pages of one agent's dashboard."""

    def __init__(self, api: DriverApi, config: DashboardConfig) -> None:
        self.api = api
        self.config = config
        self._pages: set[Page] = set()
        self._dirty: set[str] = set()
        self._last_connection: Frame | None = None
        self._counts = (0, 0)  # telemetry queued, chat outbox: as last looked at
        self._bad_frames = LogLimiter(log)
        self._vehicle = Coalesced(VEHICLE_BATCH, self._flush_vehicle)
        self._flushes = {name: Coalesced(COALESCE, send) for name, send in (
            ("presence", self._send_presence), ("contacts", self._send_contacts),
            ("prompts", self._send_prompts), ("offers", self._send_offers))}
        self._unsubscribe: list[Callable[[], None]] = []
        self._ticker: asyncio.Task[None] | None = None
        self._counts_changed = asyncio.Event()

    @property
    def clients(self) -> int:
        """How many pages are connected."""
        return len(self._pages)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Follow the agent's changes; idempotent."""
        if self._ticker is not None:
            return
        api = self.api
        self._unsubscribe += [
            api.listen_vehicle(self._on_vehicle),
            api.prompts.listen(self._flushes["prompts"].request),
            api.offers.listen(self._flushes["offers"].request),
            api.presence.changed.listen(self._flushes["presence"].request),
            *(event.listen(self._flushes["contacts"].request) for event in api.contacts.events),
            *(event.listen(self._on_message) for event in api.chat.events),
            *(event.listen(self._on_link) for event in api.link_events),
            *(event.listen(self._on_counts) for event in api.count_events),
        ]
        self._ticker = asyncio.create_task(self._look_at_counts(), name="dashboard-counts")

    async def stop(self) -> None:
        """Stop following the agent and close every page with "going away"; idempotent."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        for flush in (self._vehicle, *self._flushes.values()):
            flush.cancel()
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        closing = [page.ws.close(CloseCode.GOING_AWAY, "the agent is stopping")
                   for page in list(self._pages)]
        if closing:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.gather(*closing, return_exceptions=True)
            except TimeoutError:
                log.warning("dashboard: %d page(s) did not take the close in time", len(closing))

    # -- one page --------------------------------------------------------------------

    async def serve(self, ws: WebSocket, peer: str) -> None:
        """Greet a connected page, then answer its requests until it goes."""
        page = Page(ws, peer)
        self._pages.add(page)
        sender = asyncio.create_task(page.send_all(), name=f"dashboard-page-{peer}")
        log.info("dashboard page connected from %s (%d connected)", peer, len(self._pages))
        try:
            try:
                page.greet(await self._greeting())
            except Exception:
                log.exception("dashboard page %s: the state could not be gathered", peer)
                await ws.close(CloseCode.INTERNAL_ERROR, "the agent could not read its state")
                return
            async for message in ws:
                if message.type is MessageType.TEXT and isinstance(message.data, str):
                    await self._on_text(page, message.data)
                else:
                    self._refuse(page, None, "text frames only (JSON)")
        finally:
            self._pages.discard(page)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            log.info("dashboard page %s disconnected (%d connected)", peer, len(self._pages))

    async def _greeting(self) -> list[Frame]:
        """Everything a page shows, in the protocol's order; read as one snapshot after the awaits."""
        api = self.api
        history = await api.chat.recent(THREADS, PER_THREAD)
        await self._update_counts()
        return [frames.hello(api.car, self.config.theme),
                frames.vehicle(api.readings().values(), full=True),
                self._connection(),
                frames.presence(api.presence.get()),
                frames.contacts(api.contacts.roster(), api.contacts.pending()),
                frames.messages(history, full=True),
                frames.prompts(api.prompts.pending()),
                frames.offers(api.offers.pending())]

    async def _on_text(self, page: Page, data: str) -> None:
        if len(data) > MAX_FRAME or len(data.encode("utf-8", errors="replace")) > MAX_FRAME:
            self._refuse(page, None, f"frame over {MAX_FRAME // 1024} kB refused")
            return
        request, request_id, problem = _parse(data)
        if not page.budget.take():
            page.push(frames.result(request_id, error="slow down"))
            return
        if problem is not None or request is None:
            self._refuse(page, request_id, problem or "not a request")
            return
        page.push(await self._answer(page, request, request_id))

    async def _answer(self, page: Page, request: dict[str, object], request_id: int | None) -> Frame:
        """Do one request; any refusal, or failure, is an error result (the page stays connected)."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                value = await requests.handle(self.api, request)
            frames.encode(value)
        except requests.RequestError as exc:
            self._bad_frames.warning("dashboard page %s: request %s refused: %s", page.peer,
                                     str(request.get("type"))[:40], exc)
            return frames.result(request_id, error=str(exc))
        except (HeadunitError, ValueError, LookupError) as exc:
            log.info("dashboard page %s: %s refused: %s", page.peer, request.get("type"), exc)
            return frames.result(request_id, error=str(exc))
        except TimeoutError:
            log.warning("dashboard page %s: %s took over %g s", page.peer, request.get("type"), REQUEST_TIMEOUT)
            return frames.result(request_id, error="the agent did not answer in time")
        except Exception:
            log.exception("dashboard page %s: %s failed", page.peer, request.get("type"))
            return frames.result(request_id, error="internal error (see the agent's log)")
        return frames.result(request_id, value=value)

    def _refuse(self, page: Page, request_id: int | None, error: str) -> None:
        self._bad_frames.warning("dashboard page %s: bad frame: %s", page.peer, error)
        page.push(frames.result(request_id, error=error))

    # -- changes -----------------------------------------------------------------------

    def _broadcast(self, frame: Frame) -> None:
        for page in list(self._pages):
            page.push(frame)

    def _on_vehicle(self, event: StateEvent) -> None:
        if self._pages:
            self._dirty.add(event.path)
            self._vehicle.request()

    def _flush_vehicle(self) -> None:
        dirty, self._dirty = self._dirty, set()
        readings = [r for path in sorted(dirty) if (r := self.api.reading(path)) is not None]
        if readings:
            self._broadcast(frames.vehicle(readings, full=False))

    def _on_message(self, message: StoredMessage) -> None:
        if self._pages:
            self._broadcast(frames.messages([message], full=False))

    def _send_presence(self) -> None:
        if self._pages:
            self._broadcast(frames.presence(self.api.presence.get()))

    def _send_contacts(self) -> None:
        if self._pages:
            self._broadcast(frames.contacts(self.api.contacts.roster(), self.api.contacts.pending()))

    def _send_prompts(self) -> None:
        if self._pages:
            self._broadcast(frames.prompts(self.api.prompts.pending()))

    def _send_offers(self) -> None:
        if self._pages:
            self._broadcast(frames.offers(self.api.offers.pending()))

    # -- the link and the counts ---------------------------------------------------------

    def _on_link(self, _: None) -> None:
        self._send_connection()

    def _send_connection(self) -> None:
        frame = self._connection()
        if self._pages and frame != self._last_connection:
            self._broadcast(frame)
        self._last_connection = frame

    def _connection(self) -> Frame:
        status = self.api.connection()
        return frames.connection(status.state, status.detail, *self._counts)

    async def _update_counts(self) -> None:
        self._counts = (self.api.telemetry_queued() or 0, await self.api.chat.outbox())

    def _on_counts(self, _: object) -> None:
        self._counts_changed.set()

    async def _look_at_counts(self) -> None:
        """When the telemetry queue or the chat outbox moved (at most once a second), while pages are
        connected: the queue depths, sent when changed. Nothing runs while nothing moves."""
        while True:
            await self._counts_changed.wait()
            self._counts_changed.clear()
            await asyncio.sleep(COUNTS_EVERY)  # a burst while driving makes one look
            if not self._pages:
                continue
            try:
                await self._update_counts()
            except Exception as exc:  # the store closing as the agent stops
                log.debug("dashboard: counts not read: %r", exc)
                continue
            self._send_connection()


def _parse(data: str) -> tuple[dict[str, object] | None, int | None, str | None]:
    """The request in a frame, its id (None when unreadable) and what is wrong with it (None: nothing)."""
    try:
        request = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None, None, "not JSON"
    if not isinstance(request, dict):
        return None, None, "expected a JSON object"
    request_id = request.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        return None, None, "id: expected an integer"
    return request, request_id, None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")

