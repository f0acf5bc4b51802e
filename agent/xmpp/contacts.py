"""Contacts and subscriptions: who may see the car, decided per contact.

The four flows of RFC 6121 (subscribe, subscribed, unsubscribe, unsubscribed),
both ways. A fleet operator's request is approved at once and the operator is
filed in the profile's roster group; anyone else waits for the driver (or is
refused, if the profile says so). Pending requests live on the server, which
re-sends them at every login (Prosody keeps the original stanza, nick and
status included), so the list kept here is in memory only.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.jid import JID, InvalidJID

from agent.events import Event
from agent.control import Handler
from agent.errors import HeadunitError
from agent.profile.model import ContactsConfig

log = logging.getLogger(__name__)

MAX_PENDING = 200  # requests kept for the driver; beyond, the oldest is refused
MAX_TEXT = 200  # characters kept of a request's nick or status
IQ_TIMEOUT = 15.0  # s for a roster change to be answered
NICK = "{http://jabber.org/protocol/nick}nick"  # XEP-0172, read without the PEP plugin stack


class ContactsError(HeadunitError, ValueError):
    """A driver's request about a contact cannot be done (bad JID, nothing pending, offline)."""


@dataclass(frozen=True)
class PendingRequest:
    """A subscription request waiting for the driver."""

    jid: str
    since: float  # wall-clock epoch at which this agent first saw the request
    nick: str | None = None
    status: str | None = None

    def as_json(self) -> dict[str, object]:
        since = datetime.fromtimestamp(self.since, timezone.utc).isoformat(timespec="seconds")
        return {"jid": self.jid, "since": since, "nick": self.nick, "status": self.status}


@dataclass(frozen=True)
class ResourcePresence:
    """What one of a contact's connected clients shows."""

    show: str  # "" (available), "chat", "away", "xa" or "dnd"
    status: str
    priority: int


@dataclass(frozen=True)
class Contact:
    """One roster entry and the presence of its online resources."""

    jid: str
    name: str
    groups: tuple[str, ...]
    subscription: str  # "none", "to", "from" or "both" (RFC 6121 2.1.2.5)
    pending_out: bool  # the car asked for their presence and has no answer yet
    presence: dict[str, ResourcePresence]

    def as_json(self) -> dict[str, object]:
        return {"jid": self.jid, "name": self.name, "groups": list(self.groups),
                "subscription": self.subscription, "pending_out": self.pending_out,
                "presence": {res: {"show": p.show, "status": p.status, "priority": p.priority}
                             for res, p in self.presence.items()}}


def is_operator(jid: str, operators: Sequence[str]) -> bool:
    """True if the bare JID is listed, or its domain is listed as "@domain"."""
    parsed = JID(jid)
    bare, domain = parsed.bare.lower(), parsed.domain.lower()
    return any(bare == op.lower() or op.lower() == f"@{domain}" for op in operators)


def clean_text(text: str | None) -> str | None:
    """A peer's free text made safe to show: no control or format characters, bounded length."""
    if not text:
        return None
    kept = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text
                   if unicodedata.category(ch) != "Cf")
    kept = " ".join(kept.split())
    if len(kept) > MAX_TEXT:
        kept = kept[:MAX_TEXT - 1] + "…"
    return kept or None


def bare_jid(jid: object) -> str:
    """The bare form of a JID given by the driver; ContactsError if it is not one."""
    if not isinstance(jid, str) or not jid.strip():
        raise ContactsError(f"expected a JID like name@example.org, found {jid!r}")
    try:
        parsed = JID(jid.strip())
    except InvalidJID as exc:
        raise ContactsError(f"not a valid JID: {jid!r} ({exc})") from exc
    if not parsed.bare:
        raise ContactsError(f"not a valid JID: {jid!r}")
    return str(parsed.bare)


class ContactsPolicy:
    """Answers subscription requests for the car's account and lists its contacts."""

    def __init__(self, client: slixmpp.ClientXMPP, config: ContactsConfig, operators: Sequence[str], *,
                 max_pending: int = MAX_PENDING) -> None:
        self.client = client
        self.config = config
        self.operators = tuple(operators)
        self.max_pending = max_pending
        self.request_pending: Event[PendingRequest] = Event("contacts request")  # waits for the driver
        self.changed: Event[str] = Event("contacts change")  # with the contact's bare JID
        self._pending: OrderedDict[str, PendingRequest] = OrderedDict()  # oldest first
        self._online = False
        self._handlers: list[tuple[str, Callable[[Any], None]]] = [
            ("presence_subscribe", self._on_subscribe),
            ("presence_subscribed", self._on_subscribed),
            ("presence_unsubscribe", self._on_unsubscribe),
            ("presence_unsubscribed", self._on_unsubscribed),
            ("roster_update", self._on_roster_update),
            ("changed_status", self._on_changed_status),
            ("session_start", self._on_session),
            ("session_resumed", self._on_session),
            ("disconnected", self._on_disconnected),
        ]
        self._started = False

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Listen to the client; requests already received (roster pending_in) are taken up."""
        if self._started:
            return
        self._started = True
        for event, handler in self._handlers:
            self.client.add_event_handler(event, handler)
        self._online = bool(self.client.is_connected() and self.client.sessionstarted)
        for jid in list(self.client.client_roster):
            item = self.client.client_roster[jid]
            if item["pending_in"] and not item["from"]:
                self._take_request(str(jid), None, None)

    def stop(self) -> None:
        """Stop answering; idempotent. Pending requests stay on the server."""
        if not self._started:
            return
        self._started = False
        for event, handler in self._handlers:
            self.client.del_event_handler(event, handler)

    # -- what the driver sees and does ---------------------------------------

    def pending(self) -> list[PendingRequest]:
        """Requests waiting for the driver, oldest first."""
        return list(self._pending.values())

    def contacts(self) -> list[Contact]:
        """The roster: entries with a subscription either way, an open request of ours, a name or a group."""
        roster = self.client.client_roster
        found = []
        for jid in sorted(roster):
            item = roster[jid]
            if item["subscription"] != "none" or item["pending_out"] or item["name"] or item["groups"]:
                found.append(_contact(str(jid), item))
        return found

    def approve(self, jid: str) -> None:
        """Let a pending requester see the car's presence (the car does not subscribe back)."""
        bare = self._answerable(jid)
        self._send_subscribed(bare)
        log.info("subscription from %s approved by the driver", bare)
        self._changed(bare)

    def refuse(self, jid: str) -> None:
        """Turn a pending request down (the requester gets "unsubscribed")."""
        bare = self._answerable(jid)
        self._send_unsubscribed(bare)
        log.info("subscription from %s refused by the driver", bare)
        self._changed(bare)

    def subscribe(self, jid: str) -> None:
        """Ask a contact for their presence (the other half of a mutual subscription)."""
        bare = self._checked_online(jid)
        self.client.client_roster[bare]["pending_out"] = True
        self.client.send_presence_subscription(pto=bare, ptype="subscribe")
        log.info("asked %s for their presence", bare)

    async def remove(self, jid: str) -> None:
        """Take a contact off the roster; the server cancels subscriptions both ways."""
        bare = self._checked_online(jid)
        if bare in self._pending:
            self._drop_pending(bare)
        try:
            await self.client.del_roster_item(bare)
        except IqError as exc:
            raise ContactsError(f"the server did not remove {bare}: {exc.condition}") from exc
        except IqTimeout as exc:
            raise ContactsError(f"the server did not answer the removal of {bare}") from exc
        if self.client.client_roster.has_jid(bare):  # the server's push follows its answer
            del self.client.client_roster[bare]
        log.info("%s removed from the roster", bare)
        self._changed(bare)

    # -- incoming subscription presences ---------------------------------------

    def _on_subscribe(self, presence: Any) -> None:
        who = self._sender(presence, "subscribe")
        if who is None:
            return
        if is_operator(who, self.operators):
            self._approve_operator(who)
        elif self.config.unknown == "refuse":
            log.info("subscription request from %s refused (not an operator; contacts.unknown = refuse)", who)
            self._send_unsubscribed(who)
        else:
            nick = presence.xml.find(NICK)
            self._take_request(who, clean_text(nick.text if nick is not None else None),
                               clean_text(presence["status"]))

    def _on_subscribed(self, presence: Any) -> None:
        who = self._sender(presence, "subscribed")
        if who is not None:
            log.info("%s approved the car's subscription: their presence now comes to the car", who)
            self._forget_if_stranger(who)
            self._changed(who)

    def _on_unsubscribe(self, presence: Any) -> None:
        who = self._sender(presence, "unsubscribe")
        if who is None:
            return
        if who in self._pending:
            log.info("%s withdrew their subscription request", who)
            self._drop_pending(who)
        else:
            log.info("%s no longer follows the car's presence", who)
        self.client.send_presence_subscription(pto=who, ptype="unsubscribed")  # RFC 3921's acknowledgement
        self._forget_if_stranger(who)
        self._changed(who)

    def _on_unsubscribed(self, presence: Any) -> None:
        who = self._sender(presence, "unsubscribed")
        if who is not None:
            if self.client.client_roster.has_jid(who):
                self.client.client_roster[who]["pending_out"] = False
            log.info("%s refused or cancelled the car's subscription to their presence", who)
            self._forget_if_stranger(who)
            self._changed(who)

    def _sender(self, presence: Any, kind: str) -> str | None:
        """The bare JID a subscription presence came from, or None (logged) if it cannot be one."""
        try:
            who = str(presence["from"].bare)
        except InvalidJID as exc:
            log.warning("%s presence with an invalid sender dropped: %s", kind, exc)
            return None
        if not who:
            log.warning("%s presence without a sender dropped", kind)
            return None
        if who == str(self.client.boundjid.bare):
            log.warning("%s presence from the car's own account dropped", kind)
            return None
        return who

    # -- answers -----------------------------------------------------------------

    def _approve_operator(self, jid: str) -> None:
        """Approve at once, file the operator in the operators' group, and ask for their presence
        in return: PEP pushes the car's location (XEP-0163) only to contacts whose presence it gets."""
        self._send_subscribed(jid)
        log.info("subscription from operator %s approved", jid)
        item = self.client.client_roster[jid]
        if not (item["to"] or item["pending_out"]):
            self.client.send_presence_subscription(pto=jid, ptype="subscribe")
        try:
            result = self.client.client_roster.update(
                jid, name=jid, subscription=None, groups=[self.config.operator_group], timeout=IQ_TIMEOUT)
        except Exception:
            log.exception("cannot put operator %s in roster group %r", jid, self.config.operator_group)
            return
        if result is not None:
            result.add_done_callback(lambda done: _log_roster_failure(done, jid))
        self._changed(jid)

    def _send_subscribed(self, jid: str) -> None:
        """The server then sends the car's current presence to the new subscriber (RFC 6121 3.1.5)."""
        item = self.client.client_roster[jid]
        item["from"] = True
        item["pending_in"] = False
        self._pending.pop(jid, None)
        self.client.send_presence_subscription(pto=jid, ptype="subscribed")

    def _send_unsubscribed(self, jid: str) -> None:
        self._pending.pop(jid, None)
        self.client.send_presence_subscription(pto=jid, ptype="unsubscribed")
        self._forget_if_stranger(jid)

    def _take_request(self, jid: str, nick: str | None, status: str | None) -> None:
        if jid in self._pending:
            return  # a repeat (or the server's re-send at login): the first one stands
        if is_operator(jid, self.operators):
            self._approve_operator(jid)
            return
        while len(self._pending) >= self.max_pending:
            oldest, _ = self._pending.popitem(last=False)
            log.warning("more than %d subscription requests pending: refusing the oldest, from %s",
                        self.max_pending, oldest)
            self._send_unsubscribed(oldest)
        request = PendingRequest(jid, time.time(), nick, status)
        self._pending[jid] = request
        log.info("subscription request from %s%s waits for the driver", jid, f" ({nick})" if nick else "")
        self.request_pending.emit(request)

    def _drop_pending(self, jid: str) -> None:
        self._pending.pop(jid, None)
        self._forget_if_stranger(jid)

    def _forget_if_stranger(self, jid: str) -> None:
        """Drop the library's local entry for a JID we have no relation with, so floods leave nothing."""
        roster = self.client.client_roster
        if jid in self._pending or not roster.has_jid(jid):
            return
        item = roster[jid]
        item["pending_in"] = False
        if not (item["from"] or item["to"] or item["pending_out"] or item["name"] or item["groups"]):
            del roster[jid]

    # -- roster and presence changes ---------------------------------------------

    def _on_roster_update(self, iq: Any) -> None:
        """A roster push (or the roster itself): requests answered elsewhere leave the pending list."""
        try:
            items = iq["roster"]["items"]
        except Exception:
            log.exception("unreadable roster update dropped")
            return
        for jid, item in items.items():
            bare = str(JID(jid).bare)
            if bare in self._pending and item.get("subscription") in ("from", "both", "remove"):
                self._pending.pop(bare, None)
            if iq["type"] == "set":
                self._changed(bare)

    def _on_changed_status(self, presence: Any) -> None:
        try:
            who = str(presence["from"].bare)
        except InvalidJID:
            return
        if who and who != str(self.client.boundjid.bare):
            self._changed(who)

    def _on_session(self, _: Any) -> None:
        self._online = True

    def _on_disconnected(self, _: Any) -> None:
        self._online = False

    # -- helpers -------------------------------------------------------------------

    def _answerable(self, jid: str) -> str:
        bare = self._checked_online(jid)
        if bare not in self._pending:
            raise ContactsError(f"no pending subscription request from {bare}")
        return bare

    def _checked_online(self, jid: str) -> str:
        bare = bare_jid(jid)
        if bare == str(self.client.boundjid.bare):
            raise ContactsError(f"{bare} is the car's own account")
        if not self._online:
            raise ContactsError("the car is not connected to its XMPP server; try again when it is online")
        return bare

    def _changed(self, jid: str) -> None:
        self.changed.emit(jid)


def _contact(jid: str, item: Any) -> Contact:
    presence = {str(res): ResourcePresence(str(data.get("show") or ""), str(data.get("status") or ""),
                                           int(data.get("priority") or 0))
                for res, data in item.resources.items()}
    return Contact(jid, str(item["name"] or ""), tuple(item["groups"]), str(item["subscription"]),
                   bool(item["pending_out"]), presence)


def _log_roster_failure(done: Any, jid: str) -> None:
    if done.cancelled():
        return
    exc = done.exception()
    if isinstance(exc, IqError):
        log.warning("the server refused to file %s in the operators' group: %s", jid, exc.condition)
    elif exc is not None:
        log.warning("filing %s in the operators' group failed: %r", jid, exc)


def control_handlers(policy: ContactsPolicy) -> dict[str, Handler]:
    """The ``contacts.*`` commands of the local control socket, answered by ``policy``."""

    async def list_contacts(_: Mapping[str, Any]) -> object:
        return [contact.as_json() for contact in policy.contacts()]

    async def pending(_: Mapping[str, Any]) -> object:
        return [request.as_json() for request in policy.pending()]

    async def approve(args: Mapping[str, Any]) -> object:
        jid = bare_jid(args.get("jid"))
        policy.approve(jid)
        return {"jid": jid, "approved": True}

    async def refuse(args: Mapping[str, Any]) -> object:
        jid = bare_jid(args.get("jid"))
        policy.refuse(jid)
        return {"jid": jid, "refused": True}

    async def remove(args: Mapping[str, Any]) -> object:
        jid = bare_jid(args.get("jid"))
        await policy.remove(jid)
        return {"jid": jid, "removed": True}

    return {"contacts.list": list_contacts, "contacts.pending": pending, "contacts.approve": approve,
            "contacts.refuse": refuse, "contacts.remove": remove}
