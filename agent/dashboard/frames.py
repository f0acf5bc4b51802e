"""The JSON frames the dashboard server sends, built from the agent's own objects.

One function per message type of docs/dashboard-protocol.md, so the wire format
lives in one place. Everything here is pure: the hub decides when to send.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from agent import __version__
from agent.cabin import views
from agent.cabin.api import Car
from agent.cabin.offers import Offer
from agent.cabin.prompts import Pending
from agent.messages.store import StoredMessage
from agent.vehicle.state import Reading
from agent.policies.contacts import Contact, PendingRequest, ResourcePresence

Frame = dict[str, Any]

# Which resource of a contact speaks for it: the highest priority, then the most available.
_AVAILABILITY = {"chat": 0, "": 1, "away": 2, "dnd": 3, "xa": 4}


def encode(frame: object) -> str:
    """One frame as compact JSON text (never NaN or Infinity: the page's JSON.parse refuses them)."""
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def hello(car: Car, theme: str) -> Frame:
    """The first frame of a connection: who the car is and how the page should behave."""
    return {"type": "hello", "car": car.jid, "name": car.name, "version": __version__,
            "theme": theme, "quick_replies": list(car.quick_replies), "moving_speed": car.moving_speed}


def vehicle(readings: Iterable[Reading], *, full: bool) -> Frame:
    """Vehicle values by VSS path: the whole state (``full``) or what changed."""
    return {"type": "vehicle", "full": full, "values": {r.path: views.value_json(r) for r in readings}}


def connection(state: str, detail: str, queued: int, outbox: int) -> Frame:
    """The XMPP link as the driver sees it, with what waits to go out."""
    return {"type": "connection", "state": state, "detail": detail, "queued": queued, "outbox": outbox}


def presence(shown: views.PresenceJson) -> Frame:
    """What the car shows now, and whether that follows the vehicle or the driver's override."""
    return {"type": "presence", **shown}


def contacts(roster: Sequence[Contact], pending: Sequence[PendingRequest]) -> Frame:
    """The roster with each contact's best presence, and the requests waiting for the driver."""
    return {"type": "contacts", "contacts": [_contact(c) for c in roster],
            "pending": [{"jid": r.jid, "nick": r.nick, "status": r.status, "since": r.since} for r in pending]}


def messages(found: Iterable[StoredMessage], *, full: bool) -> Frame:
    """Messages: the recent threads on connect (``full``), then each new message or state change."""
    return {"type": "messages", "full": full, "messages": [views.message_json(m) for m in found]}


def prompts(pending: Pending) -> Frame:
    """Operators' notices waiting for an acknowledgement, and open questions."""
    return {"type": "prompts",
            "notices": [{"id": n.id, "sender": n.sender, "text": n.text, "ack_required": n.ack_required,
                         "at": n.created} for n in pending.notices],
            "questions": [{"id": q.id, "requester": q.requester, "question": q.question, "expires": q.expires}
                          for q in pending.questions]}


def offers(waiting: Iterable[Offer]) -> Frame:
    """Calls and files waiting for the driver's answer."""
    calls: list[Frame] = []
    files: list[Frame] = []
    for o in waiting:
        if o.kind == "call":
            calls.append({"id": o.id, "peer": o.peer, "media": list(o.media), "at": o.at})
        else:
            files.append({"id": o.id, "peer": o.peer, "name": o.name, "size": o.size, "at": o.at})
    return {"type": "offers", "calls": calls, "files": files}


def result(request_id: int | None, *, value: Any = None, error: str | None = None) -> Frame:
    """The answer to one request: ``value`` when it was done, ``error`` when not."""
    if error is not None:
        return {"type": "result", "id": request_id, "ok": False, "error": error}
    return {"type": "result", "id": request_id, "ok": True, "value": value}


def _contact(c: Contact) -> Frame:
    best = _best(c.presence.values())
    return {"jid": c.jid, "name": c.name, "groups": list(c.groups), "subscription": c.subscription,
            "show": "offline" if best is None else (best.show or "available"),
            "status": "" if best is None else best.status}


def _best(resources: Iterable[ResourcePresence]) -> ResourcePresence | None:
    ranked = sorted(resources, key=lambda p: (-p.priority, _AVAILABILITY.get(p.show, 5)))
    return ranked[0] if ranked else None


