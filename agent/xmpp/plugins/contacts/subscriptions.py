"""The ``headunit_contacts`` plugin: subscriptions and the roster for the car's account (RFC 6121).

The four flows (subscribe, subscribed, unsubscribe, unsubscribed), both ways. Who is
approved, refused or left to the driver is not decided here: the plugin is configured
with a :class:`agent.policies.contacts.SubscriptionPolicy` and asks it at each request.
An approved operator is filed in the policy's roster group and asked for their presence
in return. Pending requests live on the server, which re-sends them at every login
(Prosody keeps the original stanza, nick and status included), so the list kept here for
the driver is in memory only; enable the plugin before connecting to see them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any, ClassVar

from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.jid import JID, InvalidJID
from slixmpp.stanza import Iq

from agent.events import Event
from agent.jid import JidError, bare as bare_jid
from agent.policies.contacts import (Contact, ContactsError, Decision, PendingRequest, ResourcePresence,
                                     SubscriptionPolicy, clean_text)
from agent.xmpp.plugins.base import HeadunitPlugin

log = logging.getLogger(__name__)

ROSTER_TIMEOUT = 15  # s for a roster change to be answered (slixmpp takes whole seconds)
NICK = "{http://jabber.org/protocol/nick}nick"  # XEP-0172, read without the PEP plugin stack


class ContactsPlugin(HeadunitPlugin):
    """Answers subscription requests for the car's account and lists its contacts.

    Configuration: ``policy``, the :class:`~agent.policies.contacts.SubscriptionPolicy`
    (by default nobody is an operator and every request waits for the driver).
    It implements :class:`agent.cabin.api.ContactsPort`.
    """

    name = "headunit_contacts"
    description = "headunit: presence subscriptions and the roster (RFC 6121)"
    dependencies: ClassVar[set[str]] = set()
    default_config: ClassVar[dict[str, object]] = {"policy": SubscriptionPolicy()}

    def plugin_init(self) -> None:
        policy = self.config["policy"]
        if not isinstance(policy, SubscriptionPolicy):
            raise TypeError(f"the contacts plugin needs a SubscriptionPolicy, not {policy!r}")
        self._policy = policy
        self.request_pending: Event[PendingRequest] = Event("contacts request")  # waits for the driver
        self.changed: Event[str] = Event("contacts change")  # with the contact's bare JID
        self._pending: OrderedDict[str, PendingRequest] = OrderedDict()  # oldest first
        for event, handler in (("presence_subscribe", self._on_subscribe),
                               ("presence_subscribed", self._on_subscribed),
                               ("presence_unsubscribe", self._on_unsubscribe),
                               ("presence_unsubscribed", self._on_unsubscribed),
                               ("roster_update", self._on_roster_update),
                               ("changed_status", self._on_changed_status),
                               ("session_start", self._on_session), ("session_resumed", self._on_session),
                               ("disconnected", self._on_disconnected)):
            self.on(event, handler)
        self._online = self.session_started
        roster = self.xmpp.client_roster  # requests already received (pending_in) are taken up
        for jid in list(roster):
            item = roster[jid]
            if item["pending_in"] and not item["from"]:
                self._take_request(str(jid), None, None)

    # -- what the driver sees and does ---------------------------------------

    def pending(self) -> list[PendingRequest]:
        """Requests waiting for the driver, oldest first."""
        return list(self._pending.values())

    def contacts(self) -> list[Contact]:
        """The roster: entries with a subscription either way, an open request of ours, a name or a group."""
        roster = self.xmpp.client_roster
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
        self.xmpp.client_roster[bare]["pending_out"] = True
        self.xmpp.send_presence_subscription(pto=bare, ptype="subscribe")
        log.info("asked %s for their presence", bare)

    async def remove(self, jid: str) -> None:
        """Take a contact off the roster; the server cancels subscriptions both ways."""
        bare = self._checked_online(jid)
        if bare in self._pending:
            self._drop_pending(bare)
        roster = self.xmpp.client_roster
        removal = roster.remove(bare)  # what ClientXMPP.del_roster_item does, typed
        if removal is None:
            raise ContactsError("a component has no roster to remove contacts from")
        try:
            await removal
        except IqError as exc:
            raise ContactsError(f"the server did not remove {bare}: {exc.condition}") from exc
        except IqTimeout as exc:
            raise ContactsError(f"the server did not answer the removal of {bare}") from exc
        if roster.has_jid(bare):  # the server's push follows its answer
            del roster[bare]
        log.info("%s removed from the roster", bare)
        self._changed(bare)

    # -- incoming subscription presences ---------------------------------------

    def _on_subscribe(self, presence: Any) -> None:
        who = self._sender(presence, "subscribe")
        if who is None:
            return
        decision = self._policy.decide(who)
        if decision is Decision.APPROVE:
            self._approve_operator(who)
        elif decision is Decision.REFUSE:
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
        self.xmpp.send_presence_subscription(pto=who, ptype="unsubscribed")  # RFC 3921's acknowledgement
        self._forget_if_stranger(who)
        self._changed(who)

    def _on_unsubscribed(self, presence: Any) -> None:
        who = self._sender(presence, "unsubscribed")
        if who is not None:
            if self.xmpp.client_roster.has_jid(who):
                self.xmpp.client_roster[who]["pending_out"] = False
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
        if who == str(self.xmpp.boundjid.bare):
            log.warning("%s presence from the car's own account dropped", kind)
            return None
        return who

    # -- answers -----------------------------------------------------------------

    def _approve_operator(self, jid: str) -> None:
        """Approve at once, file the operator in the operators' group, and ask for their presence
        in return: PEP pushes the car's location (XEP-0163) only to contacts whose presence it gets."""
        self._send_subscribed(jid)
        log.info("subscription from operator %s approved", jid)
        roster = self.xmpp.client_roster
        item = roster[jid]
        if not (item["to"] or item["pending_out"]):
            self.xmpp.send_presence_subscription(pto=jid, ptype="subscribe")
        group = self._policy.operator_group
        try:
            result = roster.update(jid, name=jid, subscription=None, groups=[group], timeout=ROSTER_TIMEOUT)
        except Exception:
            log.exception("cannot put operator %s in roster group %r", jid, group)
            return
        if result is not None:
            result.add_done_callback(lambda done: _log_roster_failure(done, jid))
        self._changed(jid)

    def _send_subscribed(self, jid: str) -> None:
        """The server then sends the car's current presence to the new subscriber (RFC 6121 3.1.5)."""
        item = self.xmpp.client_roster[jid]
        item["from"] = True
        item["pending_in"] = False
        self._pending.pop(jid, None)
        self.xmpp.send_presence_subscription(pto=jid, ptype="subscribed")

    def _send_unsubscribed(self, jid: str) -> None:
        self._pending.pop(jid, None)
        self.xmpp.send_presence_subscription(pto=jid, ptype="unsubscribed")
        self._forget_if_stranger(jid)

    def _take_request(self, jid: str, nick: str | None, status: str | None) -> None:
        if jid in self._pending:
            return  # a repeat (or the server's re-send at login): the first one stands
        if self._policy.decide(jid) is Decision.APPROVE:
            self._approve_operator(jid)
            return
        limit = self._policy.max_pending
        while len(self._pending) >= limit:
            oldest, _ = self._pending.popitem(last=False)
            log.warning("more than %d subscription requests pending: refusing the oldest, from %s", limit, oldest)
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
        roster = self.xmpp.client_roster
        if jid in self._pending or not roster.has_jid(jid):
            return
        item = roster[jid]
        item["pending_in"] = False
        if not (item["from"] or item["to"] or item["pending_out"] or item["name"] or item["groups"]):
            del roster[jid]

    # -- roster and presence changes ---------------------------------------------

    def _on_roster_update(self, iq: Iq) -> None:
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
        if who and who != str(self.xmpp.boundjid.bare):
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
        try:
            bare = bare_jid(jid)
        except JidError as exc:
            raise ContactsError(str(exc)) from exc
        if bare == str(self.xmpp.boundjid.bare):
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


def _log_roster_failure(done: asyncio.Future[Iq], jid: str) -> None:
    if done.cancelled():
        return
    exc = done.exception()
    if isinstance(exc, IqError):
        log.warning("the server refused to file %s in the operators' group: %s", jid, exc.condition)
    elif exc is not None:
        log.warning("filing %s in the operators' group failed: %r", jid, exc)
