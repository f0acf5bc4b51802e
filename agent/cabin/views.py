"""The JSON the driver's doors answer with: one shape per thing, for the dashboard and the control socket.

Every function is pure and returns a TypedDict, so the dashboard's frames
(:mod:`agent.dashboard.frames`), ``headunit state/chat/presence/offers`` and the tests
share one definition of each shape. Non-finite numbers (a sensor's NaN) become null:
JSON has no such numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal, TypedDict, Union

from agent.cabin.offers import Offer
from agent.messages.store import StoredMessage
from agent.policies.presence import PresencePolicy, PresenceUpdate
from agent.vehicle.state import Reading
from agent.link import ConnectionStatus, LinkState

Json = dict[str, object]
JsonValue = Union[bool, int, float, str, None]


class ValueJson(TypedDict):
    value: JsonValue
    stale: bool
    at: float | None


class MessageJson(TypedDict):
    id: int
    peer: str
    direction: str
    body: str
    at: float
    state: str | None


class PresenceJson(TypedDict):
    auto: bool  # follows the vehicle (no override by the driver)
    show: str  # what the car shows now: available, away, xa, dnd, unavailable
    status: str
    auto_show: str  # what the vehicle mode gives
    auto_status: str


class ConnectionJson(TypedDict):
    state: LinkState
    detail: str
    online: bool
    resumable: bool
    queued: int | None  # telemetry samples not yet acknowledged (None: no telemetry)
    outbox: int  # chat messages the server is not known to have


class StateJson(TypedDict):
    car: str
    name: str
    mode: str | None
    moving: bool
    vehicle: dict[str, ValueJson]
    connection: ConnectionJson
    presence: PresenceJson
    power: Json


class OfferJson(TypedDict, total=False):
    id: str
    kind: Literal["call", "file"]
    peer: str
    at: float
    media: list[str]  # calls
    name: str  # files
    size: int  # files


def finite(value: object) -> JsonValue:
    """``value`` for JSON: a non-finite float becomes None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    assert value is None or isinstance(value, (bool, int, float, str)), value
    return value


def value_json(reading: Reading) -> ValueJson:
    at = reading.timestamp if math.isfinite(reading.timestamp) else None
    return {"value": finite(reading.value), "stale": reading.is_stale, "at": at}


def vehicle_json(readings: Iterable[Reading]) -> dict[str, ValueJson]:
    """Values by VSS path, sorted."""
    return {r.path: value_json(r) for r in sorted(readings, key=lambda r: r.path)}


def message_json(message: StoredMessage) -> MessageJson:
    """One stored message (``id`` is the store's local id)."""
    return {"id": message.local_id, "peer": message.peer, "direction": message.direction,
            "body": message.body, "at": message.sent_at, "state": message.state}


def show(update: PresenceUpdate) -> str:
    return update.show or "available"


def presence_json(policy: PresencePolicy) -> PresenceJson:
    """What the car shows (the last presence sent; "unavailable" before any), and what the mode gives."""
    sent, auto = policy.last, policy.current()
    return {"auto": policy.is_automatic, "show": show(sent) if sent is not None else "unavailable",
            "status": sent.status if sent is not None else "", "auto_show": show(auto),
            "auto_status": auto.status}


def connection_json(status: ConnectionStatus, queued: int | None, outbox: int) -> ConnectionJson:
    return {"state": status.state, "detail": status.detail, "online": status.is_online,
            "resumable": status.is_resumable, "queued": queued, "outbox": outbox}


def offer_json(offer: Offer) -> OfferJson:
    data: OfferJson = {"id": offer.id, "kind": offer.kind, "peer": offer.peer, "at": offer.at}
    if offer.kind == "call":
        data["media"] = list(offer.media)
    else:
        data["name"], data["size"] = offer.name, offer.size
    return data
