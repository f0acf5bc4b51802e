"""Contacts: who may see the car, and what the driver is shown of them.

The decisions the protocol side (:mod:`agent.xmpp.plugins.contacts`) asks for at each
subscription request (:class:`SubscriptionPolicy`: a fleet operator is approved at once
and filed in the operators' roster group, anyone else waits for the driver or is refused,
as the profile says, and at most so many wait), and the roster vocabulary the driver's
doors show: a contact and the presence of its clients, a request waiting for the driver.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from agent.errors import HeadunitError
from agent.jid import is_operator
from agent.profile.model import ContactsConfig

MAX_TEXT = 200  # characters kept of a request's nick or status
MAX_PENDING = 200  # requests kept for the driver; beyond, the oldest is refused


class ContactsError(HeadunitError, ValueError):
    """A driver's request about a contact cannot be done (bad JID, nothing pending, offline)."""


class Decision(enum.Enum):
    """What becomes of a subscription request."""

    APPROVE = "approve"  # at once, and the operator is asked for their presence in return
    REFUSE = "refuse"  # at once ("unsubscribed")
    ASK_DRIVER = "ask driver"  # it waits in the pending list


@dataclass(frozen=True)
class SubscriptionPolicy:
    """Who may see the car's presence: asked by the contacts plugin at each request."""

    operators: tuple[str, ...] = ()  # bare JIDs and "@domain" entries (agent.jid.is_operator)
    unknown: str = "pending"  # a non-operator's request: "pending" (the driver decides) or "refuse"
    operator_group: str = "Fleet"  # the roster group operators are filed in
    max_pending: int = MAX_PENDING  # requests kept for the driver; beyond, the oldest is refused

    @classmethod
    def from_profile(cls, config: ContactsConfig, operators: Sequence[str], *,
                     max_pending: int = MAX_PENDING) -> SubscriptionPolicy:
        return cls(tuple(operators), config.unknown, config.operator_group, max_pending)

    def is_operator(self, jid: str) -> bool:
        return is_operator(jid, self.operators)

    def decide(self, jid: str) -> Decision:
        """A subscription request from the bare JID ``jid``: approve, refuse, or ask the driver."""
        if self.is_operator(jid):
            return Decision.APPROVE
        if self.unknown == "refuse":
            return Decision.REFUSE
        return Decision.ASK_DRIVER


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
