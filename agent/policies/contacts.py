"""Contacts: who may see the car, and what the driver is shown of them.

The decisions the protocol side (:mod:`agent.xmpp.contacts`) asks for, and the
roster vocabulary the driver's doors show: a contact and the presence of its
clients, a subscription request waiting for the driver.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone

from agent.errors import HeadunitError

MAX_TEXT = 200  # characters kept of a request's nick or status


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
