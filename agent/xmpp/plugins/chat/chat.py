"""The ``headunit_chat`` plugin: 1:1 chat in and out, receipts, carbons, archive catch-up.
Every message goes through the local store (``agent.messages``) and is kept
once however often it arrives: live, as offline delivery, as a carbon
(XEP-0280), and again from the server's archive (XEP-0313). An outgoing
message is stored first ("queued"), sent with an origin-id (XEP-0359) and a
receipt request (XEP-0184), and moves on to "sent" (handed to the stream),
"acked" (the server has it: a stream management ack, or our own archive holds
it) and "delivered" (the peer's receipt). After a fresh session, whatever the
server never acknowledged is sent again with its original origin-id, so the
peer and our store can drop the copy. Receipts go out only once the message is
in the store, so a receipt means the car kept it; that includes messages first
seen in the archive (the sender never had a receipt for them).

A server's stanza-id is believed only when it is ``by`` our own bare JID, the
server says (disco on our account) that it sets them, and it is the only one
claiming to be ours: a stranger's are just text, and Prosody 0.12 passes a
forged one "by" us along next to its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.jid import JID, InvalidJID
from slixmpp.plugins.xep_0198.stanza import RequestAck
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from agent.events import Event
from agent.jid import JidError, bare as bare_jid, same_bare
from agent.messages.store import Direction, MessageError, MessageStore, State, StoredMessage, Via
from agent.xmpp import surface
from agent.xmpp.plugins.base import HeadunitPlugin

log = logging.getLogger(__name__)

NS_SID = "urn:xmpp:sid:0"
NS_RECEIPTS = "urn:xmpp:receipts"
NS_DELAY = "urn:xmpp:delay"
NS_FORWARD = "urn:xmpp:forward:0"
STORED_TYPES = ("chat", "normal")  # 1:1 messages; headline, groupchat and error are not conversations
MAM_HANDLER = "headunit chat: archive results"
FORGED_HANDLERS = {"headunit chat: foreign sent carbons": "message/carbon_sent",
                   "headunit chat: foreign received carbons": "message/carbon_received"}
IQ_TIMEOUT = 30


@dataclass(frozen=True)
class Seen:
    """A chat message read from a stanza, before the store decides whether it is new."""

    peer: str
    direction: Direction
    body: str
    stanza_id: str | None
    origin_id: str | None
    archive_id: str | None
    sent_at: float | None
    via: Via
    receipt_to: str | None = None  # the full JID that asked for a receipt
    receipt_type: Literal["chat", "normal"] = "chat"


@dataclass(frozen=True)
class Progress:
    """News about one of our messages: the server's ack, the peer's receipt, an error."""

    origin_id: str
    state: State
    peer: str | None


class ChatPlugin(HeadunitPlugin):
    """Chat on the car's account, kept in the store given as ``store``.

    Configuration: ``store`` (the :class:`~agent.messages.store.MessageStore`), ``first_window``
    (the first catch-up fetches this many of the newest messages), ``page_size``, ``max_catch_up``
    (per session: a huge backlog continues next time), ``resend_within`` (s: older unacknowledged
    messages are marked failed instead), ``queue_size`` (stanzas waiting for the store).
    """

    name = "headunit_chat"
    description = "headunit: 1:1 chat with receipts, carbons and archive catch-up (XEP-0184, 0280, 0313, 0359)"
    dependencies: ClassVar[set[str]] = {"xep_0030", "xep_0184", "xep_0280", "xep_0297", "xep_0313", "xep_0359",
                                        "xep_0203"}
    default_config: ClassVar[dict[str, object]] = {"store": None, "first_window": 100, "page_size": 50,
                                                    "max_catch_up": 1000, "resend_within": 7 * 86400.0,
                                                    "queue_size": 1000}

    def plugin_init(self) -> None:
        store = self.config["store"]
        if not isinstance(store, MessageStore):
            raise ValueError(f"the chat plugin needs a MessageStore as store, not {store!r}")
        self._messages = store
        self._first_window = int(self.config["first_window"])
        self._page_size = int(self.config["page_size"])
        self._max_catch_up = int(self.config["max_catch_up"])
        self._resend_within = float(self.config["resend_within"])
        self.new_message: Event[StoredMessage] = Event("chat message")  # each new message, either way
        self.progress: Event[StoredMessage] = Event("chat progress")  # one of ours moved: sent, acked, ...
        self._queue: asyncio.Queue[Seen | Progress] = asyncio.Queue(int(self.config["queue_size"]))
        self._session: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self._resending = asyncio.Lock()
        self._catching_up = asyncio.Lock()
        self._is_live = False
        self._handed: set[str] = set()  # origin-ids handed to the stream in this session
        self._mam_queries: dict[str, list[Any]] = {}
        self._trust_stanza_ids = False
        receipts = self.xmpp.plugin["xep_0184"]
        receipts.auto_ack = False  # we answer once the message is stored
        receipts.auto_request = False  # we ask on chat messages ourselves
        for event, handler in (
            ("session_start", self._on_session_start), ("session_resumed", self._on_session_resumed),
            ("disconnected", self._on_disconnected), ("message", self._on_message),
            ("message_error", self._on_message_error), ("carbon_received", self._on_carbon_received),
            ("carbon_sent", self._on_carbon_sent), ("receipt_received", self._on_receipt),
            ("stanza_acked", self._on_stanza_acked),
        ):
            self.on(event, handler)
        self.xmpp.register_handler(Callback(MAM_HANDLER, StanzaPath("message/mam_result"), self._on_mam_result))
        for name, path in FORGED_HANDLERS.items():
            self.xmpp.register_handler(Callback(name, StanzaPath(path), self._on_foreign_carbon))
        self.spawn(self._work(), "chat-worker")
        if self.session_started:
            self._begin_session(fresh=True)

    def plugin_end(self) -> None:
        """Unhook from the client and end our tasks; the store stays open (its owner closes it)."""
        for name in (MAM_HANDLER, *FORGED_HANDLERS):
            self.xmpp.remove_handler(name)
        self._is_live = False
        self._session = None
        super().plugin_end()

    @property
    def own(self) -> str:
        """The car's bare JID."""
        return str(self.xmpp.boundjid.bare)

    @property
    def is_caught_up(self) -> bool:
        """True once this session's catch-up and re-sending are done."""
        return self._caught_up.is_set()

    async def wait_for_catch_up(self, timeout: float) -> None:
        """Until this session's catch-up and re-sending are done."""
        async with asyncio.timeout(timeout):
            await self._caught_up.wait()

    # -- sending ---------------------------------------------------------------

    async def send(self, peer: str, body: str) -> StoredMessage:
        """Store, then send if online (else it goes at the next session); raises MessageError."""
        message = await self._messages.queue_outgoing(_bare(peer), body)
        self._notify(message)
        if self._is_live and message.origin_id not in self._handed:  # a session start may have sent it
            await self._transmit(message)
        return await self._messages.get(message.origin_id or "") or message

    async def resend_unacked(self) -> int:
        """Send again what the server is not known to have, with its original origin-id; returns how many.

        Runs by itself after each session start; calling it again is harmless (a
        message already handed to this session's stream is not sent twice).
        """
        count = 0
        async with self._resending:
            for message in await self._messages.unacked():
                if not self._is_live or message.origin_id is None or message.origin_id in self._handed:
                    continue
                if time.time() - message.sent_at > self._resend_within:
                    log.warning("message to %s from %s never reached the server: failed", message.peer,
                                time.strftime("%Y-%m-%d %H:%M", time.localtime(message.sent_at)))
                    await self._mark(message.origin_id, "failed", None)
                    continue
                await self._transmit(message)
                count += 1
        if count:
            log.info("re-sent %d message(s) the server had not acknowledged", count)
        return count

    async def _transmit(self, message: StoredMessage) -> None:
        """Hand one stored message to the stream: id = origin-id, receipt requested."""
        assert message.origin_id is not None
        stanza = self.xmpp.make_message(mto=message.peer, mbody=message.body, mtype="chat")
        stanza["id"] = message.origin_id
        ET.SubElement(stanza.xml, f"{{{NS_SID}}}origin-id", {"id": message.origin_id})
        ET.SubElement(stanza.xml, f"{{{NS_RECEIPTS}}}request")
        self._handed.add(message.origin_id)
        stanza.send()
        sm = self.xmpp.plugin.get("xep_0198", None)
        if sm is not None and sm.enabled_out:
            self.xmpp.send(RequestAck(self.xmpp))  # queued behind the message: the ack covers it
        await self._mark(message.origin_id, "sent", message.peer)

    # -- session ---------------------------------------------------------------

    def _on_session_start(self, _: Any) -> None:
        self._begin_session(fresh=True)

    def _on_session_resumed(self, _: Any) -> None:
        self._begin_session(fresh=False)

    def _on_disconnected(self, _: Any) -> None:
        self._is_live = False
        self._caught_up.clear()
        if self._session is not None:
            self._session.cancel()  # its queries die with the link; the next session starts over

    def _begin_session(self, *, fresh: bool) -> None:
        if fresh:
            self._handed.clear()  # a fresh session: the server forgot whatever was in flight
        self._is_live = True
        self._caught_up.clear()
        if self._session is not None:
            self._session.cancel()
        self._session = self.spawn(self._catch_up_session(), "chat-session")

    async def _catch_up_session(self) -> None:
        """Carbons on, the archive read since last time, unacknowledged messages re-sent."""
        try:
            await self._check_stanza_ids()
            await self._enable_carbons()
            await self.catch_up()
            await self.resend_unacked()
        except Exception:
            log.exception("chat catch-up failed; it runs again at the next session")
            return
        self._caught_up.set()

    async def _check_stanza_ids(self) -> None:
        try:
            info = await self.xmpp.plugin["xep_0030"].get_info(jid=JID(self.own), local=False, timeout=IQ_TIMEOUT)
        except (IqError, IqTimeout) as exc:
            log.warning("could not ask our server whether it sets stanza-ids: %s", _reason(exc))
            return
        self._trust_stanza_ids = NS_SID in info["disco_info"]["features"]
        if not self._trust_stanza_ids:
            log.info("our server does not set stanza-ids: de-duplicating by origin-id and id only")

    async def _enable_carbons(self) -> None:
        try:
            await self.xmpp.plugin["xep_0280"].enable(timeout=IQ_TIMEOUT)
        except (IqError, IqTimeout) as exc:
            log.warning("carbons not enabled: %s", _reason(exc))

    # -- archive (XEP-0313) ----------------------------------------------------

    async def catch_up(self) -> int:
        """Store what the archive has since the last catch-up (the first time: the newest ``first_window``)."""
        async with self._catching_up:
            return await self._catch_up()

    async def _catch_up(self) -> int:
        after = await self._messages.last_archive_id()
        try:
            if after is not None:
                try:
                    return await self._catch_up_after(after)
                except IqError as exc:
                    if exc.condition != "item-not-found":
                        raise
                    log.warning("the archive no longer has %r: reading its newest %d messages",
                                after, self._first_window)
            return await self._catch_up_window()
        except (IqError, IqTimeout) as exc:
            log.warning("archive catch-up failed: %s", _reason(exc))
            return 0

    async def _catch_up_after(self, after: str) -> int:
        added = 0
        for _ in range(max(1, self._max_catch_up // self._page_size)):
            results, fin = await self._query_archive(after=after, limit=self._page_size)
            added += await self._store_results(results)
            last = fin["rsm"]["last"] or (results[-1]["mam_result"]["id"] if results else "")
            if last:
                after = last
                await self._messages.set_archive_id(last)
            if not results or fin["complete"] in ("true", "1", True):
                break
        else:
            log.warning("archive catch-up stopped after %d messages; the rest comes next session",
                        self._max_catch_up)
        log.info("archive catch-up: %d new message(s)", added)
        return added

    async def _catch_up_window(self) -> int:
        results, fin = await self._query_archive(after=None, limit=self._first_window)
        added = await self._store_results(results)
        last = fin["rsm"]["last"] or (results[-1]["mam_result"]["id"] if results else "")
        if last:
            await self._messages.set_archive_id(last)
        log.info("archive read for the first time: %d new message(s) of the newest %d",
                 added, self._first_window)
        return added

    async def _query_archive(self, *, after: str | None, limit: int) -> tuple[list[Any], Any]:
        """One page of our own archive, oldest first: after an id, or the newest page."""
        iq = self.xmpp.make_iq_set()
        iq["mam"]["queryid"] = iq["id"]
        if after is None:
            iq["mam"]["rsm"]["before"] = True
        else:
            iq["mam"]["rsm"]["after"] = after
        iq["mam"]["rsm"]["max"] = str(limit)
        results: list[Any] = []
        self._mam_queries[iq["id"]] = results
        try:
            answer = await surface.send(iq, IQ_TIMEOUT)
        finally:
            del self._mam_queries[iq["id"]]
        return results, answer["mam_fin"]

    def _on_mam_result(self, msg: Any) -> None:
        """Collect a result of one of our queries; anything else claiming to be one is dropped."""
        sender = msg["from"].bare
        query = self._mam_queries.get(msg["mam_result"]["queryid"])
        if (sender and sender != self.own) or query is None:
            log.warning("dropped an archive result we did not ask for (from %s)", sender or "our server")
            return
        query.append(msg)

    async def _store_results(self, results: list[Any]) -> int:
        added = 0
        for result in results:
            seen = _guard(lambda: self._read_archived(result), "an archive result")
            if seen is not None and await self._store(seen) is not None:
                self._answer_receipt(seen)  # only if new: a repeat was answered when it came live
                added += 1
        return added

    def _read_archived(self, result: Any) -> Seen | None:
        forwarded = result["mam_result"]["forwarded"]
        inner = forwarded["stanza"]
        if not inner:
            return None
        outgoing = inner["from"].bare == self.own
        return self._read(inner, via="mam", outgoing=outgoing, archive_id=result["mam_result"]["id"],
                          stamp=_stamp(forwarded.xml))

    # -- incoming --------------------------------------------------------------

    def _on_message(self, msg: Any) -> None:
        if msg["type"] not in STORED_TYPES:
            if msg["type"] != "error":  # errors go to _on_message_error
                log.info("%s message from %s not stored", msg["type"], msg["from"])
            return
        self._enqueue(_guard(lambda: self._read(msg, via="live", outgoing=False), "a message"))

    def _on_carbon_received(self, msg: Any) -> None:
        inner = msg["carbon_received"]
        if inner and inner["receipt"]:
            self._on_receipt(inner)  # the peer's receipt reached another of our clients
        elif inner:
            self._enqueue(_guard(lambda: self._read(inner, via="carbon", outgoing=False), "a carbon"))

    def _on_carbon_sent(self, msg: Any) -> None:
        inner = msg["carbon_sent"]
        if inner and not inner["receipt"]:
            self._enqueue(_guard(lambda: self._read(inner, via="carbon", outgoing=True), "a sent carbon"))

    def _on_foreign_carbon(self, msg: Any) -> None:
        """slixmpp ignores carbons not from our own account; we say so."""
        sender = msg["from"].bare
        if sender and sender != self.own:
            log.warning("dropped a carbon forged by %s", sender)

    def _read(self, msg: Any, *, via: Via, outgoing: bool, archive_id: str | None = None,
              stamp: float | None = None) -> Seen | None:
        """The chat message in a stanza, or None if it is not one we keep."""
        body = msg["body"]
        if msg["type"] not in STORED_TYPES or not body:
            return None
        other = msg["to"] if outgoing else msg["from"]
        peer = other.bare or self.own  # no address: our own account (RFC 6120)
        origin = msg.xml.find(f"{{{NS_SID}}}origin-id")
        receipt_to = None  # a carbon's receipt is for the client it was addressed to
        if via != "carbon" and not outgoing and msg.xml.find(f"{{{NS_RECEIPTS}}}request") is not None:
            receipt_to = str(msg["from"]) or None
        return Seen(peer, "out" if outgoing else "in", body, msg["id"] or None,
                    None if origin is None else origin.get("id"),
                    archive_id or self._trusted_stanza_id(msg), _stamp(msg.xml) or stamp, via,
                    receipt_to, "normal" if msg["type"] == "normal" else "chat")

    def _trusted_stanza_id(self, msg: Any) -> str | None:
        """The stanza-id our own server set, if it sets them; any other is ignored.

        Prosody 0.12 keeps a forged stanza-id "by" us next to its own, so when
        more than one claims to be ours, none is believed.
        """
        if not self._trust_stanza_ids:
            return None
        ours = [element.get("id") for element in msg.xml.findall(f"{{{NS_SID}}}stanza-id")
                if _same_bare(element.get("by", ""), self.own) and element.get("id")]
        if len(ours) > 1:
            log.warning("message from %s carries %d stanza-ids by us (forged): none believed",
                        msg["from"], len(ours))
        return str(ours[0]) if len(ours) == 1 else None

    def _enqueue(self, item: Seen | Progress | None) -> None:
        if item is None:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("message queue full: dropped news from %s", getattr(item, "peer", None))

    async def _work(self) -> None:
        """Store what arrived, in order, then answer receipts; a bad item is logged and skipped."""
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, Progress):
                    await self._progress(item)
                else:
                    await self._store(item)
                    self._answer_receipt(item)
            except MessageError as exc:
                log.warning("dropped a message from %s: %s", item.peer, exc)
            except Exception:
                log.exception("could not handle %s", item)

    async def _store(self, seen: Seen) -> StoredMessage | None:
        stored = await self._messages.add_incoming(
            seen.peer, seen.body, direction=seen.direction,
            stanza_id=seen.stanza_id, origin_id=seen.origin_id, archive_id=seen.archive_id,
            sent_at=seen.sent_at, via=seen.via)
        if stored is not None:
            log.info("message %s %s (%s, %d characters)", "to" if stored.direction == "out" else "from",
                     stored.peer, stored.via, len(stored.body))
            self._notify(stored)
        return stored

    def _answer_receipt(self, seen: Seen) -> None:
        """XEP-0184, once stored; a live repeat too (the sender repeats when our receipt got lost)."""
        if seen.receipt_to is None or seen.stanza_id is None or not self._is_live:
            return
        receipt = self.xmpp.make_message(mto=seen.receipt_to, mtype=seen.receipt_type)
        receipt["receipt"] = seen.stanza_id
        receipt.send()

    def _notify(self, message: StoredMessage) -> None:
        self.new_message.emit(message)

    # -- progress of our own messages --------------------------------------------

    def _on_receipt(self, msg: Any) -> None:
        if not msg["receipt"]:
            return
        self._enqueue(_guard(lambda: Progress(msg["receipt"], "delivered", msg["from"].bare), "a receipt"))

    def _on_stanza_acked(self, stanza: Any) -> None:
        origin = stanza.xml.find(f"{{{NS_SID}}}origin-id") if hasattr(stanza, "xml") else None
        if origin is not None and origin.get("id") in self._handed:
            self._enqueue(Progress(origin.get("id"), "acked", None))

    def _on_message_error(self, msg: Any) -> None:
        if msg["id"] in self._handed:
            log.warning("message to %s failed: %s %s", msg["from"], msg["error"]["condition"],
                        msg["error"]["text"] or "")
            self._enqueue(_guard(lambda: Progress(msg["id"], "failed", msg["from"].bare), "an error"))

    async def _progress(self, news: Progress) -> None:
        await self._mark(news.origin_id, news.state, news.peer)

    async def _mark(self, origin_id: str, state: State, peer: str | None) -> None:
        """Move one of our messages forward; tell ``progress`` listeners if it moved."""
        if not await self._messages.mark(origin_id, state, peer=peer):
            return
        log.debug("message %s: %s", origin_id, state)
        if self.progress.listeners and (message := await self._messages.get(origin_id)) is not None:
            self.progress.emit(message)


def _guard(read: Callable[[], Any], what: str) -> Any:
    """``read()``; on anything a hostile stanza can raise, a log line and None."""
    try:
        return read()
    except (InvalidJID, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("dropped %s that could not be read: %s", what, exc)
        return None


def _bare(peer: str) -> str:
    try:
        return bare_jid(peer)
    except JidError as exc:
        raise MessageError(str(exc)) from exc


def _same_bare(a: str, b: str) -> bool:
    """``a`` is the bare JID ``b`` (a full JID with a resource is not: stanza-ids are by accounts)."""
    return "/" not in a and same_bare(a, b)


def _stamp(element: Any) -> float | None:
    """The XEP-0203 delay of an element, as epoch seconds."""
    delay = element.find(f"{{{NS_DELAY}}}delay")
    if delay is None or not delay.get("stamp"):
        return None
    try:
        when = datetime.fromisoformat(delay.get("stamp"))
    except ValueError:
        log.debug("ignored a bad delay stamp %r", delay.get("stamp")[:40])
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _reason(exc: Exception) -> str:
    if isinstance(exc, IqError):
        return f"{exc.condition} {exc.text or ''}".strip()
    return "no answer"

