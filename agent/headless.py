"""The dashboard's state and actions on the control socket, for ``headunit state/chat/presence/offers``.

A car without a touchscreen (or its owner over SSH) sees and does what the dashboard
does: vehicle values, connection, presence, chat threads, offers waiting for the driver.
Arguments come from another process, so each is checked here and a bad one is a
:class:`HeadlessError` with a sentence the command line shows as is. Values are read
from the agent at call time, never cached.

:func:`chat_allowed` is THE rule for what the driver may send while the vehicle moves;
the dashboard's ``chat.send`` uses it too, so both doors refuse the same things.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agent.control import ControlError, Handler
from agent.messages.store import MAX_BODY_BYTES, MAX_JID_CHARS, StoredMessage
from agent.policies.presence import MAX_STATUS, OVERRIDE_SHOWS, PresenceUpdate
from agent.vehicle import paths
from agent.vehicle.mode import VehicleMode
from agent.vehicle.state import VehicleState
from agent.xmpp.contacts import bare_jid

if TYPE_CHECKING:
    from agent.app import Agent

DRIVING = "typing is disabled while driving"
MAX_OFFER_ID = 64  # characters of an offer id (Offers makes six hex digits)
THREADS = (20, 200)  # default and most threads listed
MESSAGES = (20, 500)  # default and most messages of a thread shown


class HeadlessError(ControlError, ValueError):
    """A request of ``headunit state/chat/presence/offers`` that cannot be done as asked."""


# -- the shared rules ------------------------------------------------------------------


def is_moving(agent: Agent) -> bool:
    """The vehicle moves: mode driving, or a fresh ``Vehicle.Speed`` at or above the profile's moving speed."""
    speed = agent.state.value(paths.SPEED)
    return agent.state.value(paths.MODE) == VehicleMode.DRIVING.value or (
        isinstance(speed, (int, float)) and not isinstance(speed, bool)
        and speed >= agent.profile.policies.mode.moving_speed)


def chat_allowed(agent: Agent, body: str) -> str | None:
    """None if the driver may send ``body`` now, else why not: while moving, only the profile's quick replies."""
    if not is_moving(agent):
        return None
    replies = {reply.strip() for reply in agent.profile.dashboard.quick_replies}
    return None if body.strip() in replies else DRIVING


def connection_state(agent: Agent) -> str:
    """``online``, ``resuming`` (link lost, the stream can be resumed), ``offline`` (last attempt failed)
    or ``connecting``: the dashboard's ``connection.state``."""
    xmpp = agent.xmpp
    if xmpp.is_online:
        return "online"
    if xmpp.is_resumable:
        return "resuming"
    return "offline" if xmpp.last_error else "connecting"


# -- what is shown -----------------------------------------------------------------------


def vehicle_json(state: VehicleState) -> dict[str, dict[str, object]]:
    """Every value as {path: {value, stale, at}}; a non-finite number (no JSON for it) is null."""
    return {path: {"value": _finite(r.value), "stale": r.is_stale, "at": r.timestamp}
            for path, r in sorted(state.snapshot().items())}


async def connection_json(agent: Agent) -> dict[str, object]:
    """The link and what waits for it: telemetry samples not acknowledged, chat messages not on the server."""
    telemetry = agent.telemetry
    return {"state": connection_state(agent), "detail": agent._connection(),
            "online": agent.xmpp.is_online, "resumable": agent.xmpp.is_resumable,
            "queued": telemetry.pending if telemetry is not None else None,
            "outbox": len(await agent.messages.unacked())}


def presence_json(agent: Agent) -> dict[str, object]:
    """What the car shows (the last presence sent), whether it follows the vehicle, what the mode gives."""
    policy = agent.presence
    auto = policy.current()
    shown = policy.last or auto
    return {"auto": policy.is_automatic, "show": _show(shown), "status": shown.status,
            "auto_show": _show(auto), "auto_status": auto.status}


def message_json(message: StoredMessage) -> dict[str, object]:
    """One stored message as the dashboard's ``messages`` frame has it."""
    return {"id": message.local_id, "peer": message.peer, "direction": message.direction,
            "body": message.body, "at": message.sent_at, "state": message.state}


async def state_json(agent: Agent) -> dict[str, object]:
    """Everything ``headunit state`` shows."""
    mode = agent.state.value(paths.MODE)
    return {"car": agent.profile.account.jid, "name": agent.profile.name,
            "mode": None if mode is None else str(mode), "moving": is_moving(agent),
            "vehicle": vehicle_json(agent.state), "connection": await connection_json(agent),
            "presence": presence_json(agent), "power": agent.power.as_json()}


def _show(update: PresenceUpdate) -> str:
    return update.show or "available"


def _finite(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else value


# -- the handlers ---------------------------------------------------------------------------


def headless_handlers(agent: Agent) -> dict[str, Handler]:
    """``state``, ``chat.*``, ``presence.*`` and ``offers.*`` for the control socket, answered by ``agent``."""

    async def state(_: Mapping[str, Any]) -> object:
        return await state_json(agent)

    async def threads(args: Mapping[str, Any]) -> object:
        limit = count(args, "limit", *THREADS)
        return [message_json(m) for m in (await agent.messages.threads())[:limit]]

    async def show(args: Mapping[str, Any]) -> object:
        peer, limit = jid(args, "peer"), count(args, "limit", *MESSAGES)
        before = args.get("before")
        if before is not None:
            before = count(args, "before", 0, 2**63 - 1, least=0)
        return [message_json(m) for m in await agent.messages.thread(peer, limit, before=before)]

    async def send(args: Mapping[str, Any]) -> object:
        to, body = jid(args, "to"), message_body(args, "body")
        refusal = chat_allowed(agent, body)
        if refusal is not None:
            raise HeadlessError(refusal)
        return message_json(await agent.chat.send(to, body))

    async def presence(_: Mapping[str, Any]) -> object:
        return presence_json(agent)

    async def presence_set(args: Mapping[str, Any]) -> object:
        agent.presence.override(presence_show(args, "show"), status(args, "status"))
        return presence_json(agent)

    async def presence_auto(_: Mapping[str, Any]) -> object:
        agent.presence.automatic()
        return presence_json(agent)

    async def offers(_: Mapping[str, Any]) -> object:
        return [offer.as_json() for offer in agent.offers.pending()]

    async def answer(args: Mapping[str, Any]) -> object:
        offer = agent.offers.answer(offer_id(args, "id"), flag(args, "accept"))
        return {**offer.as_json(), "outcome": offer.outcome}

    return {"state": state, "chat.threads": threads, "chat.show": show, "chat.send": send,
            "presence.get": presence, "presence.set": presence_set, "presence.auto": presence_auto,
            "offers.pending": offers, "offers.answer": answer}


# -- checking what another process sent ----------------------------------------------------


def count(args: Mapping[str, Any], key: str, default: int, most: int, *, least: int = 1) -> int:
    """A whole number from ``least`` to ``most``; ``default`` when absent."""
    value = args.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise HeadlessError(f"{key}: expected a whole number from {least} to {most}, found {_shown(value)}")
    return value


def jid(args: Mapping[str, Any], key: str) -> str:
    """A person's bare JID (name@domain); HeadlessError for anything else."""
    value = args.get(key)
    if not isinstance(value, str) or len(value) > MAX_JID_CHARS:
        raise HeadlessError(f"{key}: expected a JID like ann@example.org, found {_shown(value)}")
    try:
        bare = bare_jid(value)
    except ValueError as exc:
        raise HeadlessError(f"{key}: {exc}") from exc
    if "@" not in bare:
        raise HeadlessError(f"{key}: expected a person's JID like ann@example.org, found {_shown(value)}")
    return bare


def message_body(args: Mapping[str, Any], key: str) -> str:
    """A chat message: some text, at most MAX_BODY_BYTES in UTF-8 (refused, never cut)."""
    value = args.get(key)
    if not isinstance(value, str) or not value.strip():
        raise HeadlessError(f"{key}: expected a non-empty text, found {_shown(value)}")
    size = len(value.encode("utf-8", errors="replace"))
    if size > MAX_BODY_BYTES:
        raise HeadlessError(f"{key}: a message is at most {MAX_BODY_BYTES} bytes, this one has {size}")
    return value.strip()


def presence_show(args: Mapping[str, Any], key: str) -> str:
    value = args.get(key)
    if value not in OVERRIDE_SHOWS:
        raise HeadlessError(f"{key}: expected one of {', '.join(OVERRIDE_SHOWS)}, found {_shown(value)}")
    return str(value)


def status(args: Mapping[str, Any], key: str) -> str | None:
    """An optional presence status text of at most MAX_STATUS characters."""
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_STATUS:
        raise HeadlessError(f"{key}: expected a text of at most {MAX_STATUS} characters, found {_shown(value)}")
    return value


def offer_id(args: Mapping[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_OFFER_ID:
        raise HeadlessError(f"{key}: expected an offer id like 3fa9c2, found {_shown(value)}")
    return value.strip().lower()


def flag(args: Mapping[str, Any], key: str) -> bool:
    value = args.get(key)
    if not isinstance(value, bool):
        raise HeadlessError(f"{key}: expected true or false, found {_shown(value)}")
    return value


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"
